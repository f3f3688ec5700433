// Copied from ../shared/bench/clblast-anchor/step.c (the team's CLBlast anchor) for
// benches/opencl_clblast.rs, which builds it with `cc -O2 clblast_step.c -lclblast -lOpenCL`.
// Changes from the original: the shapes to run can be named on the command line (all of
// them when none is), the device's name is printed first ("device NAME"), the time budget
// per shape can be scaled by CLBLAST_STEP_BUDGET (a factor, default 1), a failed
// platform query is reported instead of ignored, one untimed step runs before the timing,
// and CLBlast runs tuned for the device: the parameters that tune_clblast.py stored for this
// device's name in clblast-tuning/<slug>.txt are applied with CLBlastOverrideParameters before
// anything is timed, a shape's own lines before that shape. The second line of output says which
// ("tuning FILE (tuned for DEVICE)", or why it runs on CLBlast's defaults). CLBLAST_TUNING=off
// runs it untuned; CLBLAST_TUNING_DIR names another folder of tuning files. `--device-name`
// prints the device's name and exits.
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int wanted(int argc, char **argv, const char *name) {
  if (argc < 2) return 1;
  for (int i = 1; i < argc; i++) if (!strcmp(argv[i], name)) return 1;
  return 0; }
static double scale = 1.0;

// The tuning file: lines `KERNEL SCOPE NAME=VALUE...` (SCOPE `all` or a shape name), `device NAME`,
// and comments starting with '#'.
#define MAX_ENTRIES 64
#define MAX_PARAMS 32
struct entry { char kernel[64], scope[32]; size_t n; char names[MAX_PARAMS][48]; size_t values[MAX_PARAMS]; };
static struct entry entries[MAX_ENTRIES];
static int n_entries;
static cl_device_id dev;

static void slug(const char *name, char *out, size_t cap) {
  size_t o = 0; int dash = 0;
  for (const char *c = name; *c && o + 2 < cap; c++) {
    if (isalnum((unsigned char)*c)) { if (dash && o) out[o++] = '-'; out[o++] = (char)tolower((unsigned char)*c); dash = 0; }
    else dash = 1;
  }
  out[o] = 0; }

// Reads the tuning for device `dname`; prints the "tuning ..." line either way.
static void load_tuning(const char *dname) {
  const char *off = getenv("CLBLAST_TUNING");
  if (off && !strcmp(off, "off")) { printf("tuning off (CLBLAST_TUNING=off): CLBlast's built-in defaults\n"); return; }
  char dir[1024], path[1400], s[256];
  const char *env = getenv("CLBLAST_TUNING_DIR");
  if (env && *env) snprintf(dir, sizeof dir, "%s", env);
  else {  // clblast-tuning/ beside this source file
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0; else dir[0] = 0;
    strncat(dir, "clblast-tuning", sizeof dir - strlen(dir) - 1);
  }
  slug(dname, s, sizeof s);
  snprintf(path, sizeof path, "%s/%s.txt", dir, s);
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("tuning none: no tuning stored for device %s (%s); run xtests/benches/anchors/tune_clblast.py\n", dname, path);
    return; }
  char line[4096], tuned_for[256] = "";
  int lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0] || line[0] == '#') continue;
    if (!strncmp(line, "device ", 7)) { snprintf(tuned_for, sizeof tuned_for, "%.255s", line + 7); continue; }
    if (n_entries == MAX_ENTRIES) { fprintf(stderr, "%s:%d: more than %d entries\n", path, lineno, MAX_ENTRIES); exit(1); }
    struct entry *e = &entries[n_entries++];
    char *save = NULL, *tok = strtok_r(line, " \t", &save);
    char *scope = strtok_r(NULL, " \t", &save);
    if (!tok || !scope || strlen(tok) >= sizeof e->kernel || strlen(scope) >= sizeof e->scope) {
      fprintf(stderr, "%s:%d: expected KERNEL SCOPE NAME=VALUE...\n", path, lineno); exit(1); }
    strcpy(e->kernel, tok); strcpy(e->scope, scope); e->n = 0;
    while ((tok = strtok_r(NULL, " \t", &save))) {
      char *eq = strchr(tok, '='), *end = NULL;
      if (!eq || eq == tok || (size_t)(eq - tok) >= sizeof e->names[0] || e->n == MAX_PARAMS) {
        fprintf(stderr, "%s:%d: bad parameter `%s`\n", path, lineno, tok); exit(1); }
      unsigned long long v = strtoull(eq + 1, &end, 10);
      if (end == eq + 1 || *end) { fprintf(stderr, "%s:%d: bad value in `%s`\n", path, lineno, tok); exit(1); }
      memcpy(e->names[e->n], tok, (size_t)(eq - tok)); e->names[e->n][eq - tok] = 0;
      e->values[e->n++] = (size_t)v;
    }
  }
  fclose(f);
  if (strcmp(tuned_for, dname)) {
    printf("tuning none: %s is for device `%s`, not %s; run xtests/benches/anchors/tune_clblast.py\n", path, tuned_for, dname);
    n_entries = 0; return; }
  printf("tuning %s (tuned for %s)\n", path, tuned_for);
}

// Applies the `all` lines, then those of `shape` (NULL: none).
static void apply_tuning(const char *shape) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n_entries; i++) {
      const struct entry *e = &entries[i];
      if (pass == 0 ? strcmp(e->scope, "all") != 0 : (!shape || strcmp(e->scope, shape) != 0)) continue;
      const char *names[MAX_PARAMS];
      for (size_t j = 0; j < e->n; j++) names[j] = e->names[j];
      CLBlastStatusCode st = CLBlastOverrideParameters(dev, e->kernel, CLBlastPrecisionSingle, e->n, names, e->values);
      if (st) { fprintf(stderr, "CLBlastOverrideParameters(%s, %s) failed: %d\n", e->kernel, e->scope, st); exit(1); }
    }
}

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static cl_context ctx; static cl_command_queue q;
static cl_mem buf(size_t n) { cl_int e; cl_mem m = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * 4, NULL, &e); if (e) { fprintf(stderr, "alloc %d\n", e); exit(1); }
  float *h = malloc(n * 4); for (size_t i = 0; i < n; i++) h[i] = (float)((i * 37 % 101) / 101.0 - 0.5);
  clEnqueueWriteBuffer(q, m, CL_TRUE, 0, n * 4, h, 0, NULL, NULL); free(h); return m; }
static void gemm(int ta, int tb, size_t m, size_t n, size_t k, cl_mem a, cl_mem b, cl_mem c) {
  // row-major C[m x n] = op(A) op(B)
  size_t lda = ta ? m : k, ldb = tb ? k : n;
  CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo, tb ? CLBlastTransposeYes : CLBlastTransposeNo,
      m, n, k, 1.0f, a, 0, lda, b, 0, ldb, 0.0f, c, 0, n, &q, NULL);
  if (s) { fprintf(stderr, "sgemm %d\n", s); exit(1); } }

static void shape(const char *name, size_t B, const size_t *dims, int L, double budget) {
  cl_mem act[8], w[8], dw[8], d[8];
  act[0] = buf(B * dims[0]);
  for (int l = 0; l < L; l++) { w[l] = buf(dims[l] * dims[l + 1]); dw[l] = buf(dims[l] * dims[l + 1]); act[l + 1] = buf(B * dims[l + 1]); d[l + 1] = buf(B * dims[l + 1]); }
  apply_tuning(name);
  double flop = 0; for (int l = 0; l < L; l++) flop += 2.0 * B * dims[l] * dims[l + 1] * (l ? 3 : 2);
  double best = 1e30;
  for (int trial = -1; trial < 7; trial++) {  // trial -1: one untimed step (compiles the kernels)
    int n = 0; double s = now();
    do {
      for (int l = 0; l < L; l++) gemm(0, 0, B, dims[l + 1], dims[l], act[l], w[l], act[l + 1]);
      for (int l = L - 1; l >= 0; l--) {
        gemm(1, 0, dims[l], dims[l + 1], B, act[l], d[l + 1], dw[l]);
        if (l) gemm(0, 1, B, dims[l], dims[l + 1], d[l + 1], w[l], d[l]);
      }
      clFinish(q); n++;
    } while (trial >= 0 && now() - s < scale * budget / 7);
    double per = (now() - s) / n * 1e9; if (trial >= 0 && per < best) best = per;
  }
  printf("%s %.0f %.2f\n", name, best, flop / best);
  fflush(stdout);
}

int main(int argc, char **argv) {
  cl_platform_id p;
  if (getenv("CLBLAST_STEP_BUDGET")) scale = atof(getenv("CLBLAST_STEP_BUDGET"));
  if (scale <= 0) scale = 1.0;
  if (clGetPlatformIDs(1, &p, NULL)) { fprintf(stderr, "no OpenCL platform\n"); return 1; }
  if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 1, &dev, NULL)) { fprintf(stderr, "no device\n"); return 1; }
  char dname[256] = {0}; clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof dname - 1, dname, NULL);
  if (argc > 1 && !strcmp(argv[1], "--device-name")) { printf("%s\n", dname); return 0; }
  printf("device %s\n", dname);
  load_tuning(dname); fflush(stdout);
  ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, NULL); q = clCreateCommandQueue(ctx, dev, 0, NULL);
  size_t seed[] = {4, 2}, iris[] = {4, 3}, digits[] = {64, 32, 10}, mnist[] = {784, 128, 10}, wide[] = {1024, 1024, 16};
  if (wanted(argc, argv, "seed")) shape("seed", 2, seed, 1, 1.0);
  if (wanted(argc, argv, "iris")) shape("iris", 16, iris, 1, 1.0);
  if (wanted(argc, argv, "digits")) shape("digits", 32, digits, 2, 1.0);
  if (wanted(argc, argv, "mnist")) shape("mnist", 128, mnist, 2, 2.0);
  if (wanted(argc, argv, "wide")) shape("wide", 256, wide, 2, 4.0);
  size_t big[] = {1024, 1024};
  if (wanted(argc, argv, "sgemm1024")) shape("sgemm1024", 1024, big, 1, 4.0);  // forward + dW only: 2 GEMMs
  return 0;
}
