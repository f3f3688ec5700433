//! Large matrix products through the `gemm-f32` crate (packed, cache-blocked, AVX-512 where the
//! CPU has it), split over rayon's threads when large (feature `parallel`). A leaf: imports
//! nothing of the crate. The CPU core (`crate::cpu`) calls it for layers of at least
//! [`GEMM_MIN_MACS`] multiply-adds.

use rayon::prelude::*;

/// A layer with at least this many multiply-adds (`batch * in * out`) splits its GEMMs
/// over rayon's threads; smaller ones run on the calling thread. Measured with
/// `benches/cpu_threshold.rs` on a 2-core machine (train steps of linear layers, threads
/// against one thread): 0.29x at 2^17, 0.61x at 2^22, 0.87x at 2^23, 1.6x at 2^24, 1.9x
/// at 2^26 — waking the pool costs tens of microseconds there. The mnist shape's first layer
/// (128 x 784 x 128, 12.8 Mi multiply-adds) measured 480 us a train step split over 2
/// threads and 394 us on one (AVX-512 machine, same run), so the threshold is 2^24, the
/// first size where threads paid. Override with the environment variable
/// `TENSORBRIDGE_PAR_MIN_MACS` (read once, at the first check).
pub const PAR_MIN_MACS: usize = 16 << 20;

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
/// `m x n`. When `macs` is large, the columns of `dst` are split over rayon's threads, one
/// single-threaded GEMM each: the `gemm` crate's own rayon split of these shapes kept to one
/// thread in most calls (measured at 256 x 1024 x 1024: median 4.7 ms with it, 2.4 ms with
/// this split, on 2 cores).
pub(crate) fn gemm(dst: &mut [f32], m: usize, n: usize, lhs: View<'_>, rhs: View<'_>, macs: usize, op: Dst) {
    let threads = rayon::current_num_threads();
    let parts = threads.min(n / MIN_COLUMNS_PER_THREAD);
    if parallel(macs) && parts > 1 {
        let per = n.div_ceil(parts);
        dst.par_chunks_mut(per * m).enumerate().for_each(|(p, part)| {
            let (c0, c1) = (p * per, (p * per + per).min(n));
            gemm_serial(part, m, c1 - c0, lhs, rhs.columns(c0, c1), op);
        });
    } else {
        gemm_serial(dst, m, n, lhs, rhs, op);
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
/// slices, every chunk visited (in parallel when long).
pub(crate) fn all_chunks(a: &[f32], b: &mut [f32], f: impl Fn(&[f32], &mut [f32]) -> bool + Sync + Send) -> bool {
    const CHUNK: usize = 1 << 15;
    if a.len() >= 4 * CHUNK {
        a.par_chunks(CHUNK).zip(b.par_chunks_mut(CHUNK)).map(|(a, b)| f(a, b)).reduce(|| true, |x, y| x & y)
    } else {
        f(a, b)
    }
}
