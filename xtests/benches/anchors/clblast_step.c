// Copied from ../shared/bench/clblast-anchor/step.c (the team's CLBlast anchor) for
// benches/opencl_clblast.rs, which builds it with `cc -O2 clblast_step.c -lclblast -lOpenCL`.
// Changes from the original: the shapes to run can be named on the command line (all of
// them when none is), the device's name is printed first ("device NAME"), the time budget
// per shape can be scaled by CLBLAST_STEP_BUDGET (a factor, default 1), and a failed
// platform query is reported instead of ignored.
// The OpenCL anchor: the GEMMs of one MLP train step (forward x.W per layer, weight gradient
// a^T.delta per layer, input gradient delta.W^T for every layer but the first) through CLBlast,
// the tuned OpenCL BLAS, on the first OpenCL device, in one in-order queue with one finish per
// step. Elementwise work (bias, ReLU, softmax, SGD) is left out, so this is a lower bound for a
// BLAS-built step. Prints "SHAPE ns_per_step gflops" for each anchor shape, and a 1024^3 SGEMM.
// Build: cc -O2 step.c -lclblast -lOpenCL -o step
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int wanted(int argc, char **argv, const char *name) {
  if (argc < 2) return 1;
  for (int i = 1; i < argc; i++) if (!strcmp(argv[i], name)) return 1;
  return 0; }
static double scale = 1.0;

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
  double flop = 0; for (int l = 0; l < L; l++) flop += 2.0 * B * dims[l] * dims[l + 1] * (l ? 3 : 2);
  int reps = 0; double t0 = 0, best = 1e30;
  for (int trial = 0; trial < 7; trial++) {
    int n = 0; double s = now();
    do {
      for (int l = 0; l < L; l++) gemm(0, 0, B, dims[l + 1], dims[l], act[l], w[l], act[l + 1]);
      for (int l = L - 1; l >= 0; l--) {
        gemm(1, 0, dims[l], dims[l + 1], B, act[l], d[l + 1], dw[l]);
        if (l) gemm(0, 1, B, dims[l], dims[l + 1], d[l + 1], w[l], d[l]);
      }
      clFinish(q); n++;
    } while (now() - s < scale * budget / 7);
    double per = (now() - s) / n * 1e9; if (per < best) best = per;
    (void)reps; (void)t0;
  }
  printf("%s %.0f %.2f\n", name, best, flop / best);
  fflush(stdout);
}

int main(int argc, char **argv) {
  cl_platform_id p; cl_device_id dev;
  if (getenv("CLBLAST_STEP_BUDGET")) scale = atof(getenv("CLBLAST_STEP_BUDGET"));
  if (scale <= 0) scale = 1.0;
  if (clGetPlatformIDs(1, &p, NULL)) { fprintf(stderr, "no OpenCL platform\n"); return 1; }
  if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 1, &dev, NULL)) { fprintf(stderr, "no device\n"); return 1; }
  char dname[256] = {0}; clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof dname - 1, dname, NULL);
  printf("device %s\n", dname); fflush(stdout);
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
