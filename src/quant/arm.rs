//! The integer products of the int8 forward pass on a Cortex-M: the operands of a block
//! of rows laid out for the board's loads, and the loops over them in assembly.
//!
//! A block is `K` rows (2 or 4) of one layer's operands (each input code, or hidden unit,
//! minus its zero point), every weight of a channel loaded once for the `K` rows:
//!
//! - **Cortex-M4/M7 (the DSP extension, `tb_arm_dsp`).** Two 16-bit operands a word, the
//!   pairs that `SMLAD` (two 16 x 16-bit products added to a sum, one instruction)
//!   multiplies with the weights `(w0, w2)` and `(w1, w3)` that `SXTB16` unpacks from the
//!   word of weights `w0 w1 w2 w3`. Every whole group of four inputs `a0 a1 a2 a3` is the
//!   `2K` words `(a0, a2)` of rows `0..K`, then `(a1, a3)` of rows `0..K` (low half first),
//!   so that one `LDM` loads a pair of every row; the inputs past the last whole group are
//!   one word of two rows each (`K / 2` words an input).
//! - **Cortex-M0/M0+ (`tb_arm_v6m`), four rows.** One sign-extended 32-bit operand a word,
//!   the four rows of input `i` in words `4i..4i + 4` (`LDM` loads them; the M0 has no
//!   16-bit multiply-add, and unpacking halves costs an instruction an operand).
//! - **Any other Arm without the DSP extension, and the M0's two rows.** One word an
//!   input, row 0's operand in the low half, row 1's in the high half.
//!
//! Four rows take more stack than two (the operands of a layer and of the next, `MAXW`
//! each): blocks of four run where that stays within [`QUAD_BYTES`], blocks of two
//! otherwise, and for the rows left after the blocks of four.

/// Words of operands an input in a block of four rows: two 16-bit operands a word with
/// the DSP extension, one 32-bit operand a word on a Cortex-M0.
#[cfg(tb_arm_dsp)]
pub(super) const QUAD_WORDS: usize = 2;
/// Words of operands an input in a block of four rows (on an Arm with neither the DSP
/// extension nor the M0's kernel, [`quads`] is false and no block of four runs).
#[cfg(not(tb_arm_dsp))]
pub(super) const QUAD_WORDS: usize = 4;

/// The most stack, in bytes, that the operands of a block of four rows may take (two
/// layers' worth, `2 · QUAD_WORDS · 4 · MAXW`): past it, blocks of two rows (half as much
/// on a Cortex-M4, an eighth on a Cortex-M0).
#[cfg(any(tb_arm_dsp, tb_arm_v6m))]
pub(super) const QUAD_BYTES: usize = 4096;

/// Whether a model whose widest layer is `maxw` runs blocks of four rows (on a target with
/// a kernel for them, the DSP extension's or the Cortex-M0's; elsewhere, none runs).
#[cfg(any(tb_arm_dsp, tb_arm_v6m))]
#[inline(always)]
pub(super) const fn quads(maxw: usize) -> bool {
    2 * QUAD_WORDS * 4 * maxw <= QUAD_BYTES
}

/// Calls `f(r)` for every row `r` of a block of `K` rows (2 or 4), written out: a
/// size-optimised build unrolls no loop, and a loop over the rows keeps their values in
/// memory.
#[inline(always)]
pub(super) fn each<const K: usize>(mut f: impl FnMut(usize)) {
    const { assert!(K == 2 || K == 4) };
    f(0);
    f(1);
    if K == 4 {
        f(2);
        f(3);
    }
}

/// A word of operands as the stores see it: its two halves (low first) with the DSP
/// extension, whose stores are of one 16-bit operand; the word itself otherwise.
#[cfg(tb_arm_dsp)]
type Cell = [u16; 2];
/// A word of operands as the stores see it.
#[cfg(not(tb_arm_dsp))]
type Cell = u32;

/// The operands of a block of `K` rows (2, or 4 where [`quads`] allows), `N` words an
/// input (see the module's docs: `K / 2` with the DSP extension, 4 for a Cortex-M0's four
/// rows, else 1), for inputs up to `MAXW`. Word-aligned (the loops load words).
#[derive(Clone, Copy)]
#[repr(C, align(4))]
pub(super) struct Operands<const K: usize, const N: usize, const MAXW: usize> {
    /// The words.
    cells: [[Cell; MAXW]; N],
}

impl<const K: usize, const N: usize, const MAXW: usize> Operands<K, N, MAXW> {
    /// All zeros. The layouts are two rows of one word an input, or four rows of
    /// [`QUAD_WORDS`] words an input (which the loops' reads are bounded by).
    #[inline(always)]
    pub(super) fn new() -> Self {
        const { assert!((K == 2 && N == 1) || (K == 4 && N == QUAD_WORDS)) };
        Self { cells: [[Cell::default(); MAXW]; N] }
    }

    /// Stores operand `i` of every row, `v(r)` for row `r`, of a layer `width` wide.
    #[inline(always)]
    pub(super) fn put(&mut self, i: usize, width: usize, v: impl Fn(usize) -> i16) {
        let cells = self.cells.as_flattened_mut();
        #[cfg(tb_arm_dsp)]
        {
            // Word `2K (i / 4) + K (i & 1) + r`, half `(i / 2) & 1`, in a whole group of
            // four; past the last, word `K/2 · i + r / 2`, half `r & 1`.
            if i < width & !3 {
                let (first, half) = (2 * K * (i >> 2) + K * (i & 1), (i >> 1) & 1);
                if let Some(c) = cells.get_mut(first..first + K) {
                    each::<K>(|r| c[r][half] = v(r) as u16);
                }
            } else if let Some(c) = cells.get_mut(K / 2 * i..K / 2 * i + K / 2) {
                each::<K>(|r| c[r / 2][r & 1] = v(r) as u16);
            }
        }
        #[cfg(not(tb_arm_dsp))]
        {
            let _ = width;
            if N == K {
                if let Some(c) = cells.get_mut(K * i..K * i + K) {
                    each::<K>(|r| c[r] = i32::from(v(r)) as u32);
                }
            } else if let Some(c) = cells.get_mut(i) {
                *c = u32::from(v(0) as u16) | (u32::from(v(K - 1) as u16) << 16);
            }
        }
    }

    /// The sums `b + Σ_i row_r[i] · w[i]` of every row `r < K` over the first `w.len()`
    /// operands (at most `MAXW`), in the first `K` of the four (an array of four whatever
    /// `K`, so that the callers' constant indices keep them in registers): the same
    /// integers as `wrapping_add` of the products (every product is exact in 32 bits, and
    /// the instructions' sums wrap as `wrapping_add`).
    #[inline(always)]
    pub(super) fn products(&self, w: &[i8], b: i32) -> [i32; 4] {
        let w = &w[..w.len().min(MAXW)];
        #[cfg(tb_arm_dsp)]
        return self.products_dsp(w, b);
        #[cfg(not(tb_arm_dsp))]
        {
            // Four rows run on a Cortex-M0 only (`quads`).
            #[cfg(tb_arm_v6m)]
            if K == 4 {
                return self.products_4x1(w, b);
            }
            let (s0, s1) = self.products_2x1(w, b);
            [s0, s1, s1, s1]
        }
    }

    /// The first word, for the loops in assembly.
    #[inline(always)]
    fn words(&self) -> *const u32 {
        self.cells.as_ptr().cast()
    }

    /// [`Operands::products`] with the DSP extension: per group of four inputs, a loop in
    /// assembly loads one word of four weights, unpacks it by two `SXTB16` into `(w0, w2)`
    /// and `(w1, w3)`, loads the group's pairs of operands by `LDM`s of four words, and
    /// makes `2K` `SMLAD`s: for two rows eight multiply-adds in ten instructions, for four
    /// sixteen in fifteen. The inputs past the last whole group one by one.
    #[cfg(tb_arm_dsp)]
    #[inline(always)]
    fn products_dsp(&self, w: &[i8], b: i32) -> [i32; 4] {
        let n = w.len();
        let whole = n & !3;
        let (mut s0, mut s1, mut s2, mut s3) = (b, b, b, b);
        if whole > 0 && K == 2 {
            // SAFETY: the loop reads the weights `w[0..whole]` a word at a time (`ldr` from
            // `pw`, post-incremented by 4 until it reaches `end = w + whole`; the Cortex-M4
            // loads a word from any address) and the operands' first `whole` words four at
            // a time (`ldm` from `pa`, word-aligned by the type's `align(4)`,
            // post-incremented by 16); `w` holds `n >= whole` bytes, the operands
            // `N · MAXW >= MAXW >= n` words (`products` cut `w` to `MAXW`), and `whole` is a
            // positive multiple of 4, so every read is in bounds. SMLAD and SXTB16 are
            // instructions of the DSP extension, which this target has (the build script
            // sets `tb_arm_dsp` for the Armv7E-M targets only). It writes only the
            // registers named (r8-r11 as clobbers) and the flags (`cmp`, and SMLAD's sticky
            // Q flag, which no Rust code reads), reads memory but writes none, and uses no
            // stack.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ldr {wt}, [{pw}], #4",
                    "ldm {pa}!, {{r8, r9, r10, r11}}",
                    "sxtb16 {t}, {wt}",
                    "sxtb16 {wt}, {wt}, ror #8",
                    "smlad {s0}, r8, {t}, {s0}",
                    "smlad {s1}, r9, {t}, {s1}",
                    "smlad {s0}, r10, {wt}, {s0}",
                    "smlad {s1}, r11, {wt}, {s1}",
                    "cmp {pw}, {end}",
                    "bne 2b",
                    pw = inout(reg) w.as_ptr() => _,
                    pa = inout(reg) self.words() => _,
                    end = in(reg) w.as_ptr().wrapping_add(whole),
                    s0 = inout(reg) s0,
                    s1 = inout(reg) s1,
                    wt = out(reg) _,
                    t = out(reg) _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                    options(readonly, nostack),
                );
            }
        } else if whole > 0 && K == 4 {
            // SAFETY: the loop reads the weights `w[0..whole]` a word at a time (`ldr` from
            // `pw`, post-incremented by 4 until it reaches `end = w + whole`; the Cortex-M4
            // loads a word from any address) and the operands' first `2 · whole` words four
            // at a time (two `ldm`s a group from `pa`, word-aligned by the type's
            // `align(4)`, post-incremented by 16); `w` holds `n >= whole` bytes, the
            // operands `N · MAXW = 2 · MAXW >= 2n` words (`new` lets four rows have only
            // `N = QUAD_WORDS = 2` here, and `products` cut `w` to `MAXW`), and `whole` is
            // a positive multiple of 4, so every read is in bounds. SMLAD and SXTB16 are
            // instructions of the DSP extension, which this target has. r7 (which LLVM
            // keeps as the frame pointer and lets no operand take) holds the unpacked
            // weights `(w0, w2)`: it is pushed first and popped last, so it leaves with the
            // value it came with. It writes only the registers named (r8-r11 as clobbers),
            // the flags (`cmp`, SMLAD's sticky Q flag, which no Rust code reads) and the
            // word below the stack pointer that the push takes back; it reads memory but
            // writes no other.
            unsafe {
                core::arch::asm!(
                    "push {{r7}}",
                    "2:",
                    "ldr {wt}, [{pw}], #4",
                    "ldm {pa}!, {{r8, r9, r10, r11}}",
                    "sxtb16 r7, {wt}",
                    "sxtb16 {wt}, {wt}, ror #8",
                    "smlad {s0}, r8, r7, {s0}",
                    "smlad {s1}, r9, r7, {s1}",
                    "smlad {s2}, r10, r7, {s2}",
                    "smlad {s3}, r11, r7, {s3}",
                    "ldm {pa}!, {{r8, r9, r10, r11}}",
                    "smlad {s0}, r8, {wt}, {s0}",
                    "smlad {s1}, r9, {wt}, {s1}",
                    "smlad {s2}, r10, {wt}, {s2}",
                    "smlad {s3}, r11, {wt}, {s3}",
                    "cmp {pw}, {end}",
                    "bne 2b",
                    "pop {{r7}}",
                    pw = inout(reg) w.as_ptr() => _,
                    pa = inout(reg) self.words() => _,
                    end = in(reg) w.as_ptr().wrapping_add(whole),
                    s0 = inout(reg) s0,
                    s1 = inout(reg) s1,
                    s2 = inout(reg) s2,
                    s3 = inout(reg) s3,
                    wt = out(reg) _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                );
            }
        }
        let mut s = [s0, s1, s2, s3];
        if whole < n {
            let cells = self.cells.as_flattened();
            for (i, &y) in w.iter().enumerate().skip(whole) {
                let y = i32::from(y);
                if let Some(c) = cells.get(K / 2 * i..K / 2 * i + K / 2) {
                    each::<K>(|r| s[r] = s[r].wrapping_add(i32::from(c[r / 2][r & 1] as i16) * y));
                }
            }
        }
        s
    }

    /// [`Operands::products`] of two rows without the DSP extension (one word an input,
    /// the rows in its halves), whose compiled loops keep sums on the stack (a Cortex-M0
    /// has eight low registers): a loop in assembly, two multiply-adds in eleven
    /// instructions, the sums in two high registers.
    #[cfg(not(tb_arm_dsp))]
    #[inline(always)]
    fn products_2x1(&self, w: &[i8], b: i32) -> (i32, i32) {
        let n = w.len();
        let (mut s0, mut s1) = (b, b);
        if n == 0 {
            return (s0, s1);
        }
        // SAFETY: the loop reads the operands' first `n` words (4 bytes each, through `pa`,
        // from `self.words()`, word-aligned by the type's `align(4)`) and `w[0..n]` (as
        // `pw[k]` with `pw` the end of `w` and `k` from `-n` up to `-1`); the operands hold
        // `N · MAXW >= n` words (`products` cut `w` to `MAXW`) and `w` holds `n` bytes, and
        // `n >= 1`, so every read is in bounds. It writes only the registers named (r8 and
        // r10 as clobbers), reads memory but writes none, and uses no stack.
        unsafe {
            core::arch::asm!(
                // r0: pa, r1: pw, r2: k, r3 and r4: the sums in and out (r8 and r10 in the
                // loop), then x0 and x1; r5: y.
                "mov r8, r3",
                "mov r10, r4",
                "2:",
                "ldr r4, [r0]",
                "ldrsb r5, [r1, r2]",
                "sxth r3, r4",
                "asrs r4, r4, #16",
                "muls r3, r5, r3",
                "muls r4, r5, r4",
                "add r8, r3",
                "add r10, r4",
                "adds r0, #4",
                "adds r2, #1",
                "bne 2b",
                "mov r3, r8",
                "mov r4, r10",
                inout("r0") self.words() => _,
                in("r1") w.as_ptr().wrapping_add(n),
                inout("r2") (n as isize).wrapping_neg() => _,
                inout("r3") s0,
                inout("r4") s1,
                out("r5") _,
                out("r8") _,
                out("r10") _,
                options(readonly, nostack),
            );
        }
        (s0, s1)
    }

    /// [`Operands::products`] of four rows on a Cortex-M0 (one 32-bit operand a word, the
    /// four rows of an input in four words): a loop in assembly loads an input's four
    /// operands with one `LDM` and its weight with one `LDRSB`, and makes four `MULS` and
    /// four `ADD`s: four multiply-adds in twelve instructions, the sums in four high
    /// registers.
    #[cfg(tb_arm_v6m)]
    #[inline(always)]
    fn products_4x1(&self, w: &[i8], b: i32) -> [i32; 4] {
        let n = w.len();
        if n == 0 {
            return [b; 4];
        }
        let (s0, s1, s2, s3): (i32, i32, i32, i32);
        // SAFETY: the loop reads the operands' first `4n` words (an `ldm` of four from
        // `pa` an input, word-aligned by the type's `align(4)`, post-incremented by 16) and
        // `w[0..n]` (as `pw[k]` with `pw` the end of `w` and `k` from `-n` up to `-1`); the
        // operands hold `N · MAXW = 4 · MAXW >= 4n` words (`new` lets four rows have only
        // `N = QUAD_WORDS = 4` here, and `products` cut `w` to `MAXW`) and `w` holds `n` bytes, and `n >= 1`, so every
        // read is in bounds. r6 and r7 (which LLVM keeps for itself and lets no operand
        // take) hold an operand and the weight: they are pushed first and popped last, so
        // they leave with the values they came with. It writes only the registers named
        // (r4, r5 and r8-r11 as clobbers), the flags, and the two words below the stack
        // pointer that the push takes back; it reads memory but writes no other.
        unsafe {
            core::arch::asm!(
                // r0: pa, r1: pw, r2: k, r3: b; then r3-r6: the four rows' operands, r7:
                // the weight, r8-r11: the sums (high registers, which Thumb-1 code names
                // as clobbers only: moved to r0-r3 at the end).
                "push {{r6, r7}}",
                "mov r8, r3",
                "mov r9, r3",
                "mov r10, r3",
                "mov r11, r3",
                "2:",
                "ldm r0!, {{r3, r4, r5, r6}}",
                "ldrsb r7, [r1, r2]",
                "muls r3, r7, r3",
                "muls r4, r7, r4",
                "muls r5, r7, r5",
                "muls r6, r7, r6",
                "add r8, r3",
                "add r9, r4",
                "add r10, r5",
                "add r11, r6",
                "adds r2, #1",
                "bne 2b",
                "pop {{r6, r7}}",
                "mov r0, r8",
                "mov r1, r9",
                "mov r2, r10",
                "mov r3, r11",
                inout("r0") self.words() => s0,
                inout("r1") w.as_ptr().wrapping_add(n) => s1,
                inout("r2") (n as isize).wrapping_neg() => s2,
                inout("r3") b => s3,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
            );
        }
        [s0, s1, s2, s3]
    }
}
