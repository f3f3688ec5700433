#!/usr/bin/env python3
"""Runs our CPU-backend benchmark and the NumPy anchor in the same session and prints the
ratios (anchor time / our time: above 1 means we are faster).

Usage (from the repository root):  python3 xtests/benches/compare.py [SHAPE ...]
  SHAPE: seed iris digits mnist wide (default: all). Needs numpy.
The anchor is anchors/numpy_anchor.py beside this file (see anchors/README.md); criterion's
medians are read from target/criterion/<shape>/<train_step|infer>/new/estimates.json.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ANCHOR = os.path.join(HERE, "anchors", "numpy_anchor.py")
SHAPES = ["seed", "iris", "digits", "mnist", "wide"]


def ours(shapes):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    pattern = "^(" + "|".join(shapes) + ")/"
    subprocess.run(["cargo", "bench", "-p", "tensorbridge-xtests", "--bench", "train_step", "--", pattern,
                    "--warm-up-time", "1", "--measurement-time", "3"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    out = {}
    for s in shapes:
        for kind in ("train_step", "infer"):
            path = os.path.join(target, "criterion", s, kind, "new", "estimates.json")
            with open(path) as f:
                out[(s, kind)] = json.load(f)["median"]["point_estimate"]
    return out


def anchor():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "anchor.json")
        subprocess.run([sys.executable, ANCHOR, "--json", path], check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)


def main():
    shapes = sys.argv[1:] or SHAPES
    ns = anchor()
    us = ours(shapes)
    print(f"{'shape':8s} {'ours train':>12s} {'NumPy train':>12s} {'ratio':>7s}   "
          f"{'ours infer':>12s} {'NumPy infer':>12s} {'ratio':>7s}")
    for s in shapes:
        tr, inf = us[(s, "train_step")], us[(s, "infer")]
        ntr, ninf = ns[s]["train_ns"], ns[s]["infer_ns"]
        print(f"{s:8s} {tr:10.0f}ns {ntr:10.0f}ns {ntr / tr:6.1f}x   {inf:10.0f}ns {ninf:10.0f}ns {ninf / inf:6.1f}x")
    print(f"NumPy sgemm 2048: {ns['sgemm2048_gflops']:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
