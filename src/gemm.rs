//! Large matrix products through the `gemm-f32` crate (packed, cache-blocked, AVX-512 where the
//! CPU has it), split over the worker threads of `crate::pool` when large, and over rayon's
//! when larger still (feature `parallel`). Imports nothing of the crate but `pool`. The CPU core (`crate::cpu`) calls it
//! for layers of at least [`GEMM_MIN_MACS`] multiply-adds.

use rayon::prelude::*;

use crate::pool;

/// A layer with at least this many multiply-adds (`batch * in * out`) splits its GEMMs
/// over [`pool`]'s threads; smaller ones run on the calling thread. A hand-off to a worker
/// that is still spinning costs under a microsecond (`benches/cpu_threshold.rs`: 0.66-0.78 us
/// on a 2-core machine), against 35-70 us for a rayon injection from outside its pool, which
/// had kept the threshold at 2^24 (rayon measured 0.87x at 2^23, 1.6x at 2^24). A product of
/// 2^20 multiply-adds takes about 5 us on one AVX-512 core: the hand-off is a fifth of the
/// half saved. Override with the environment variable `TENSORBRIDGE_PAR_MIN_MACS` (read
/// once, at the first check).
pub const PAR_MIN_MACS: usize = 1 << 20;

/// A layer with at least this many multiply-adds goes through the `gemm` crate's packed
/// kernels (or, in the CPU backend's AVX variants and up to `fixed::FIXED_MAX_MACS`, the
/// fixed-size products that compute the same sums); smaller ones through the CPU core's
/// loops, whose constant bounds LLVM unrolls (the seed and iris shapes stay there).
/// Chosen, not measured: below a few thousand multiply-adds, packing costs more than it
/// saves.
pub const GEMM_MIN_MACS: usize = 1 << 13;

/// The threshold in force: [`PAR_MIN_MACS`] or `TENSORBRIDGE_PAR_MIN_MACS`.
fn par_min_macs() -> usize {
    static VALUE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| {
        std::env::var("TENSORBRIDGE_PAR_MIN_MACS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(PAR_MIN_MACS)
    })
}

/// Whether a layer of `macs` multiply-adds is worth spreading over threads.
#[inline(always)]
fn parallel(macs: usize) -> bool {
    macs >= 4096 && macs >= par_min_macs()
}

/// A read-only strided matrix: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A column-major `rows x cols` matrix.
    pub(crate) fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data, rows, cols, rs: 1, cs: rows }
    }
    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        View { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    /// Columns `c0..c1` (no copy). Out-of-range columns give a view that fails
    /// [`View::in_bounds`].
    fn columns(self, c0: usize, c1: usize) -> Self {
        let data = self.data.get(c0 * self.cs..).unwrap_or(&[]);
        View { data, cols: c1.saturating_sub(c0), ..self }
    }
    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Columns of `dst` per thread, at least: narrower parts cost more in packing than the
/// second thread saves.
const MIN_COLUMNS_PER_THREAD: usize = 16;

/// What a product does with the destination's old values.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Dst {
    /// `dst = lhs · rhs`: the old values are neither read nor kept.
    Set,
    /// `dst += scale · lhs · rhs`.
    Add(f32),
}

/// `dst = lhs · rhs` or `dst += s · lhs · rhs` (see [`Dst`]) with `dst` column-major
/// `m x n`. When `macs` is large, the columns of `dst` are split into one part per thread of
/// [`pool`], one single-threaded GEMM each: the `gemm` crate's own rayon split of these
/// shapes kept to one thread in most calls (measured at 256 x 1024 x 1024: median 4.7 ms with
/// it, 2.4 ms with this split, on 2 cores). Each output is the same sum whichever part holds
/// it (the `gemm` crate's depth blocks depend on the depth and its register block, not on
/// the columns), so the split never changes the bits.
pub(crate) fn gemm(dst: &mut [f32], m: usize, n: usize, lhs: View<'_>, rhs: View<'_>, macs: usize, op: Dst) {
    let parts = pool::threads().min(n / MIN_COLUMNS_PER_THREAD);
    if parallel(macs) && parts > 1 && split_keeps_bits(m, n, lhs.cols, n.div_ceil(parts)) {
        gemm_split(dst, n, lhs, rhs, op, parts, macs);
    } else {
        gemm_serial(dst, m, n, lhs, rhs, op);
    }
}

/// Whether the `gemm` crate (`gemm-common` 0.19) sums every output of an `m x n x k` product
/// as it does with the columns in parts of `per` (the last narrower): the same route (its
/// outer-product path for `k <= 2`, matrix-vector paths for one row or column, the path of
/// at most 256 outputs) and the same depth blocks. Its depth block is `min(k, 512)` when
/// both `m` and `n` are at most 64, and otherwise depends on `k` alone (at least 512, or `k`):
/// the two agree when `k <= 512`, and the whole product and its parts take the same one when
/// `m > 64` (never the small one) or `n <= 64` (always). The mnist shape's products (`m`
/// 128 or 784, depth 784 or 128) qualify; 37 x 101 x 600 would not (the whole in one depth
/// block, parts of 51 columns in two).
fn split_keeps_bits(m: usize, n: usize, k: usize, per: usize) -> bool {
    let narrowest = if per == 0 { 0 } else { per.min(n - (n - 1) / per * per) };
    k > 2 && m > 1 && narrowest > 1 && m * narrowest > 256 && (k <= 512 || m > 64 || n <= 64)
}

/// Products of at least this many multiply-adds split over rayon's threads, as before the
/// pool, where the caller sleeps while two rayon workers compute: above 2^24, the injection's
/// 35-70 us is a few percent of a part. On a loaded machine (load average 11 on 2 cores, three
/// interleaved rounds) the pool, whose caller spins while it waits, took the wide shape's
/// step (256 x 1024 -> 1024, 2^28 multiply-adds) 1.18-1.55x as long as rayon did, and its
/// inference 1.5-2.7x; the mnist step (2^23.6) took 0.93-1.07x as long.
pub const RAYON_MIN_MACS: usize = 1 << 24;

/// [`gemm`] with the columns of `dst` in `parts` parts of equal width (the last narrower),
/// over rayon's threads from [`RAYON_MIN_MACS`] multiply-adds, else over [`pool`]'s.
fn gemm_split(dst: &mut [f32], n: usize, lhs: View<'_>, rhs: View<'_>, op: Dst, parts: usize, macs: usize) {
    let m = lhs.rows;
    let per = n.div_ceil(parts.max(1));
    let part = |p: usize, part: &mut [f32]| {
        let (c0, c1) = (p * per, (p * per + per).min(n));
        gemm_serial(part, m, c1 - c0, lhs, rhs.columns(c0, c1), op);
    };
    if macs >= RAYON_MIN_MACS {
        dst.par_chunks_mut(per * m).enumerate().for_each(|(p, d)| part(p, d));
    } else {
        pool::chunks_mut(dst, per * m, part);
    }
}

/// [`gemm`] on the calling thread.
fn gemm_serial(dst: &mut [f32], m: usize, n: usize, lhs: View<'_>, rhs: View<'_>, op: Dst) {
    let k = lhs.cols;
    // The shapes come from the model's constants; a mismatch is a bug in the CPU core.
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n && dst.len() == m * n && lhs.in_bounds() && rhs.in_bounds(),
        "gemm operand shapes disagree"
    );
    // The crate computes `dst = alpha · dst + beta · lhs · rhs`, reading `dst` only when
    // told to.
    let (read_dst, beta) = match op {
        Dst::Set => (false, 1.0),
        Dst::Add(scale) => (true, scale),
    };
    // SAFETY: the assert above checked that `dst` holds exactly the m x n column-major
    // result and that every element `(r, c)` of `lhs` (m x k) and `rhs` (k x n) addressed
    // through its strides lies inside its slice; `dst` is a unique borrow, so it aliases
    // neither operand. `gemm` reads and writes nothing else.
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            m as isize,
            1,
            read_dst,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm_common::Parallelism::None,
        );
    }
}

/// Whether `f(chunk of a, chunk of b)` holds for every pair of equal chunks of two
/// slices, every chunk visited (in parallel over rayon's threads when long: at least 2^17
/// values, past [`RAYON_MIN_MACS`]-sized layers only).
pub(crate) fn all_chunks(a: &[f32], b: &mut [f32], f: impl Fn(&[f32], &mut [f32]) -> bool + Sync + Send) -> bool {
    const CHUNK: usize = 1 << 15;
    if a.len() >= 4 * CHUNK {
        a.par_chunks(CHUNK).zip(b.par_chunks_mut(CHUNK)).map(|(a, b)| f(a, b)).reduce(|| true, |x, y| x & y)
    } else {
        f(a, b)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values in [-2, 2) with many significant bits (xorshift), so that any change in the
    /// order or the rounding of a sum shows in the bits. Also the test data of `fixed`'s
    /// tests.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 22) as f32 - 2.0
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The products of the mnist shape's first layer (depth 784: two depth blocks) and of
    /// odd widths, split into 2, 3 and 7 parts over the threads, equal the product on one
    /// thread bit for bit, for `Set` and for the fused update; and they are the product (within
    /// float rounding of the `f64` sums).
    #[test]
    fn a_split_product_has_the_serial_bits() {
        // (m, n, k): forward z = a · W, the fused weight update wᵀ-shaped, odd widths.
        for (m, n, k) in [(128, 128, 784), (784, 128, 128), (37, 101, 500), (256, 100, 1024), (64, 48, 3)] {
            let (a, b, d) = (values(m * k, 1), values(k * n, 2), values(m * n, 3));
            let (lhs, rhs) = (View::col_major(&a, m, k), View::col_major(&b, k, n));
            for op in [Dst::Set, Dst::Add(-0.01)] {
                let mut serial = d.clone();
                gemm_serial(&mut serial, m, n, lhs, rhs, op);
                for parts in [2, 3, 7] {
                    assert!(split_keeps_bits(m, n, k, n.div_ceil(parts)), "{m}x{n}x{k} in {parts} parts");
                    let mut split = d.clone();
                    gemm_split(&mut split, n, lhs, rhs, op, parts, m * n * k);
                    assert_eq!(bits(&split), bits(&serial), "{m}x{n}x{k}, {op:?}, {parts} parts");
                }
                if op == Dst::Set {
                    for (c, r) in [(0, 0), (n - 1, m - 1), (n / 2, m / 3)] {
                        let exact: f64 = (0..k).map(|i| f64::from(a[i * m + r]) * f64::from(b[c * k + i])).sum();
                        let got = f64::from(serial[c * m + r]);
                        assert!((got - exact).abs() <= 1e-5 * k as f64, "({r}, {c}): {got} against {exact}");
                    }
                }
            }
        }
    }

    /// Splits that would change the sums are refused: the depth-block switch at 64 rows and
    /// columns, the small-output path, the outer-product path, single columns.
    #[test]
    fn splits_that_change_the_sums_are_refused() {
        assert!(!split_keeps_bits(37, 101, 600, 51));
        assert!(split_keeps_bits(37, 60, 600, 30) && split_keeps_bits(65, 101, 600, 51));
        assert!(!split_keeps_bits(16, 32, 100, 16) && split_keeps_bits(17, 32, 100, 16));
        assert!(!split_keeps_bits(128, 128, 2, 64) && !split_keeps_bits(128, 129, 100, 128));
    }

    #[test]
    fn all_chunks_visits_every_chunk_and_ands_the_answers() {
        let a: Vec<f32> = (0..300_000).map(|i| i as f32).collect();
        let mut b = vec![0.0f32; 300_000];
        assert!(all_chunks(&a, &mut b, |a, b| {
            b.copy_from_slice(a);
            true
        }));
        assert!(a.iter().zip(&b).all(|(x, y)| x == y));
        // One chunk (the one holding 250,000) says no.
        assert!(!all_chunks(&a, &mut b, |a, _| !a.contains(&250_000.0)));
    }
}
