#!/usr/bin/env bash
# Checks that the int8 forward pass of the Cortex-M0 firmware (`forward_batch` in
# src/bin/measure.rs, with the core's `forward_codes` inlined) calls no software floating
# point: every call it makes is one of the compiler's integer helpers (memory copies, integer
# division, 64-bit multiply and shifts) or a bounds check's panic path. Prints the calls;
# fails on any other.
set -euo pipefail
elf="${1:-target/thumbv6m-none-eabi/release/measure}"
calls="$(arm-none-eabi-objdump -d --no-show-raw-insn "$elf" | awk '/<[^>]*forward_batch[^>]*>:$/,/^$/' | grep -oE '\bbl[a-z]*\s+[0-9a-f]+ <[^>]+>' | sed -E 's/.*<([^>+]+).*/\1/' | sort -u)"
if [ -z "$(arm-none-eabi-objdump -d "$elf" | grep -E '<[^>]*forward_batch[^>]*>:$')" ]; then
    echo "no forward_batch in $elf" >&2
    exit 1
fi
echo "forward_batch calls: $(echo $calls)"
bad="$(echo "$calls" | grep -vE '^__aeabi_(memclr4?|memcpy4?|memset4?|memmove4?|uidivmod|uidiv|idivmod|idiv|lmul|llsl|llsr|lasr)$' | grep -vE '(panic|slice_index_fail)' || true)"
if [ -n "$bad" ]; then
    echo "forward_batch calls something other than the integer helpers: $bad" >&2
    exit 1
fi
