#!/usr/bin/env python3
"""Runs our CPU-backend benchmark and the anchors in the same session and prints the ratios
(anchor time / our time: above 1 means we are faster), and our train step's share of the
machine's GEMM peak as NumPy measures it in the same run.

Usage (from the repository root):
  python3 xtests/benches/compare.py [--candle] [--rounds N] [SHAPE ...]
  SHAPE: seed iris digits mnist wide (default: all). Needs numpy.
  --candle    also build (cargo, into the system's temporary directory; the first build
              fetches candle-core and takes minutes) and run the candle anchor
  --rounds N  run everything N times, interleaved, and print every round (default 1):
              this machine is noisy, compare rounds rather than trust one
  --numpy-runs K  NumPy anchor runs per round (default 3), each with 1 and with all BLAS threads,
              OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its process: the best counts

The anchors are beside this file (see anchors/README.md): anchors/numpy_anchor.py and
anchors/candle-anchor/. Criterion's medians are read from
target/criterion/<shape>/<train_step|infer>/new/estimates.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ANCHOR = os.path.join(HERE, "anchors", "numpy_anchor.py")
CANDLE_DIR = os.path.join(HERE, "anchors", "candle-anchor")
CANDLE_TARGET = os.path.join(tempfile.gettempdir(), "tensorbridge-candle-anchor")
CANDLE_BIN = os.path.join(CANDLE_TARGET, "release", "candle-anchor")
# name: (batch, features, hidden sizes, classes), as in train_step.rs
SHAPES = {"seed": (2, 4, [], 2), "iris": (16, 4, [], 3), "digits": (32, 64, [32], 10),
          "mnist": (128, 784, [128], 10), "wide": (256, 1024, [1024], 16)}


def train_flops(shape):
    """GEMM FLOPs of one train step, counted as the anchors count them: forward
    (2*B*in*out per layer) + weight gradients (the same) + input gradients of every layer but
    the first."""
    b, f, hidden, c = SHAPES[shape]
    d = [f, *hidden, c]
    per = [2 * b * i * o for i, o in zip(d, d[1:])]
    return 2 * sum(per) + sum(per[1:])


def ours(shapes):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    pattern = "^(" + "|".join(shapes) + ")/"
    p = subprocess.run(["cargo", "bench", "-p", "tensorbridge-xtests", "--bench", "train_step", "--", pattern,
                        "--warm-up-time", "1", "--measurement-time", "3"], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"cargo bench failed:\n{p.stderr[-2000:]}")
    out = {}
    for s in shapes:
        for kind in ("train_step", "infer"):
            path = os.path.join(target, "criterion", s, kind, "new", "estimates.json")
            with open(path) as f:
                out[(s, kind)] = json.load(f)["median"]["point_estimate"]
        path = os.path.join(target, "criterion", s, "adam_step", "new", "estimates.json")
        if os.path.exists(path):
            with open(path) as f:
                out[(s, "adam_step")] = json.load(f)["median"]["point_estimate"]
    return out


def numpy_anchor(runs):
    """NumPy at its best: the anchor (which removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from its
    own process) run `runs` times with 1 and with all of the machine's BLAS threads; per shape and
    step, the fastest of all. The GEMM peak is the fastest 2048^3 SGEMM (all threads)."""
    best, kernels = {}, set()
    for _ in range(runs):
        for threads in sorted({1, os.cpu_count() or 1}):
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "anchor.json")
                subprocess.run([sys.executable, ANCHOR, "--threads", str(threads), "--json", path], check=True,
                               stdout=subprocess.DEVNULL)
                with open(path) as f:
                    got = json.load(f)
            blas = got.pop("blas")
            kernels.add(f"{blas.get('library')} {blas.get('version')} kernel {blas['kernel']}"
                        f" (removed: {blas['removed']})")
            best["sgemm2048_gflops"] = max(best.get("sgemm2048_gflops", 0), got.pop("sgemm2048_gflops"))
            for shape, r in got.items():
                b = best.setdefault(shape, {"train_ns": float("inf"), "infer_ns": float("inf")})
                for k in ("train_ns", "infer_ns", "adam_ns"):
                    if k not in r:
                        continue
                    b.setdefault(k, float("inf"))
                    if r[k] < b[k]:
                        b[k], b[k + "_threads"] = r[k], threads
    for k in sorted(kernels):
        print(f"NumPy's BLAS: {k}")
    return best


def build_candle():
    """None when the candle anchor is built, else why not."""
    if not shutil.which("cargo"):
        return "cargo not found"
    print("building the candle anchor (the first build takes minutes)...", file=sys.stderr)
    p = subprocess.run(["cargo", "build", "--release", "--quiet", "--target-dir", CANDLE_TARGET],
                       cwd=CANDLE_DIR, capture_output=True, text=True)
    if p.returncode != 0:
        return "cargo build failed: " + p.stderr[-500:]
    return None if os.path.exists(CANDLE_BIN) else "binary missing after build"


def candle_anchor(shapes):
    """Each shape in a fresh process (as the team's anchors.py runs it: an earlier shape slows
    the next), on as many rayon threads as our backend uses. RAYON_NUM_THREADS is set
    explicitly: left unset, candle's digits step measured 3x slower on this machine."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(os.cpu_count() or 1))
    out = {}
    for s in shapes:
        p = subprocess.run([CANDLE_BIN, "bench", "--budget", "0.6", s], check=True, capture_output=True, text=True, env=env)
        out.update({r["shape"]: r for r in (json.loads(line) for line in p.stdout.splitlines() if line.startswith("{"))})
    return out


def report(shapes, ns, us, cn):
    peak = ns["sgemm2048_gflops"]
    head = (f"{'shape':8s} {'ours train':>12s} {'NumPy':>12s} {'ratio':>6s}"
            + (f" {'candle':>12s} {'ratio':>6s}" if cn else "")
            + f" {'GFLOP/s':>8s} {'of peak':>7s}   {'ours infer':>12s} {'NumPy':>12s} {'ratio':>6s}"
            + (f" {'candle':>12s} {'ratio':>6s}" if cn else ""))
    print(head)
    for s in shapes:
        tr, inf = us[(s, "train_step")], us[(s, "infer")]
        ntr, ninf = ns[s]["train_ns"], ns[s]["infer_ns"]
        gflops = train_flops(s) / tr
        line = f"{s:8s} {tr:10.0f}ns {ntr:10.0f}ns {ntr / tr:5.2f}x"
        if cn:
            line += f" {cn[s]['train_ns']:10.0f}ns {cn[s]['train_ns'] / tr:5.2f}x"
        line += f" {gflops:8.1f} {100 * gflops / peak:6.0f}%   {inf:10.0f}ns {ninf:10.0f}ns {ninf / inf:5.2f}x"
        if cn:
            line += f" {cn[s]['infer_ns']:10.0f}ns {cn[s]['infer_ns'] / inf:5.2f}x"
        print(line)
    print(f"NumPy sgemm 2048^3 (the GEMM peak above): {peak:.1f} GFLOP/s")


def report_adam(shapes, ns, us):
    """Our Adam step against our SGD step (same run) and against NumPy's Adam step."""
    rows = [s for s in shapes if (s, "adam_step") in us and "adam_ns" in ns[s]]
    if not rows:
        return
    print(f"{'shape':8s} {'ours adam':>12s} {'ours sgd':>12s} {'adam/sgd':>8s} {'NumPy adam':>12s} {'ratio':>6s}")
    for s in rows:
        ad, tr, nad = us[(s, "adam_step")], us[(s, "train_step")], ns[s]["adam_ns"]
        print(f"{s:8s} {ad:10.0f}ns {tr:10.0f}ns {ad / tr:7.2f}x {nad:10.0f}ns {nad / ad:5.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candle", action="store_true", help="also run the candle anchor")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, interleaved (default 1)")
    ap.add_argument("--numpy-runs", type=int, default=3,
                    help="NumPy anchor runs per round, each with 1 and with all BLAS threads; the best counts (default 3)")
    ap.add_argument("shapes", nargs="*", choices=[[], *SHAPES], metavar="SHAPE")
    args = ap.parse_args()
    shapes = args.shapes or list(SHAPES)
    candle = args.candle
    if candle:
        why = build_candle()
        if why:
            print(f"candle anchor skipped: {why}", file=sys.stderr)
            candle = False
    for r in range(args.rounds):
        # The machine may be shared: its load average, before and after, goes with each round.
        load = os.getloadavg()[0]
        ns = numpy_anchor(args.numpy_runs)
        us = ours(shapes)
        cn = candle_anchor(shapes) if candle else None
        if args.rounds > 1:
            print(f"round {r + 1} of {args.rounds}")
        print(f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs")
        report(shapes, ns, us, cn)
        report_adam(shapes, ns, us)


if __name__ == "__main__":
    main()
