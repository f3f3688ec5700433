#!/usr/bin/env python3
"""Tunes CLBlast for the OpenCL device the CLBlast anchor (clblast_step.c) runs on.

Runs Debian's CLBlast tuners (`apt-get install clblast-utils`) for every kernel the anchor's
GEMMs use, and writes the best parameters to clblast-tuning/<device-name-slug>.txt beside this
script, which clblast_step.c applies with CLBlastOverrideParameters before it times anything.

    python3 tune_clblast.py                  # tune the first OpenCL device (40-50 min on 2 shared cores)
    python3 tune_clblast.py --work DIR       # keep the tuners' JSON files and logs in DIR
    python3 tune_clblast.py --work DIR --assemble   # only rewrite the tuning file from DIR

The tuners run under `nice -n 19` (the machine may be shared); their output goes to
DIR/<stage>/log.txt. The stages, with the tuners' exact command lines, are in STAGES below:

- Xgemm (the indirect GEMM kernel), at 1024^3, a random sample of 1/600 of each of the
  tuner's four parameter sets (GEMMK 0 and 1, small and large sets), 2 runs each;
- XgemmDirect at 256^3 and at the largest GEMM of the digits and mnist steps (the tuner's
  defaults: all of its small set, 1/64 of its large one), so that each shape gets its own;
- Copy, Pad, Transpose and Padtranspose (the indirect path's pre- and post-processing) at
  1024x1024, a random half of each parameter set;
- GemmRoutine (XGEMM_MIN_INDIRECT_SIZE, the switch between the direct and indirect paths),
  per shape: the routine tuner's single-size mode (direct against indirect, with the kernels
  above applied) for each distinct GEMM of the step gives the candidate switches (each
  GEMM's size, all direct, all indirect, and the one that minimises the sum of those
  times); the routine tuner times only the non-transposed product, and tiny GEMMs are
  noisy, so the anchor itself then times the shape's step with each candidate (under
  `nice`, best of 3 short runs) and the fastest is kept. Every shape (and the 1024^3 SGEMM)
  gets its own.

The file's lines are `KERNEL SCOPE NAME=VALUE...`, where SCOPE is `all` or one of the
anchor's shape names; before each shape clblast_step.c applies the `all` lines, then that
shape's own. A comment above each line gives the tuner's command, its best time and the
result files it was chosen from (a tuner stopped early leaves out its unfinished sets).
"""

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
NICE = ["nice", "-n", "19"]

# The GEMMs of one train step (clblast_step.c): per layer l the forward x.W (B x d[l+1] x d[l]),
# the weight gradient a^T.delta (d[l] x d[l+1] x B), and for l > 0 the input gradient
# delta.W^T (B x d[l] x d[l+1]); as (m, n, k).
SHAPES = {"digits": (32, [64, 32, 10]), "mnist": (128, [784, 128, 10]), "wide": (256, [1024, 1024, 16]),
          "sgemm1024": (1024, [1024, 1024])}


def step_gemms(shape):
    batch, dims = SHAPES[shape]
    out = []
    for l in range(len(dims) - 1):
        out.append((batch, dims[l + 1], dims[l]))
        out.append((dims[l], dims[l + 1], batch))
        if l:
            out.append((batch, dims[l], dims[l + 1]))
    return sorted(set(out))


# (stage directory, command line). The kernel tuners write clblast_<family>_32.json into
# their directory. -fraction F explores a random 1/F of each parameter set (1: all of it).
STAGES = [
    ("copy", ["clblast_tuner_copy_fast", "-precision", "32", "-m", "1024", "-n", "1024", "-fraction", "2", "-runs", "4"]),
    ("pad", ["clblast_tuner_copy_pad", "-precision", "32", "-m", "1024", "-n", "1024", "-fraction", "2", "-runs", "4"]),
    ("transpose", ["clblast_tuner_transpose_fast", "-precision", "32", "-m", "1024", "-n", "1024", "-fraction", "2", "-runs", "4"]),
    ("padtranspose", ["clblast_tuner_transpose_pad", "-precision", "32", "-m", "1024", "-n", "1024", "-fraction", "2", "-runs", "4"]),
    ("xgemm", ["clblast_tuner_xgemm", "-precision", "32", "-m", "1024", "-n", "1024", "-k", "1024", "-fraction", "600", "-runs", "2"]),
    ("direct", ["clblast_tuner_xgemm_direct", "-precision", "32", "-m", "256", "-n", "256", "-k", "256", "-runs", "4"]),
    ("direct-digits", ["clblast_tuner_xgemm_direct", "-precision", "32", "-m", "32", "-n", "32", "-k", "64", "-runs", "8"]),
    ("direct-mnist", ["clblast_tuner_xgemm_direct", "-precision", "32", "-m", "128", "-n", "128", "-k", "784", "-runs", "4"]),
]
# The routine tuner (clblast_tuner_routine_xgemm) reads the kernels' results from its working
# directory under these names; the best of each kernel's variants is copied there first. Its
# single-size mode times one GEMM direct and indirect; its full mode (m=n=k from 64 to 2048)
# is not used: on 2 shared cores it takes too long, and the step's GEMMs are far from cubes.
ROUTINE_SINGLE = ["clblast_tuner_routine_xgemm", "-precision", "32", "-runs", "3"]  # + -m M -n N -k K
DIRECT_FOR = {"digits": "direct-digits", "mnist": "direct-mnist", "wide": "direct", "sgemm1024": "direct"}


def run(work, stage, cmd, log_name="log.txt"):
    d = os.path.join(work, stage)
    os.makedirs(d, exist_ok=True)
    print(f"+ (cd {stage} && {' '.join(NICE + cmd)} > {log_name})", flush=True)
    with open(os.path.join(d, log_name), "w") as log:
        r = subprocess.run(NICE + cmd, cwd=d, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"{cmd[0]} failed ({r.returncode}); see {os.path.join(d, log_name)}")


def load(path):
    with open(path) as f:
        return json.load(f)


def best_of(work, stage, pattern):
    """The tuner result file with the lowest best_time in a stage directory."""
    files = sorted(glob.glob(os.path.join(work, stage, pattern)))
    if not files:
        sys.exit(f"no {pattern} in {os.path.join(work, stage)}")
    return min(files, key=lambda p: float(load(p)["best_time"]))


def params(js):
    return [p for p in js["best_parameters"].split() if not p.startswith("PRECISION=")]


def prepare_routine_dir(work, stage, direct_stage):
    d = os.path.join(work, stage)
    os.makedirs(d, exist_ok=True)
    picks = {
        "clblast_xgemm_1_32.json": best_of(work, "xgemm", "clblast_xgemm_*_32.json"),
        "clblast_xgemm_direct_1_32.json": best_of(work, direct_stage, "clblast_xgemm_direct_*_32.json"),
    }
    for k in ["copy", "pad", "transpose", "padtranspose"]:
        picks[f"clblast_{k}_32.json"] = os.path.join(work, k, f"clblast_{k}_32.json")
    for name, src in picks.items():
        shutil.copyfile(src, os.path.join(d, name))


def tune(work):
    for stage, cmd in STAGES:
        run(work, stage, cmd)
    for shape in SHAPES:
        stage = f"routine-{shape}"
        prepare_routine_dir(work, stage, DIRECT_FOR[shape])
        for m, n, k in step_gemms(shape):
            run(work, stage, ROUTINE_SINGLE + ["-m", str(m), "-n", str(n), "-k", str(k)], f"log-{m}x{n}x{k}.txt")
            os.replace(os.path.join(work, stage, "clblast_gemm_routine_single_size_32.json"),
                       os.path.join(work, stage, f"single-{m}x{n}x{k}.json"))


def cube_root_above(v):
    """The least t with t^3 > v: CLBlast runs a GEMM directly when m*n*k < t^3."""
    t = max(int(round(v ** (1.0 / 3.0))) - 1, 0)
    while t ** 3 <= v:
        t += 1
    return t


def shape_switch(work, shape):
    """XGEMM_MIN_INDIRECT_SIZE minimising the step's GEMM time, from the single-size runs."""
    rows = []
    for m, n, k in step_gemms(shape):
        js = load(os.path.join(work, f"routine-{shape}", f"single-{m}x{n}x{k}.json"))
        t = {("direct" if r["parameters"]["XGEMM_MIN_INDIRECT_SIZE"] else "indirect"): r["time"] for r in js["results"]}
        rows.append((m * n * k, t["indirect"], t["direct"], (m, n, k)))
    best = None
    for cand in [0] + [cube_root_above(v) for v, *_ in rows]:
        # a failed run reports -1 ms: never choose it
        times = [(d if v < cand ** 3 else i) for v, i, d, _ in rows]
        total = float("inf") if min(times) < 0 else sum(times)
        if best is None or total < best[0]:
            best = (total, cand)
    return best[1], rows


def anchor(work):
    exe = os.path.join(work, "clblast_step")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "clblast_step.c"), "-lclblast", "-lOpenCL"], check=True)
    return exe


def device_name(work):
    out = subprocess.run([anchor(work), "--device-name"], check=True, capture_output=True, text=True).stdout
    return out.strip()


def time_switches(work, name, lines, shape, candidates):
    """The anchor's ns per step of `shape` with each candidate switch (best of 3 short runs)."""
    exe, d = anchor(work), os.path.join(work, "pick")
    os.makedirs(d, exist_ok=True)
    env = dict(os.environ, CLBLAST_TUNING_DIR=d, CLBLAST_STEP_BUDGET="0.3")
    best = {}
    for _ in range(3):
        for t in candidates:
            with open(os.path.join(d, slug(name) + ".txt"), "w") as f:
                f.write("\n".join(lines + [f"GemmRoutine {shape} XGEMM_MIN_INDIRECT_SIZE={t}"]) + "\n")
            out = subprocess.run(NICE + [exe, shape], check=True, capture_output=True, text=True, env=env).stdout
            ns = float(out.strip().splitlines()[-1].split()[1])
            best[t] = min(best.get(t, ns), ns)
    return best


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def assemble(work):
    name = device_name(work)
    js_any = load(best_of(work, "xgemm", "clblast_xgemm_*_32.json"))
    lines = [
        f"# CLBlast tuning for the OpenCL device below ({js_any['platform_version']}),",
        f"# written by tune_clblast.py on {datetime.date.today()} with Debian's clblast-utils; read by clblast_step.c.",
        "# Lines: KERNEL SCOPE NAME=VALUE...; SCOPE is `all` or a shape, applied before that shape runs.",
        f"device {name}",
    ]

    def kernel_line(kernel, scope, path, cmd):
        js = load(path)
        found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(os.path.dirname(path), "clblast_*_32.json")))
        size = "x".join(js[a] for a in ("arg_m", "arg_n", "arg_k") if a in js)
        lines.append(f"# {' '.join(cmd)}: best {float(js['best_time']):.3f} ms at {size} ({js['kernel_family']}; result files: {', '.join(found)})")
        lines.append(f"{kernel} {scope} {' '.join(params(js))}")

    cmds = dict(STAGES)
    for kernel, stage in [("Copy", "copy"), ("Pad", "pad"), ("Transpose", "transpose"), ("Padtranspose", "padtranspose")]:
        kernel_line(kernel, "all", os.path.join(work, stage, f"clblast_{stage}_32.json"), cmds[stage])
    kernel_line("Xgemm", "all", best_of(work, "xgemm", "clblast_xgemm_*_32.json"), cmds["xgemm"])
    kernel_line("XgemmDirect", "all", best_of(work, "direct", "clblast_xgemm_direct_*_32.json"), cmds["direct"])
    for shape in SHAPES:
        if DIRECT_FOR[shape] != "direct":
            stage = DIRECT_FOR[shape]
            kernel_line("XgemmDirect", shape, best_of(work, stage, "clblast_xgemm_direct_*_32.json"), cmds[stage])
        switch, rows = shape_switch(work, shape)
        lines.append(f"# {' '.join(ROUTINE_SINGLE)} -m M -n N -k K, ms indirect / direct:")
        for v, i, d, (m, n, k) in rows:
            lines.append(f"#   {m}x{n}x{k}: {i:.3f} / {d:.3f}")
        lines.append(f"#   least sum: XGEMM_MIN_INDIRECT_SIZE={switch}")
        candidates = sorted({0, switch, 100000} | {cube_root_above(v) for v, *_ in rows})
        times = time_switches(work, name, lines, shape, candidates)
        pick = min(times, key=times.get)
        lines.append("# the anchor's step, us, per switch: " + ", ".join(f"{t}: {ns / 1e3:.1f}" for t, ns in times.items()))
        lines.append(f"GemmRoutine {shape} XGEMM_MIN_INDIRECT_SIZE={pick}")
    out_dir = os.path.join(HERE, "clblast-tuning")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, slug(name) + ".txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="directory for the tuners' files (default: a new temporary one)")
    ap.add_argument("--assemble", action="store_true", help="only write the tuning file from --work")
    a = ap.parse_args()
    if a.assemble and not a.work:
        sys.exit("--assemble needs --work")
    work = os.path.abspath(a.work or tempfile.mkdtemp(prefix="clblast-tune-"))
    os.makedirs(work, exist_ok=True)
    if not os.environ.get("POCL_CACHE_DIR"):
        os.environ["POCL_CACHE_DIR"] = os.path.join(work, "pocl")
        os.makedirs(os.environ["POCL_CACHE_DIR"], exist_ok=True)
    print(f"work directory: {work}", flush=True)
    if not a.assemble:
        tune(work)
    assemble(work)


if __name__ == "__main__":
    main()
