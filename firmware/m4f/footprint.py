#!/usr/bin/env python3
"""Measures tensorbridge's footprint on QEMU's Cortex-M4F board (mps2-an386) and writes the
README's footprint table.

- Flash and static RAM: the quiet firmwares (`src/bin/quiet_*.rs`, no printing), with the
  same program without a model (`quiet_none`) subtracted. flash = vector table + .text +
  .rodata + .data; static RAM = .data + .bss (the model in its `static`).
- Instructions and stack of every call: `src/bin/measure.rs` under `-icount shift=0`.
- Int8 inference (`<Name>Int8`, `firmware/m0`'s model and data): its `PARAM_BYTES`, and the
  instructions per multiply-add of its integer pass on this board (`src/bin/measure_int8.rs`)
  and on QEMU's Cortex-M0 (micro:bit, `firmware/m0/src/bin/measure.rs`).
- What got linked: panic paths (`core::panicking`, `panic_bounds_check`, slice index
  failures) and software double precision (`__aeabi_d*`, `*df3`, `*df2`) in the firmwares.

Usage: footprint.py [--write-readme] [--check]
  --write-readme  replace the table between the README's footprint markers
  --check         fail unless every measured stack is within the bound the docs state
                  (`src/cpu.rs`, "Stack on a Cortex-M4F"), no firmware links software
                  double precision, and the quiet firmwares (construction, logits, predict,
                  loss, gradients, train step; no printing) link no panic code
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ELF = os.path.join(HERE, "target", "thumbv7em-none-eabihf", "release")
QEMU = [
    "qemu-system-arm", "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic",
    "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native",
]
BEGIN, END = "<!-- footprint:begin -->", "<!-- footprint:end -->"
CALLS = ["new", "logits", "predict", "loss", "gradients", "train_step"]
MODELS = {"seed": "seed `{batch 2, features 4, classes 2}`", "big": "`{batch 8, features 16, hidden [32], classes 4}`"}


def tool(*names):
    for name in names:
        if subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True).returncode == 0:
            return name
    sys.exit(f"none of {names} is installed (apt-get install binutils-arm-none-eabi or llvm)")


def build():
    subprocess.run(["cargo", "build", "--release", "--bins", "--quiet"], cwd=HERE, check=True)
    subprocess.run(["cargo", "build", "--release", "--bins", "--quiet"], cwd=M0, check=True)


M0 = os.path.join(ROOT, "firmware", "m0")
QEMU_M0 = [
    "qemu-system-arm", "-machine", "microbit", "-nographic", "-monitor", "none", "-serial", "none",
    "-semihosting-config", "enable=on,target=native",
]


def measure_int8():
    """Instructions per multiply-add of the int8 pass on the M4F and the M0, and the int8 and
    f32 parameter bytes of `{batch 8, features 16, hidden [32], classes 4}`."""
    runs = [
        ("m4f", QEMU + ["-icount", "shift=0", "-kernel", os.path.join(ELF, "measure_int8")]),
        ("m0", QEMU_M0 + ["-icount", "shift=0", "-kernel",
                          os.path.join(M0, "target", "thumbv6m-none-eabi", "release", "measure")]),
    ]
    per_mac, params = {}, None
    for board, cmd in runs:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            sys.exit(f"int8 measure on {board} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        for line in out.stdout.splitlines():
            m = re.match(r"measure (\w+) int8 forward instructions (\d+) macs (\d+)", line)
            if m:
                per_mac[m[1]] = int(m[2]) / int(m[3])
            m = re.match(r"footprint int8 big params (\d+) f32 (\d+)", line)
            if m:
                params = (int(m[1]), int(m[2]))
    return per_mac, params


def sections(binary):
    out = subprocess.run([tool("arm-none-eabi-size", "llvm-size"), "-A", os.path.join(ELF, binary)],
                         capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    flash = sum(sizes.get(s, 0) for s in (".vector_table", ".text", ".rodata", ".data"))
    ram = sizes.get(".data", 0) + sizes.get(".bss", 0)
    return flash, ram


def measure():
    out = subprocess.run(QEMU + ["-icount", "shift=0", "-kernel", os.path.join(ELF, "measure")],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"measure failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    calls, models, consts = {}, {}, {}
    for line in out.stdout.splitlines():
        m = re.match(r"footprint (\w+) params (\d+) optimizer (\d+) work (\d+)", line)
        if m:
            consts[m[1]] = f"{int(m[2]):,} / {int(m[3]):,} / {int(m[4]):,} B"
        m = re.match(r"measure (\w+) (\w+) instructions (\d+) stack (\d+)", line)
        if m:
            calls[(m[1], m[2])] = (int(m[3]), int(m[4]))
        m = re.match(r"model (\w+) macs (\d+) size (\d+)", line)
        if m:
            models[m[1]] = (int(m[2]), int(m[3]))
    return calls, {m: (macs, size, consts.get(m, "-")) for m, (macs, size) in models.items()}


def symbols(binary):
    out = subprocess.run([tool("arm-none-eabi-nm", "llvm-nm"), "-C", os.path.join(ELF, binary)],
                         capture_output=True, text=True, check=True).stdout
    names = [line.split(maxsplit=2)[-1] for line in out.splitlines() if line.strip()]
    panics = sorted({n for n in names if re.search(r"core::panicking|panic_bounds_check|slice_index_fail|slice_(start|end)_index_len_fail|panic_fmt|unwrap_failed", n)})
    doubles = sorted({n for n in names if re.match(r"(__aeabi_d|__.*df[23]$|__aeabi_[fil2]*2d$)", n)})
    return panics, doubles


def documented_bounds():
    """The stack bounds `src/cpu.rs` states: rows `| call | seed | big |` of its table."""
    text = open(os.path.join(ROOT, "src", "cpu.rs")).read()
    bounds = {}
    for m in re.finditer(r"^//! \| `(\w+)`[^|]* \| ([\d,]+) B \| ([\d,]+) B \|", text, re.M):
        bounds[("seed", m[1])] = int(m[2].replace(",", ""))
        bounds[("big", m[1])] = int(m[3].replace(",", ""))
    return bounds


def table(calls, models, flash, ram, int8=None):
    rows = [
        "| On QEMU's Cortex-M4F (opt-level \"s\", LTO) | " + " | ".join(MODELS.values()) + " |",
        "| --- | --- | --- |",
        "| tensorbridge's flash (quiet firmware minus the same without a model) | "
        + " | ".join(f"{flash[m]:,} B" for m in MODELS) + " |",
        "| static RAM (the `Cpu<M>` in a `static`) | " + " | ".join(f"{ram[m]:,} B" for m in MODELS) + " |",
        "| `PARAM_BYTES` / `OPTIMIZER_BYTES` / `WORK_BYTES` (compile-time consts) | "
        + " | ".join(f"{models[m][2]}" for m in MODELS) + " |",
    ]
    for call in CALLS:
        label = "`init_with_seed` into a `static`" if call == "new" else f"`{call}`"
        rows.append(f"| {label}: instructions / stack | "
                    + " | ".join(f"{calls[(m, call)][0]:,} / {calls[(m, call)][1]:,} B" for m in MODELS) + " |")
    rows.append("| inference (`predict`): instructions per multiply-add | "
                + " | ".join(f"{calls[(m, 'predict')][0] / models[m][0]:.1f}" for m in MODELS) + " |")
    if int8 is not None:
        per_mac, (int8_bytes, f32_bytes) = int8
        rows.append(f"| int8 (`<Name>Int8`): `PARAM_BYTES`, scales included (`f32`'s) | - | "
                    f"{int8_bytes:,} B ({f32_bytes:,} B, ratio {int8_bytes / f32_bytes:.2f}) |")
        rows.append(f"| int8 inference: instructions per multiply-add | - | {per_mac['m4f']:.1f} |")
        rows.append(f"| int8 inference on QEMU's Cortex-M0 (micro:bit, no FPU): instructions per multiply-add | - | "
                    f"{per_mac['m0']:.1f} |")
    return "\n".join(rows)


def main():
    args = set(sys.argv[1:])
    build()
    base_flash, base_ram = sections("quiet_none")
    flash, ram = {}, {}
    for m in MODELS:
        f, r = sections(f"quiet_{m}")
        flash[m], ram[m] = f - base_flash, r - base_ram
    calls, models = measure()
    text = table(calls, models, flash, ram, measure_int8())
    print(text)
    failures = []
    for binary in ("tensorbridge-m4f", "measure", "quiet_seed", "quiet_big"):
        panics, doubles = symbols(binary)
        print(f"{binary}: {len(panics)} panic symbols, {len(doubles)} soft-double symbols")
        for name in panics + doubles:
            print(f"  {name}")
        if "--check" in args and doubles:
            failures.append(f"{binary} links software double precision: {doubles}")
        if "--check" in args and panics and binary.startswith("quiet_"):
            failures.append(f"{binary} links panic code: {panics}")
    if "--check" in args:
        bounds = documented_bounds()
        for key, (_, stack) in sorted(calls.items()):
            bound = bounds.get(key)
            if bound is None:
                failures.append(f"src/cpu.rs states no stack bound for {key[0]} {key[1]}")
            elif stack > bound:
                failures.append(f"{key[0]} {key[1]}: {stack} B of stack, documented bound {bound} B")
    if "--write-readme" in args:
        path = os.path.join(ROOT, "README.md")
        readme = open(path).read()
        start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
        open(path, "w").write(readme[:start] + "\n" + text + "\n" + readme[end:])
    if failures:
        sys.exit("footprint check failed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
