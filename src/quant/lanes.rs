//! The host's int8 forward pass with AVX-512 VNNI, the output channels in the vector lanes
//! (x86-64 with the standard library), and its AVX2 form for processors without VNNI
//! ([`Kind::Avx2`], at the end of the module). It imports nothing of the crate but
//! [`crate::simd`]'s limit; `quant` hands it the model as slices and checks the
//! processor first.
//!
//! Per layer, the weights are regrouped once per model (at its first call): sixteen output
//! channels a vector,
//! each lane holding four consecutive weights of its channel (one "quad"). One `vpdpbusd`
//! then multiplies a row's four operands (unsigned bytes, broadcast to every lane) with
//! the quads of sixteen channels and adds each lane's four products into that channel's
//! 32-bit sum: no horizontal sum at the end, and the requantisation runs on sixteen
//! channels at once. The integers are those of `quant`'s scalar pass, bit for bit:
//!
//! - operands: an input's is its code plus 128 (in `0..=255`); the first layer's biases
//!   take back `(z + 128) · Σ w` (`z` the input's zero point), so each sum is
//!   `bias + Σ (q − z) · w` as in the scalar pass. A hidden unit's operand is its code
//!   minus its zero point, which the ReLU and the clamp keep in `0..=255`;
//! - sums: exact products, added in wrapping 32-bit arithmetic (the quantiser bounds every
//!   sum within `i32`, and wrapping sums agree modulo 2^32 in any order);
//! - requantisation: `quant::Requant`'s integers (`r(u) = (hi(min(u, cap) << k · M) +
//!   round) >> shift`), lane by lane with the same 32-bit operations.
//!
//! Padding (channels beyond a layer's width, weights beyond its depth) is zero, and a zero
//! channel's parameters requantise every sum to 0, so padded lanes hold 0 and add nothing.

use core::arch::x86_64::*;
use std::vec::Vec;

use crate::simd::{self, Simd};

/// One output channel's requantisation, `(cap, k, mult, round, shift)` of `quant::Requant`.
pub(crate) type Req = [u32; 5];

/// The model, as `quant::Int8Model` holds it.
pub(crate) struct Net<'a> {
    /// Widths of the layers' tensors, input first (`Model::LAYERS`).
    pub(crate) dims: &'a [usize],
    /// Every layer's weights, channel after channel, each channel's `fan_in` in a row.
    pub(crate) weights: &'a [i8],
    /// Every channel's bias.
    pub(crate) biases: &'a [i32],
    /// Every channel's requantisation.
    pub(crate) req: &'a [Req],
    /// Every tensor's zero point, the input first.
    pub(crate) zeros: &'a [i16],
}

/// Rows of a block: each regrouped weight vector is loaded once for this many rows.
pub(crate) const ROWS: usize = 4;

/// The pass a processor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// AVX-512 F, BW, VL and VNNI: sixteen channels a vector, `vpdpbusd` on quads.
    Vnni,
    /// AVX2: eight channels a vector, `vpmaddwd` on pairs of 16-bit operands and weights.
    Avx2,
}

/// The pass this processor runs, if any: [`Kind::Vnni`] where it has AVX-512 F, BW, VL and
/// VNNI and the model's weights are few enough for 32-bit gather offsets, else
/// [`Kind::Avx2`] where it has AVX2. `TENSORBRIDGE_SIMD` lowers the choice as it does the
/// `f32` train step's: `avx2` picks the AVX2 pass on a processor with both, `baseline`
/// neither (`quant`'s own pass). The processor and the variable are read once, at the first
/// call (every batch's pass asks).
pub(crate) fn kind(weights: usize) -> Option<Kind> {
    static CHOICE: std::sync::OnceLock<Option<Kind>> = std::sync::OnceLock::new();
    let choice = *CHOICE.get_or_init(|| {
        if !simd::allows(Simd::Avx2) {
            return None;
        }
        if simd::allows(Simd::Avx512)
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Some(Kind::Vnni);
        }
        std::arch::is_x86_feature_detected!("avx2").then_some(Kind::Avx2)
    });
    match choice {
        Some(Kind::Vnni) if weights > i32::MAX as usize => {
            std::arch::is_x86_feature_detected!("avx2").then_some(Kind::Avx2)
        }
        other => other,
    }
}

/// One layer, regrouped: `groups` vectors of sixteen channels, `quads` quads deep.
struct Layer {
    fan_in: usize,
    fan_out: usize,
    groups: usize,
    quads: usize,
    /// Where its quads start in [`Prepared::quads`] (`groups · quads · 16` of them, group
    /// after group).
    at: usize,
    /// Where its lanes start (`groups · 16` of them): group `lane / 16` of [`Prepared::params`].
    lane: usize,
    /// The zero point of its output.
    zero: i32,
}

/// The model regrouped for [`rows`] ([`prepare`]), kept by the model once made.
pub(crate) struct Prepared {
    kind: Kind,
    /// The input's zero point.
    input_zero: i16,
    layers: Vec<Layer>,
    quads: Vec<i32>,
    /// Per group of sixteen lanes, six vectors: the biases, then the five parameters of
    /// [`Req`] by lane (`params[(lane / 16 · 6 + p) · 16 + lane % 16]`, `p = 0` the bias).
    params: Vec<u32>,
}

/// The model regrouped for the pass `kind` ([`kind`] must have found it).
///
/// # Safety
/// The processor must have `kind`'s features, and `net`'s slices must hold `dims`'
/// weights and channels.
pub(crate) unsafe fn prepare(net: &Net<'_>, kind: Kind) -> Prepared {
    match kind {
        // SAFETY: the contract, passed on.
        Kind::Vnni => unsafe { prepare_vnni(net) },
        Kind::Avx2 => prepare_avx2(net),
    }
}

/// Runs the forward pass of `count` rows of the model `prep`: `codes[i * count + r]` is
/// input code `i` of row `r`; `sink(r, k, q)` takes the head's code `k` of row `r`.
///
/// # Safety
/// The processor must have the features of `prep`'s pass ([`kind`]); `codes` must hold at
/// least `FEATURES · count` codes.
pub(crate) unsafe fn rows(prep: &Prepared, codes: &[i8], count: usize, sink: impl FnMut(usize, usize, i16)) {
    match prep.kind {
        // SAFETY: the contract, passed on.
        Kind::Vnni => unsafe { rows_vnni(prep, codes, count, sink) },
        // SAFETY: the contract, passed on.
        Kind::Avx2 => unsafe { rows_avx2(prep, codes, count, sink) },
    }
}

/// What [`blocks`] needs of a pass: the hidden operands' element and the layer's kernel.
trait Pass {
    /// A hidden unit's operand: a byte (VNNI's quads) or a 16-bit half (AVX2's pairs).
    type Elem: Copy + Default;
    /// Operands in one 32-bit word (a quad of bytes, a pair of halves).
    const PER_WORD: usize;
    /// Channels of a group (a vector's lanes).
    const LANES: usize;

    /// One layer of a block of [`ROWS`] rows: `op(r, w)` is row `r`'s operand word `w`; a
    /// hidden layer's operands go to `out` (row `r` at `r · stride`), the head's codes to
    /// `sink`.
    ///
    /// # Safety
    /// The processor must have the pass's features; `op` must read inside its operands.
    unsafe fn layer(
        prep: &Prepared,
        layer: &Layer,
        op: impl Fn(usize, usize) -> i32,
        out: Option<&mut [Self::Elem]>,
        stride: usize,
        sink: &mut dyn FnMut(usize, usize, i16),
    );
}

/// The AVX-512 VNNI pass's part of [`blocks`].
struct Vnni;

impl Pass for Vnni {
    type Elem = u8;
    const PER_WORD: usize = 4;
    const LANES: usize = 16;

    /// Two groups of sixteen channels at a time (each operand broadcast once for both).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
    unsafe fn layer(
        prep: &Prepared,
        layer: &Layer,
        op: impl Fn(usize, usize) -> i32,
        mut out: Option<&mut [u8]>,
        stride: usize,
        sink: &mut dyn FnMut(usize, usize, i16),
    ) {
        let mut g = 0;
        while g + 2 <= layer.groups {
            // SAFETY: the contract, passed on; groups `g` and `g + 1` exist.
            unsafe { groups::<2>(prep, layer, g, &op, out.as_deref_mut(), stride, sink) };
            g += 2;
        }
        if g < layer.groups {
            // SAFETY: as above; group `g` exists.
            unsafe { groups::<1>(prep, layer, g, &op, out, stride, sink) };
        }
    }
}

/// The AVX2 pass's part of [`blocks`].
struct Avx2;

impl Pass for Avx2 {
    type Elem = u16;
    const PER_WORD: usize = 2;
    const LANES: usize = LANES2;

    /// Two groups of eight channels at a time.
    #[target_feature(enable = "avx2")]
    unsafe fn layer(
        prep: &Prepared,
        layer: &Layer,
        op: impl Fn(usize, usize) -> i32,
        mut out: Option<&mut [u16]>,
        stride: usize,
        sink: &mut dyn FnMut(usize, usize, i16),
    ) {
        let mut g = 0;
        while g + 2 <= layer.groups {
            // SAFETY: the contract, passed on; groups `g` and `g + 1` exist.
            unsafe { groups2::<2>(prep, layer, g, &op, out.as_deref_mut(), stride, sink) };
            g += 2;
        }
        if g < layer.groups {
            // SAFETY: as above; group `g` exists.
            unsafe { groups2::<1>(prep, layer, g, &op, out, stride, sink) };
        }
    }
}

/// The blocks of [`ROWS`] rows of a pass, layer after layer: `ops[w · count + r]` is row
/// `r`'s input operand word `w` (the first layer's); each hidden layer's operands go to one
/// of two buffers, each row padded to whole groups and a word beyond, which the next layer
/// reads. Rows beyond the batch repeat its last row, their codes dropped.
///
/// # Safety
/// The processor must have `P`'s features, and this inlined into code compiled for them;
/// `ops` must hold the first layer's `quads · count` words.
#[inline(always)]
unsafe fn blocks<P: Pass>(prep: &Prepared, ops: &[u32], count: usize, sink: &mut impl FnMut(usize, usize, i16)) {
    let stride = prep.layers.iter().map(|l| l.groups * P::LANES).max().unwrap_or(0) + P::PER_WORD;
    let mut buffers = std::vec![P::Elem::default(); 2 * ROWS * stride];
    let (mut cur, mut next) = buffers.split_at_mut(ROWS * stride);
    let last = prep.layers.len().saturating_sub(1);
    let mut r0 = 0;
    while r0 < count {
        let live = (count - r0).min(ROWS);
        let rows: [usize; ROWS] = core::array::from_fn(|r| r0 + r.min(live - 1));
        let mut keep = |r: usize, k: usize, q: i16| {
            if r < live {
                sink(r0 + r, k, q);
            }
        };
        for (l, layer) in prep.layers.iter().enumerate() {
            let out = if l == last { None } else { Some(&mut *next) };
            if l == 0 {
                // SAFETY: `w < first.quads` and `rows[r] < count`: inside `ops` (the
                // contract).
                let op = |r: usize, w: usize| unsafe { *ops.get_unchecked(w * count + rows[r]) } as i32;
                // SAFETY: the contract, passed on.
                unsafe { P::layer(prep, layer, op, out, stride, &mut keep) };
            } else {
                let cur = &*cur;
                // SAFETY: `r < ROWS` and `w < quads`, so the word's last operand is at
                // `PER_WORD · (w + 1) <= groups · LANES + PER_WORD <= stride` of the
                // previous layer's width (`fan_in = fan_out` of the one before): inside
                // `cur`, an unaligned read.
                let op = |r: usize, w: usize| unsafe {
                    core::ptr::read_unaligned(cur.as_ptr().add(r * stride + P::PER_WORD * w).cast::<i32>())
                };
                // SAFETY: the contract, passed on.
                unsafe { P::layer(prep, layer, op, out, stride, &mut keep) };
            }
            if l != last {
                core::mem::swap(&mut cur, &mut next);
            }
        }
        r0 += ROWS;
    }
}

/// Regroups the weights (one masked gather of sixteen quads, a scalar fill where a
/// channel's last quad is partial), the biases (the first layer's less its offsets) and
/// the requantisations.
///
/// # Safety
/// The processor must have AVX-512 F, BW, VL and VNNI (see [`kind`]), and `net`'s
/// slices must hold `dims`' weights and channels.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn prepare_vnni(net: &Net<'_>) -> Prepared {
    let mut layers = Vec::with_capacity(net.dims.len().saturating_sub(1));
    let (mut at, mut lane) = (0, 0);
    for (l, pair) in net.dims.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let (groups, quads) = (fan_out.div_ceil(16), fan_in.div_ceil(4));
        layers.push(Layer { fan_in, fan_out, groups, quads, at, lane, zero: i32::from(net.zeros[l + 1]) });
        at += groups * quads * 16;
        lane += groups * 16;
    }
    let mut quads = std::vec![0i32; at];
    let mut params = std::vec![0u32; lane * 6];
    // Where parameter `p` of lane `lane` is.
    let slot = |lane: usize, p: usize| (lane / 16 * 6 + p) * 16 + lane % 16;
    let (mut w, mut channel) = (0usize, 0usize);
    for (l, layer) in layers.iter().enumerate() {
        let whole = layer.fan_in / 4;
        for g in 0..layer.groups {
            let live = layer.fan_out.saturating_sub(16 * g).min(16);
            let mask: __mmask16 = ((1u32 << live) - 1) as __mmask16;
            // Byte offsets of each live lane's channel row.
            let rows: [i32; 16] =
                core::array::from_fn(|c| (w + (16 * g + c).min(layer.fan_out.saturating_sub(1)) * layer.fan_in) as i32);
            // SAFETY: AVX-512F is present (the contract); `rows` holds 16 `i32`.
            let base = unsafe { _mm512_loadu_si512(rows.as_ptr().cast()) };
            for q in 0..whole {
                // SAFETY: each live lane reads the 4 bytes of its channel's quad `q`
                // (`4q + 4 <= fan_in`) inside the layer's weights, inside `net.weights`
                // (the contract); masked-off lanes read nothing. The offsets fit an `i32`
                // (see `available`).
                let v = unsafe {
                    _mm512_mask_i32gather_epi32::<1>(
                        _mm512_setzero_si512(),
                        mask,
                        _mm512_add_epi32(base, _mm512_set1_epi32((4 * q) as i32)),
                        net.weights.as_ptr().cast(),
                    )
                };
                let at = layer.at + (g * layer.quads + q) * 16;
                // SAFETY: `quads[at..at + 16]` is inside the vector (sized above).
                unsafe { _mm512_storeu_si512(quads.as_mut_ptr().add(at).cast(), v) };
            }
            if whole < layer.quads {
                for c in 0..live {
                    let row = &net.weights[w + (16 * g + c) * layer.fan_in..][..layer.fan_in];
                    let mut bytes = [0u8; 4];
                    for (b, &v) in bytes.iter_mut().zip(&row[4 * whole..]) {
                        *b = v as u8;
                    }
                    quads[layer.at + (g * layer.quads + whole) * 16 + c] = i32::from_le_bytes(bytes);
                }
            }
            for c in 0..live {
                let k = channel + 16 * g + c;
                let at = layer.lane + 16 * g + c;
                params[slot(at, 0)] = net.biases[k] as u32;
                for (p, &v) in net.req[k].iter().enumerate() {
                    params[slot(at, p + 1)] = v;
                }
            }
        }
        if l == 0 {
            // The first layer's offsets `(z + 128) · Σ w`, each channel's sum of weights
            // from its regrouped quads (times the operand 1 in every byte).
            let offset = i32::from(net.zeros[0]) + 128;
            for g in 0..layer.groups {
                // SAFETY: AVX-512 F and VNNI are present; every quad read is inside
                // `quads` (the layer's `groups · quads · 16`), and the group's 16 biases
                // inside `params`.
                unsafe {
                    let mut sum = _mm512_setzero_si512();
                    for q in 0..layer.quads {
                        let v = _mm512_loadu_si512(quads.as_ptr().add(layer.at + (g * layer.quads + q) * 16).cast());
                        sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8(1), v);
                    }
                    let b = params.as_mut_ptr().add(slot(layer.lane + 16 * g, 0));
                    let adjusted = _mm512_sub_epi32(
                        _mm512_loadu_si512(b.cast()),
                        _mm512_mullo_epi32(sum, _mm512_set1_epi32(offset)),
                    );
                    _mm512_storeu_si512(b.cast(), adjusted);
                }
            }
        }
        w += layer.fan_in * layer.fan_out;
        channel += layer.fan_out;
    }
    Prepared { kind: Kind::Vnni, input_zero: net.zeros[0], layers, quads, params }
}

/// The high words of the lanes' 32 x 32-bit products.
///
/// # Safety
/// AVX-512F must be present, and this inlined into code compiled for it.
#[inline(always)]
unsafe fn mul_high(a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: AVX-512F is present (the callers' contract).
    unsafe {
        let even = _mm512_srli_epi64::<32>(_mm512_mul_epu32(a, b));
        let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(b));
        _mm512_mask_blend_epi32(0xAAAA, even, odd)
    }
}

/// `quant::Requant::magnitude` of sixteen lanes, `p` the parameters by lane.
///
/// # Safety
/// AVX-512F must be present, and this inlined into code compiled for it.
#[inline(always)]
unsafe fn magnitude(u: __m512i, p: &[__m512i; 5]) -> __m512i {
    // SAFETY: AVX-512F is present (the callers' contract).
    unsafe {
        let capped = _mm512_sllv_epi32(_mm512_min_epu32(u, p[0]), p[1]);
        _mm512_srlv_epi32(_mm512_add_epi32(mul_high(capped, p[2]), p[3]), p[4])
    }
}

/// [`rows`] with AVX-512 VNNI.
///
/// # Safety
/// The processor must have AVX-512 F, BW, VL and VNNI ([`kind`]); `codes` must hold
/// at least `FEATURES · count` codes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn rows_vnni(prep: &Prepared, codes: &[i8], count: usize, mut sink: impl FnMut(usize, usize, i16)) {
    let Some(first) = prep.layers.first() else { return };
    if count == 0 {
        return;
    }
    let f = first.fan_in;
    // The input operands, quad after quad, row after row: `ops[q · count + r]`, the bytes
    // of inputs `4q .. 4q + 4` (0 beyond the last input).
    let mut ops = std::vec![0u32; first.quads * count];
    let none = std::vec![0i8; count];
    for (q, chunk) in ops.chunks_exact_mut(count).enumerate() {
        let input = |j: usize| {
            let i = 4 * q + j;
            if i < f {
                (&codes[i * count..(i + 1) * count], 128u8)
            } else {
                (&none[..], 0)
            }
        };
        let [(c0, o0), (c1, o1), (c2, o2), (c3, o3)] = [input(0), input(1), input(2), input(3)];
        let byte = |c: i8, offset: u8| u32::from((c as u8).wrapping_add(offset));
        for (o, (((&a, &b), &c), &d)) in chunk.iter_mut().zip(c0.iter().zip(c1).zip(c2).zip(c3)) {
            *o = byte(a, o0) | byte(b, o1) << 8 | byte(c, o2) << 16 | byte(d, o3) << 24;
        }
    }
    // SAFETY: the contract (AVX-512 F, BW, VL and VNNI present); `ops` holds
    // `first.quads · count` words.
    unsafe { blocks::<Vnni>(prep, &ops, count, &mut sink) }
}

/// Groups `g0 .. g0 + G` of a layer of the VNNI pass ([`Vnni`]'s [`Pass::layer`]).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI must be present, and this inlined into code compiled for
/// them; the groups must exist; `op` must read inside its operands.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn groups<const G: usize>(
    prep: &Prepared,
    layer: &Layer,
    g0: usize,
    op: &impl Fn(usize, usize) -> i32,
    mut out: Option<&mut [u8]>,
    stride: usize,
    sink: &mut dyn FnMut(usize, usize, i16),
) {
    let params: [&[u32]; G] = core::array::from_fn(|k| &prep.params[(layer.lane / 16 + g0 + k) * 96..][..96]);
    let quads: [&[i32]; G] =
        core::array::from_fn(|k| &prep.quads[layer.at + (g0 + k) * layer.quads * 16..][..layer.quads * 16]);
    // SAFETY: AVX-512F is present (the contract); each `params[k]` holds its group's six
    // vectors of 16 lanes.
    let mut acc: [[__m512i; G]; ROWS] =
        [core::array::from_fn(|k| unsafe { _mm512_loadu_si512(params[k].as_ptr().cast()) }); ROWS];
    for q in 0..layer.quads {
        // SAFETY: each `quads[k]` holds its group's `quads · 16` values; AVX-512 F and VNNI
        // are present.
        unsafe {
            let w: [__m512i; G] = core::array::from_fn(|k| _mm512_loadu_si512(quads[k].as_ptr().add(q * 16).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(op(r, q));
                for (sum, &w) in row.iter_mut().zip(&w) {
                    *sum = _mm512_dpbusd_epi32(*sum, a, w);
                }
            }
        }
    }
    for k in 0..G {
        let g = g0 + k;
        // SAFETY: AVX-512F is present; `params[k]` holds six vectors.
        let p: [__m512i; 5] =
            core::array::from_fn(|j| unsafe { _mm512_loadu_si512(params[k].as_ptr().add(16 * (j + 1)).cast()) });
        let live = layer.fan_out.saturating_sub(16 * g).min(16);
        for (r, row) in acc.iter().enumerate() {
            let a = row[k];
            // SAFETY: AVX-512 F, BW and VL are present; the store is inside `out`'s row
            // `r` (`stride` bytes, more than the layer's `groups · 16`) or `codes`.
            unsafe {
                let zero = _mm512_setzero_si512();
                match out.as_deref_mut() {
                    Some(out) => {
                        let h = magnitude(_mm512_max_epi32(a, zero), &p);
                        let h = _mm512_min_epu32(h, _mm512_set1_epi32(127 - layer.zero));
                        let dst = &mut out[r * stride + 16 * g..][..16];
                        _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(h));
                    }
                    None => {
                        let m = magnitude(_mm512_abs_epi32(a), &p);
                        let z = _mm512_set1_epi32(layer.zero);
                        let negative = _mm512_cmplt_epi32_mask(a, zero);
                        let y = _mm512_mask_blend_epi32(negative, _mm512_add_epi32(z, m), _mm512_sub_epi32(z, m));
                        let y =
                            _mm512_max_epi32(_mm512_min_epi32(y, _mm512_set1_epi32(32767)), _mm512_set1_epi32(-32768));
                        let mut codes = [0i32; 16];
                        _mm512_storeu_si512(codes.as_mut_ptr().cast(), y);
                        for (c, &v) in codes.iter().enumerate().take(live) {
                            sink(r, 16 * g + c, v as i16);
                        }
                    }
                }
            }
        }
    }
}

// ---- The AVX2 pass ([`Kind::Avx2`]): the same scheme on eight lanes. A lane holds a pair
// of consecutive weights of its channel as two 16-bit halves; one `vpmaddwd` multiplies a
// row's pair of operands (16-bit, broadcast to every lane) with the pairs of eight channels
// and adds the two products of each lane into 32 bits (exact: |2 · 255 · 127| < 2^31), and
// `vpaddd` adds that into the channel's sum. The operands are signed: an input's is its code
// minus its zero point (`-255..=255`), so the first layer's biases need no offset; a hidden
// unit's is its code minus its zero point, as in the VNNI pass. `Layer::quads` counts
// pairs here, and `Prepared::quads` holds the pairs; `params` holds six vectors of eight
// lanes a group.

/// Lanes of an AVX2 group.
const LANES2: usize = 8;

/// Regroups the weights into pairs of eight channels, the biases and the requantisations
/// for the AVX2 pass (plain loops: once per model).
fn prepare_avx2(net: &Net<'_>) -> Prepared {
    let mut layers = Vec::with_capacity(net.dims.len().saturating_sub(1));
    let (mut at, mut lane) = (0, 0);
    for (l, pair) in net.dims.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let (groups, pairs) = (fan_out.div_ceil(LANES2), fan_in.div_ceil(2));
        layers.push(Layer { fan_in, fan_out, groups, quads: pairs, at, lane, zero: i32::from(net.zeros[l + 1]) });
        at += groups * pairs * LANES2;
        lane += groups * LANES2;
    }
    let mut quads = std::vec![0i32; at];
    let mut params = std::vec![0u32; lane * 6];
    let slot = |lane: usize, p: usize| (lane / LANES2 * 6 + p) * LANES2 + lane % LANES2;
    let (mut w, mut channel) = (0usize, 0usize);
    for layer in &layers {
        for o in 0..layer.fan_out {
            let row = &net.weights[w + o * layer.fan_in..][..layer.fan_in];
            let (g, c) = (o / LANES2, o % LANES2);
            for (p, two) in row.chunks(2).enumerate() {
                let lo = two[0] as i16 as u16 as u32;
                let hi = two.get(1).map_or(0, |&v| v as i16 as u16 as u32);
                quads[layer.at + (g * layer.quads + p) * LANES2 + c] = (lo | hi << 16) as i32;
            }
            let at = layer.lane + o;
            params[slot(at, 0)] = net.biases[channel + o] as u32;
            for (p, &v) in net.req[channel + o].iter().enumerate() {
                params[slot(at, p + 1)] = v;
            }
        }
        w += layer.fan_in * layer.fan_out;
        channel += layer.fan_out;
    }
    Prepared { kind: Kind::Avx2, input_zero: net.zeros[0], layers, quads, params }
}

/// The high words of the lanes' 32 x 32-bit products (eight lanes).
///
/// # Safety
/// AVX2 must be present, and this inlined into code compiled for it.
#[inline(always)]
unsafe fn mul_high2(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: AVX2 is present (the callers' contract).
    unsafe {
        let even = _mm256_srli_epi64::<32>(_mm256_mul_epu32(a, b));
        let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(b));
        _mm256_blend_epi32::<0xAA>(even, odd)
    }
}

/// `quant::Requant::magnitude` of eight lanes, `p` the parameters by lane.
///
/// # Safety
/// AVX2 must be present, and this inlined into code compiled for it.
#[inline(always)]
unsafe fn magnitude2(u: __m256i, p: &[__m256i; 5]) -> __m256i {
    // SAFETY: AVX2 is present (the callers' contract).
    unsafe {
        let capped = _mm256_sllv_epi32(_mm256_min_epu32(u, p[0]), p[1]);
        _mm256_srlv_epi32(_mm256_add_epi32(mul_high2(capped, p[2]), p[3]), p[4])
    }
}

/// [`rows`] with AVX2.
///
/// # Safety
/// The processor must have AVX2; `codes` must hold at least `FEATURES · count` codes.
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(prep: &Prepared, codes: &[i8], count: usize, mut sink: impl FnMut(usize, usize, i16)) {
    let Some(first) = prep.layers.first() else { return };
    if count == 0 {
        return;
    }
    let f = first.fan_in;
    let z_in = i32::from(prep.input_zero);
    // The input operands, pair after pair, row after row: `ops[p · count + r]`, inputs
    // `2p` and `2p + 1` minus the zero point as 16-bit halves (0 beyond the last input).
    let mut ops = std::vec![0u32; first.quads * count];
    let half = |c: i8| (i32::from(c) - z_in) as i16 as u16 as u32;
    for (p, chunk) in ops.chunks_exact_mut(count).enumerate() {
        let lo = &codes[2 * p * count..][..count];
        if 2 * p + 1 < f {
            let hi = &codes[(2 * p + 1) * count..][..count];
            for (o, (&a, &b)) in chunk.iter_mut().zip(lo.iter().zip(hi)) {
                *o = half(a) | half(b) << 16;
            }
        } else {
            for (o, &a) in chunk.iter_mut().zip(lo) {
                *o = half(a);
            }
        }
    }
    // SAFETY: the contract (AVX2 present); `ops` holds `first.quads · count` words.
    unsafe { blocks::<Avx2>(prep, &ops, count, &mut sink) }
}

/// Groups `g0 .. g0 + G` of a layer of the AVX2 pass ([`Avx2`]'s [`Pass::layer`]).
///
/// # Safety
/// AVX2 must be present, and this inlined into code compiled for it; the groups must
/// exist; `op` must read inside its operands.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn groups2<const G: usize>(
    prep: &Prepared,
    layer: &Layer,
    g0: usize,
    op: &impl Fn(usize, usize) -> i32,
    mut out: Option<&mut [u16]>,
    stride: usize,
    sink: &mut dyn FnMut(usize, usize, i16),
) {
    let per = 6 * LANES2;
    let params: [&[u32]; G] = core::array::from_fn(|k| &prep.params[(layer.lane / LANES2 + g0 + k) * per..][..per]);
    let pairs: [&[i32]; G] =
        core::array::from_fn(|k| &prep.quads[layer.at + (g0 + k) * layer.quads * LANES2..][..layer.quads * LANES2]);
    // SAFETY: AVX2 is present (the contract); each `params[k]` holds its group's six
    // vectors of eight lanes.
    let mut acc: [[__m256i; G]; ROWS] =
        [core::array::from_fn(|k| unsafe { _mm256_loadu_si256(params[k].as_ptr().cast()) }); ROWS];
    for p in 0..layer.quads {
        // SAFETY: each `pairs[k]` holds its group's `quads · 8` values; AVX2 is present.
        unsafe {
            let w: [__m256i; G] =
                core::array::from_fn(|k| _mm256_loadu_si256(pairs[k].as_ptr().add(p * LANES2).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_epi32(op(r, p));
                for (sum, &w) in row.iter_mut().zip(&w) {
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(a, w));
                }
            }
        }
    }
    for k in 0..G {
        let g = g0 + k;
        // SAFETY: AVX2 is present; `params[k]` holds six vectors.
        let p: [__m256i; 5] =
            core::array::from_fn(|j| unsafe { _mm256_loadu_si256(params[k].as_ptr().add(LANES2 * (j + 1)).cast()) });
        let live = layer.fan_out.saturating_sub(LANES2 * g).min(LANES2);
        for (r, row) in acc.iter().enumerate() {
            let a = row[k];
            let mut codes = [0i32; LANES2];
            // SAFETY: AVX2 is present; `codes` holds eight `i32` (an unaligned store).
            unsafe {
                let zero = _mm256_setzero_si256();
                match out {
                    Some(_) => {
                        let h = magnitude2(_mm256_max_epi32(a, zero), &p);
                        let h = _mm256_min_epu32(h, _mm256_set1_epi32(127 - layer.zero));
                        _mm256_storeu_si256(codes.as_mut_ptr().cast(), h);
                    }
                    None => {
                        let m = magnitude2(_mm256_abs_epi32(a), &p);
                        let z = _mm256_set1_epi32(layer.zero);
                        let negative = _mm256_cmpgt_epi32(zero, a);
                        let y = _mm256_blendv_epi8(_mm256_add_epi32(z, m), _mm256_sub_epi32(z, m), negative);
                        let y =
                            _mm256_max_epi32(_mm256_min_epi32(y, _mm256_set1_epi32(32767)), _mm256_set1_epi32(-32768));
                        _mm256_storeu_si256(codes.as_mut_ptr().cast(), y);
                    }
                }
            }
            match out.as_deref_mut() {
                // A padded lane's code is 0, and stored: the next layer's pairs read it
                // (times a zero weight).
                Some(out) => {
                    for (dst, &v) in out[r * stride + LANES2 * g..][..LANES2].iter_mut().zip(&codes) {
                        *dst = v as u16;
                    }
                }
                None => {
                    for (c, &v) in codes.iter().enumerate().take(live) {
                        sink(r, LANES2 * g + c, v as i16);
                    }
                }
            }
        }
    }
}
