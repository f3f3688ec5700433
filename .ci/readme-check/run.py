#!/usr/bin/env python3
"""Builds every ```rust block of README.md as an example of a user's crate whose only
dependency is tensorbridge (by path), and runs those not marked `no_run`. Fails if a block
fails to compile or to run, or if the README has no Rust block at all. The blocks run in a
fresh directory holding only a copy of the repository's `data/` (the data sets they read).

Usage: python3 .ci/readme-check/run.py   (CARGO_TARGET_DIR defaults to the repository's
target/, so that the dependencies compiled for the workspace are reused.)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def blocks(text):
    """(info string, code) of every fenced block whose language is rust."""
    out = []
    for m in re.finditer(r"^```([^\n]*)\n(.*?)^```\s*$", text, re.M | re.S):
        info = [w.strip() for w in m.group(1).split(",")]
        if info and info[0] == "rust":
            out.append((info[1:], m.group(2)))
    return out


def as_program(code):
    # rustdoc's conventions: `# ` lines are compiled but hidden; a block without `fn main`
    # is the body of one.
    lines = [l[2:] if l.startswith("# ") else ("" if l == "#" else l) for l in code.splitlines()]
    body = "\n".join(lines) + "\n"
    if not re.search(r"^\s*fn main\s*\(", body, re.M):
        body = "fn main() {\n" + body + "}\n"
    return "//! Generated from README.md by .ci/readme-check/run.py.\n#![allow(dead_code)]\n\n" + body


def main():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        found = blocks(f.read())
    if not found:
        sys.exit("README.md has no ```rust block: nothing checked")
    examples = os.path.join(HERE, "examples")
    shutil.rmtree(examples, ignore_errors=True)
    os.makedirs(examples)
    to_run = []
    for k, (attrs, code) in enumerate(found, 1):
        unknown = [a for a in attrs if a not in ("no_run",)]
        if unknown:
            sys.exit(f"README block {k}: attributes {unknown} not supported (every block must build)")
        name = f"readme_{k}"
        with open(os.path.join(examples, name + ".rs"), "w", encoding="utf-8") as f:
            f.write(as_program(code))
        if "no_run" not in attrs:
            to_run.append(name)
    # The workspace's lockfile, so the user's crate builds with the versions CI tested.
    shutil.copyfile(os.path.join(ROOT, "Cargo.lock"), os.path.join(HERE, "Cargo.lock"))
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    manifest = os.path.join(HERE, "Cargo.toml")
    print(f"readme-check: {len(found)} Rust blocks of README.md, as examples of a user's crate", flush=True)
    subprocess.run(["cargo", "build", "--manifest-path", manifest, "--examples"], env=env, check=True)
    with tempfile.TemporaryDirectory(prefix="readme-check-") as cwd:
        # A user's crate beside a copy of the data sets the blocks read (`data/iris_*.npy`).
        shutil.copytree(os.path.join(ROOT, "data"), os.path.join(cwd, "data"))
        for name in to_run:
            print(f"readme-check: running {name}", flush=True)
            subprocess.run(["cargo", "run", "-q", "--manifest-path", manifest, "--example", name],
                           env=env, cwd=cwd, check=True)
    print(f"readme-check: {len(found)} blocks built, {len(to_run)} run: ok")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as err:
        sys.exit(f"readme-check failed: {err}")
