//! The optimizers' update rules, written once: plain SGD, SGD with momentum (optionally
//! Nesterov's), Adam and AdamW, exactly as `torch.optim` defines them (PyTorch 2's
//! single-tensor implementations), in `f32` with no allocation and no standard library.
//!
//! A model declares its optimizer (`optimizer: sgd | momentum | adam | adamw` in
//! [`model!`](macro@crate::model), `sgd` by default); its hyperparameters are one of the structs
//! here ([`Sgd`], [`Momentum`], [`Adam`], [`AdamW`]), set at run time with
//! `set_optimizer`. Each learning rate a step is given (`train_step(&x, &y, lr)`) replaces
//! the struct's `lr` for that step.
//!
//! Per parameter `p` with gradient `g` (every parameter, biases included), at step
//! `t = 1, 2, ...`:
//!
//! | optimizer | update |
//! | --- | --- |
//! | [`Sgd`] | `g += wd·p`; `p -= lr·g` |
//! | [`Momentum`] | `g += wd·p`; `b = g` at `t = 1`, else `b = μ·b + g`; `g = g + μ·b` (Nesterov) or `g = b`; `p -= lr·g` |
//! | [`Adam`] | `g += wd·p`; `m = lerp(m, g, 1 - β1)`; `v = β2·v + (1 - β2)·g²`; `p -= (lr / (1 - β1^t)) · m / (√v / √(1 - β2^t) + ε)` |
//! | [`AdamW`] | `p *= 1 - lr·wd`; then Adam's update without the `wd·p` term |
//!
//! `lerp(m, g, w)` is PyTorch's: `m + w·(g - m)` for `w < 0.5`, else `g - (g - m)·(1 - w)`.
//! Everything is `f32`, the step's scalars (`lr / (1 - β1^t)`, `√(1 - β2^t)`) included,
//! which PyTorch computes in Python floats (`f64`): a single-precision FPU runs it all, and
//! no software `f64` is linked on a microcontroller; they differ from PyTorch's by an ulp or
//! two of the scalar, far below the gradients' own rounding. The state is `f32` whatever the storage: momentum's buffer `b`, Adam's `m`
//! (`exp_avg`) and `v` (`exp_avg_sq`), and the step count `t`.
//!
//! The OpenCL kernels take the same formulas as C text ([`write_opencl`]: each optimizer's
//! [`Optimizer::OPENCL_COEFFS`] and [`Optimizer::OPENCL_UPDATE`], emitted into the
//! kernels' prelude), and keep the state in a device buffer; an optimizer added here runs
//! there without a change to the kernels or the OpenCL backend. The kernels compute the
//! step's scalars from the step count on the device (a refused step does not advance it),
//! so their division and square root follow the device's OpenCL rounding: the results
//! agree with the CPU's within an ulp or two per step, not bit for bit.

/// The optimizer a model declares, and its hyperparameters: [`Sgd`], [`Momentum`],
/// [`Adam`] or [`AdamW`]. Sealed: the CPU core and the checkpoints rely on the four.
pub trait Optimizer: Copy + Default + core::fmt::Debug + PartialEq + Send + Sync + sealed::Sealed + 'static {
    /// The name as declared (`sgd`, `momentum`, `adam`, `adamw`).
    const NAME: &'static str;
    /// Moment buffers per parameter: 0 (SGD), 1 (momentum) or 2 (Adam, AdamW).
    const MOMENTS: usize;
    /// The names of the moment buffers, as `torch.optim` names them in its state
    /// (`momentum_buffer`; `exp_avg`, `exp_avg_sq`); [`Optimizer::MOMENTS`] of them.
    const MOMENT_NAMES: &'static [&'static str];

    /// The learning rate.
    fn lr(&self) -> f32;
    /// The same hyperparameters with learning rate `lr`.
    fn with_lr(self, lr: f32) -> Self;
    /// The first hyperparameter out of its range, with its name, or `None` if all are
    /// valid (as `torch.optim` checks them, and each finite).
    fn invalid(&self) -> Option<(&'static str, f32)>;
    /// Plain SGD without weight decay: `p -= lr·g`, the update the CPU core may fuse into
    /// its products.
    fn is_plain_sgd(&self) -> bool {
        false
    }
    /// The per-step scalars of step `t` (1 for the first step).
    fn coeffs(&self, t: u32) -> Coeffs;
    /// One parameter's update: `(p, m, v)` after the step from `p`, its gradient `g` and
    /// its moments `m`, `v` (those an optimizer does not keep are passed as 0 and returned
    /// unchanged).
    fn update(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32);
    /// [`Optimizer::update`] with the same bits, for code compiled with fused
    /// multiply-adds (the CPU backend's AVX2 and AVX-512 parts): Adam's divides by its bias
    /// correction with [`div_fma`]. By default the update itself.
    #[cfg(feature = "std")]
    #[inline(always)]
    fn update_fma(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        Self::update(c, p, g, m, v)
    }
    /// `(b, m, v)`: an upper bound `b >= |p|` of the new parameter's magnitude `p` of
    /// [`Optimizer::update`] whenever the new moments `m`, `v` (which it returns exactly) are
    /// finite, computed without a division or a square root where the update has them (see
    /// [`first_refused`], which tries it first). By default the update itself.
    #[inline(always)]
    fn bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let (p, m, v) = Self::update(c, p, g, m, v);
        (p.abs(), m, v)
    }
    /// `[p, m, v]`: upper bounds of the magnitudes of every new parameter (before its
    /// rounding to the storage) and new moment of a step whose parameters, gradients and
    /// moments are at most `p`, `g`, `m` and `v` in magnitude (see [`proven`]), or
    /// infinite or NaN where it has none. It is the update's own formula on those
    /// magnitudes, every subtraction an addition and every factor's magnitude taken: the
    /// rounding to nearest is monotone and symmetric, so each rounded operation on larger
    /// magnitudes gives a magnitude at least as large, and a finite result means that no
    /// intermediate of the exact update overflowed either. By default none (an optimizer
    /// added without it is checked value by value).
    #[inline(always)]
    fn step_bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> [f32; 3] {
        let _ = (c, p, g, m, v);
        [f32::INFINITY; 3]
    }
    /// The hyperparameters as the OpenCL kernels take them (a `float8`, in the order
    /// [`Optimizer::OPENCL_COEFFS`]' `tb_opt_coeffs` reads them; the learning rate first, unused
    /// slots 0).
    fn opencl_hyper(&self) -> [f32; 8];
    /// The OpenCL C text of [`Optimizer::coeffs`], the same formulas in the same order:
    /// `tb_coeffs tb_opt_coeffs(const float8 h, const uint t)` from
    /// [`Optimizer::opencl_hyper`]'s values. [`write_opencl`] emits it into the kernels'
    /// prelude.
    const OPENCL_COEFFS: &'static str;
    /// The OpenCL C text of [`Optimizer::update`], the same formulas in the same order:
    /// `TB_T tb_opt_updateTB_S(const tb_coeffs c, const TB_T p, const TB_T g, TB_T *m, TB_T
    /// *v)`, which returns the new `p` and updates the moments in place. [`write_opencl`]
    /// emits it twice, with `TB_T` `float` (`TB_S` empty) and `float16` (`TB_S` `16`).
    const OPENCL_UPDATE: &'static str;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Sgd {}
    impl Sealed for super::Momentum {}
    impl Sealed for super::Adam {}
    impl Sealed for super::AdamW {}
}

/// The scalars of one step, computed once per step from the hyperparameters and the step
/// count ([`Optimizer::coeffs`]). Fields an optimizer does not use are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Coeffs {
    /// The learning rate.
    pub lr: f32,
    /// The L2 weight decay added to the gradient (0 for AdamW, whose decay is `decay`).
    pub weight_decay: f32,
    /// Momentum's `μ`.
    pub momentum: f32,
    /// 1 for Nesterov momentum, else 0.
    pub nesterov: f32,
    /// 1 at the first step (momentum's buffer starts as the gradient), else 0.
    pub first: f32,
    /// Adam's `1 - β1` (the lerp weight), `β2` and `1 - β2`.
    pub one_minus_beta1: f32,
    /// Adam's `β2`.
    pub beta2: f32,
    /// Adam's `1 - β2`.
    pub one_minus_beta2: f32,
    /// Adam's `ε`.
    pub eps: f32,
    /// Adam's step size `lr / (1 - β1^t)`.
    pub step_size: f32,
    /// Adam's `√(1 - β2^t)`.
    pub bias2_sqrt: f32,
    /// AdamW's factor `1 - lr·wd` (1 for the others).
    pub decay: f32,
    /// Adam's upper bound of `1 / ε` (infinite for `ε = 0`), for [`Optimizer::bound`].
    pub inv_eps_up: f32,
    /// Adam's `1 / √(1 - β2^t)`, rounded to nearest: with it, [`div_fma`] divides by
    /// `bias2_sqrt` with fused multiply-adds, to the same bits.
    pub inv_bias2_sqrt: f32,
}

/// Stochastic gradient descent (`torch.optim.SGD` with `momentum = 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate (PyTorch's default: 0.001).
    pub lr: f32,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f32,
}

/// SGD with momentum (`torch.optim.SGD` with `momentum > 0`, dampening 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Momentum {
    /// Learning rate (default 0.001).
    pub lr: f32,
    /// Momentum factor `μ` (default 0, PyTorch's, which makes the update plain SGD's;
    /// 0.9 is the usual choice).
    pub momentum: f32,
    /// Nesterov momentum (default `false`).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f32,
}

/// Adam (`torch.optim.Adam`, `amsgrad = false`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate (default 0.001).
    pub lr: f32,
    /// Decay of the first moment (default 0.9).
    pub beta1: f32,
    /// Decay of the second moment (default 0.999).
    pub beta2: f32,
    /// Added to the denominator, outside the square root (default 1e-8).
    pub eps: f32,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f32,
}

/// AdamW (`torch.optim.AdamW`): Adam with decoupled weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// Learning rate (default 0.001).
    pub lr: f32,
    /// Decay of the first moment (default 0.9).
    pub beta1: f32,
    /// Decay of the second moment (default 0.999).
    pub beta2: f32,
    /// Added to the denominator, outside the square root (default 1e-8).
    pub eps: f32,
    /// Decoupled weight decay: `p *= 1 - lr·weight_decay` before the step (default 0.01).
    pub weight_decay: f32,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd { lr: 1e-3, weight_decay: 0.0 }
    }
}

impl Default for Momentum {
    fn default() -> Self {
        Momentum { lr: 1e-3, momentum: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

impl Default for Adam {
    fn default() -> Self {
        Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// The first of `checks` whose value is not finite or fails its condition.
fn first_invalid(checks: &[(&'static str, f32, bool)]) -> Option<(&'static str, f32)> {
    checks.iter().find(|(_, v, ok)| !(v.is_finite() && *ok)).map(|(name, v, _)| (*name, *v))
}

/// Where [`one_minus_pow`] stops multiplying: 2^-25.
const NEGLIGIBLE: f32 = 1.0 / (1u32 << 25) as f32;

/// `1 - b^t` for `b` in `[0, 1)`, `b^t` by squaring in `f32` (no `std`, no `f64`): within
/// a few ulps of `pow` for the step counts of a training run. Once a factor falls below
/// 2^-25, `1 - b^t` is 1 exactly in `f32` (every later factor is at most 1): the result is
/// returned then, before the squares reach subnormal numbers, which x86 multiplies ~100x
/// slower (at 0.999, after some 17,000 steps).
fn one_minus_pow(b: f32, mut t: u32) -> f32 {
    let (mut acc, mut base) = (1.0f32, b);
    loop {
        if t & 1 == 1 {
            acc *= base;
            if acc < NEGLIGIBLE {
                return 1.0;
            }
        }
        t >>= 1;
        if t == 0 {
            return 1.0 - acc;
        }
        base *= base;
        if base < NEGLIGIBLE {
            return 1.0;
        }
    }
}

/// Adam's and AdamW's step scalars: `lr / (1 - β1^t)` and `√(1 - β2^t)`.
fn adam_coeffs(lr: f32, beta1: f32, beta2: f32, eps: f32, t: u32) -> Coeffs {
    let bias1 = one_minus_pow(beta1, t);
    let bias2 = one_minus_pow(beta2, t);
    Coeffs {
        lr,
        one_minus_beta1: 1.0 - beta1,
        beta2,
        one_minus_beta2: 1.0 - beta2,
        eps,
        step_size: lr / bias1,
        bias2_sqrt: sqrt(bias2),
        decay: 1.0,
        // `1 / ε` is within half an ulp (2^-24 relative) of the real quotient; raised by
        // 2^-20 (rounded, again within 2^-24), it is above it: (1 + 2^-20)(1 - 2^-24)² > 1.
        inv_eps_up: (1.0 / eps) * (1.0 + 1.0 / (1u32 << 20) as f32),
        inv_bias2_sqrt: 1.0 / sqrt(bias2),
        ..Coeffs::default()
    }
}

/// The square root, correctly rounded (the same bits everywhere): with `std`, `f32::sqrt`,
/// which LLVM vectorises (a loop of [`apply`] runs `sqrtps`); without it, the FPU's
/// instruction where there is one ([`super::sqrt`]).
#[inline(always)]
fn sqrt(x: f32) -> f32 {
    #[cfg(feature = "std")]
    return x.sqrt();
    #[cfg(not(feature = "std"))]
    super::sqrt(x)
}

/// Adam's new moments from a gradient that already includes any L2 term.
#[inline(always)]
fn adam_moments(c: &Coeffs, g: f32, m: f32, v: f32) -> (f32, f32) {
    // torch.lerp's two forms, chosen by the weight.
    let m =
        if c.one_minus_beta1 < 0.5 { m + c.one_minus_beta1 * (g - m) } else { g - (g - m) * (1.0 - c.one_minus_beta1) };
    (m, v * c.beta2 + c.one_minus_beta2 * (g * g))
}

/// Adam's moments and update from a gradient that already includes any L2 term.
#[inline(always)]
fn adam_update(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
    adam_update_by(c, p, g, m, v, |s| s / c.bias2_sqrt)
}

/// [`adam_update`] with its division by `√(1 - β2^t)` as [`div_fma`]: the same bits.
#[cfg(feature = "std")]
#[inline(always)]
fn adam_update_fma(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
    adam_update_by(c, p, g, m, v, |s| div_fma(s, c.bias2_sqrt, c.inv_bias2_sqrt))
}

/// Adam's formula, `unbias(√v)` the division `√v / √(1 - β2^t)`.
#[inline(always)]
fn adam_update_by(c: &Coeffs, p: f32, g: f32, m: f32, v: f32, unbias: impl Fn(f32) -> f32) -> (f32, f32, f32) {
    let (m, v) = adam_moments(c, g, m, v);
    let denom = unbias(sqrt(v)) + c.eps;
    (p - c.step_size * (m / denom), m, v)
}

/// `a / d` rounded to nearest, from `y`, the reciprocal `1 / d` rounded to nearest, with a
/// multiplication and four fused multiply-adds instead of a division (which takes the
/// divider, the bottleneck of Adam's update on x86: two divisions and a square root a
/// parameter). `q0 = a·y` is within 1.5 ulps of `a / d`; one correction `q1 = q0 + (a -
/// d·q0)·y` makes it faithful (within an ulp); the second is Markstein's theorem: with `y`
/// within half an ulp of `1 / d` and `q1` faithful, `r = a - d·q1` is exact (an FMA) and
/// `q1 + r·y` rounds to `a / d` rounded to nearest. It holds for finite `a ≥ 0` and `d` in
/// `[2^-12, 1]` (Adam's `√v` and `√(1 - β2^t)`, `β2 < 1` in `f32`): no intermediate
/// overflows or leaves the normal range (`a = 0` gives 0). Scaling `a` by a power of two
/// scales every step exactly, so `tests::div_fma_is_the_division` checks every significand
/// of `a` against the division for each `d` it tries. Only where `f32::mul_add` is one
/// instruction (code compiled with FMA).
#[cfg(feature = "std")]
#[inline(always)]
pub fn div_fma(a: f32, d: f32, y: f32) -> f32 {
    let q0 = a * y;
    let q1 = (-q0).mul_add(d, a).mul_add(y, q0);
    (-q1).mul_add(d, a).mul_add(y, q1)
}

/// [`Optimizer::bound`] of [`adam_update`]: `|p| + step_size · |m| · inv_eps_up`, from the
/// same moments. It holds because every rounding is monotone and `step_size ≥ 0`: the
/// denominator `√v / √(1 - β2^t) + ε` rounds to at least `ε` (`v ≥ 0`), so `|m / denom|`
/// rounds to at most `|m| / ε`, which rounds to at most `|m| · inv_eps_up` (`inv_eps_up ≥
/// 1 / ε`); the product and the sum bound theirs likewise. For `ε = 0` it is infinite or
/// NaN: no bound, and [`first_refused`] computes the update.
#[inline(always)]
fn adam_bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
    let (m, v) = adam_moments(c, g, m, v);
    (p.abs() + c.step_size * (m.abs() * c.inv_eps_up), m, v)
}

/// [`Optimizer::step_bound`] of [`adam_update`] (the gradient's bound already includes any
/// L2 term): `lerp`'s two forms on the magnitudes (`1 - β1` and `β1` are in `[0, 1]`), `v`'s
/// update, and the parameter's as in [`adam_bound`] (the denominator is at least `ε`).
#[inline(always)]
fn adam_step_bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> [f32; 3] {
    let m =
        if c.one_minus_beta1 < 0.5 { m + c.one_minus_beta1 * (g + m) } else { g + (g + m) * (1.0 - c.one_minus_beta1) };
    [p + c.step_size * (m * c.inv_eps_up), m, v * c.beta2 + c.one_minus_beta2 * (g * g)]
}

impl Optimizer for Sgd {
    const NAME: &'static str = "sgd";
    const MOMENTS: usize = 0;
    const MOMENT_NAMES: &'static [&'static str] = &[];
    fn lr(&self) -> f32 {
        self.lr
    }
    fn with_lr(self, lr: f32) -> Self {
        Sgd { lr, ..self }
    }
    fn invalid(&self) -> Option<(&'static str, f32)> {
        first_invalid(&[("lr", self.lr, self.lr >= 0.0), ("weight_decay", self.weight_decay, self.weight_decay >= 0.0)])
    }
    fn is_plain_sgd(&self) -> bool {
        self.weight_decay == 0.0
    }
    fn coeffs(&self, _t: u32) -> Coeffs {
        Coeffs { lr: self.lr, weight_decay: self.weight_decay, decay: 1.0, ..Coeffs::default() }
    }
    #[inline(always)]
    fn update(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let g = g + c.weight_decay * p;
        (p - c.lr * g, m, v)
    }
    #[inline(always)]
    fn step_bound(c: &Coeffs, p: f32, g: f32, _m: f32, _v: f32) -> [f32; 3] {
        [p + c.lr * (g + c.weight_decay * p), 0.0, 0.0]
    }
    fn opencl_hyper(&self) -> [f32; 8] {
        [self.lr, self.weight_decay, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    }
    const OPENCL_COEFFS: &'static str = "\
inline tb_coeffs tb_opt_coeffs(const float8 h, const uint t) {
    tb_coeffs c = tb_coeffs_zero();
    c.lr = h.s0;
    c.weight_decay = h.s1;
    return c;
}
";
    const OPENCL_UPDATE: &'static str = "\
inline TB_T tb_opt_updateTB_S(const tb_coeffs c, const TB_T p, const TB_T g_in, TB_T *m, TB_T *v) {
    const TB_T g = g_in + c.weight_decay * p;
    return p - c.lr * g;
}
";
}

impl Optimizer for Momentum {
    const NAME: &'static str = "momentum";
    const MOMENTS: usize = 1;
    const MOMENT_NAMES: &'static [&'static str] = &["momentum_buffer"];
    fn lr(&self) -> f32 {
        self.lr
    }
    fn with_lr(self, lr: f32) -> Self {
        Momentum { lr, ..self }
    }
    fn invalid(&self) -> Option<(&'static str, f32)> {
        first_invalid(&[
            ("lr", self.lr, self.lr >= 0.0),
            ("momentum", self.momentum, self.momentum >= 0.0 && (!self.nesterov || self.momentum > 0.0)),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0.0),
        ])
    }
    fn coeffs(&self, t: u32) -> Coeffs {
        Coeffs {
            lr: self.lr,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            nesterov: if self.nesterov { 1.0 } else { 0.0 },
            first: if t <= 1 { 1.0 } else { 0.0 },
            decay: 1.0,
            ..Coeffs::default()
        }
    }
    #[inline(always)]
    fn update(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let g = g + c.weight_decay * p;
        // torch.optim.SGD clones the gradient into the buffer at the first step.
        let b = if c.first != 0.0 { g } else { c.momentum * m + g };
        let g = if c.nesterov != 0.0 { g + c.momentum * b } else { b };
        (p - c.lr * g, b, v)
    }
    #[inline(always)]
    fn step_bound(c: &Coeffs, p: f32, g: f32, m: f32, _v: f32) -> [f32; 3] {
        let g = g + c.weight_decay * p;
        let b = if c.first != 0.0 { g } else { c.momentum * m + g };
        let g = if c.nesterov != 0.0 { g + c.momentum * b } else { b };
        [p + c.lr * g, b, 0.0]
    }
    fn opencl_hyper(&self) -> [f32; 8] {
        let nesterov = if self.nesterov { 1.0 } else { 0.0 };
        [self.lr, self.momentum, nesterov, self.weight_decay, 0.0, 0.0, 0.0, 0.0]
    }
    const OPENCL_COEFFS: &'static str = "\
inline tb_coeffs tb_opt_coeffs(const float8 h, const uint t) {
    tb_coeffs c = tb_coeffs_zero();
    c.lr = h.s0;
    c.weight_decay = h.s3;
    c.momentum = h.s1;
    c.nesterov = h.s2;
    c.first = t <= 1u ? 1.0f : 0.0f;
    return c;
}
";
    const OPENCL_UPDATE: &'static str = "\
inline TB_T tb_opt_updateTB_S(const tb_coeffs c, const TB_T p, const TB_T g_in, TB_T *m, TB_T *v) {
    const TB_T g = g_in + c.weight_decay * p;
    const TB_T b = c.first != 0.0f ? g : c.momentum * *m + g;
    *m = b;
    return p - c.lr * (c.nesterov != 0.0f ? g + c.momentum * b : b);
}
";
}

impl Optimizer for Adam {
    const NAME: &'static str = "adam";
    const MOMENTS: usize = 2;
    const MOMENT_NAMES: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];
    fn lr(&self) -> f32 {
        self.lr
    }
    fn with_lr(self, lr: f32) -> Self {
        Adam { lr, ..self }
    }
    fn invalid(&self) -> Option<(&'static str, f32)> {
        adam_invalid(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
    }
    fn coeffs(&self, t: u32) -> Coeffs {
        Coeffs { weight_decay: self.weight_decay, ..adam_coeffs(self.lr, self.beta1, self.beta2, self.eps, t) }
    }
    #[inline(always)]
    fn update(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        adam_update(c, p, g + c.weight_decay * p, m, v)
    }
    #[cfg(feature = "std")]
    #[inline(always)]
    fn update_fma(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        adam_update_fma(c, p, g + c.weight_decay * p, m, v)
    }
    #[inline(always)]
    fn bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        adam_bound(c, p, g + c.weight_decay * p, m, v)
    }
    #[inline(always)]
    fn step_bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> [f32; 3] {
        adam_step_bound(c, p, g + c.weight_decay * p, m, v)
    }
    fn opencl_hyper(&self) -> [f32; 8] {
        [self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, 0.0, 0.0, 0.0]
    }
    const OPENCL_COEFFS: &'static str = "\
inline tb_coeffs tb_opt_coeffs(const float8 h, const uint t) {
    tb_coeffs c = tb_adam_coeffs(h.s0, h.s1, h.s2, h.s3, t);
    c.weight_decay = h.s4;
    return c;
}
";
    const OPENCL_UPDATE: &'static str = "\
inline TB_T tb_opt_updateTB_S(const tb_coeffs c, const TB_T p, const TB_T g, TB_T *m, TB_T *v) {
    return tb_adam_updateTB_S(c, p, g + c.weight_decay * p, m, v);
}
";
}

impl Optimizer for AdamW {
    const NAME: &'static str = "adamw";
    const MOMENTS: usize = 2;
    const MOMENT_NAMES: &'static [&'static str] = &["exp_avg", "exp_avg_sq"];
    fn lr(&self) -> f32 {
        self.lr
    }
    fn with_lr(self, lr: f32) -> Self {
        AdamW { lr, ..self }
    }
    fn invalid(&self) -> Option<(&'static str, f32)> {
        adam_invalid(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
    }
    fn coeffs(&self, t: u32) -> Coeffs {
        Coeffs { decay: 1.0 - self.lr * self.weight_decay, ..adam_coeffs(self.lr, self.beta1, self.beta2, self.eps, t) }
    }
    #[inline(always)]
    fn update(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        adam_update(c, p * c.decay, g, m, v)
    }
    #[cfg(feature = "std")]
    #[inline(always)]
    fn update_fma(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        adam_update_fma(c, p * c.decay, g, m, v)
    }
    #[inline(always)]
    fn bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        adam_bound(c, p * c.decay, g, m, v)
    }
    #[inline(always)]
    fn step_bound(c: &Coeffs, p: f32, g: f32, m: f32, v: f32) -> [f32; 3] {
        adam_step_bound(c, p * c.decay.abs(), g, m, v)
    }
    fn opencl_hyper(&self) -> [f32; 8] {
        [self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, 0.0, 0.0, 0.0]
    }
    const OPENCL_COEFFS: &'static str = "\
inline tb_coeffs tb_opt_coeffs(const float8 h, const uint t) {
    tb_coeffs c = tb_adam_coeffs(h.s0, h.s1, h.s2, h.s3, t);
    c.decay = 1.0f - h.s0 * h.s4;
    return c;
}
";
    const OPENCL_UPDATE: &'static str = "\
inline TB_T tb_opt_updateTB_S(const tb_coeffs c, const TB_T p, const TB_T g, TB_T *m, TB_T *v) {
    return tb_adam_updateTB_S(c, p * c.decay, g, m, v);
}
";
}

/// Adam's and AdamW's ranges, as `torch.optim.Adam` checks them.
fn adam_invalid(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Option<(&'static str, f32)> {
    first_invalid(&[
        ("lr", lr, lr >= 0.0),
        ("beta1", beta1, (0.0..1.0).contains(&beta1)),
        ("beta2", beta2, (0.0..1.0).contains(&beta2)),
        ("eps", eps, eps >= 0.0),
        ("weight_decay", weight_decay, weight_decay >= 0.0),
    ])
}

/// The largest magnitudes of a model's parameters and moments as a step left them (what
/// [`apply`] returns), from which the next step may be proven safe without checking its
/// values one by one ([`proven`]). [`Maxima::UNKNOWN`] after anything else changed them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Maxima {
    /// The largest `|p|` of the stored parameters.
    pub params: f32,
    /// The largest `|m|` of the first moment buffer (0 without one).
    pub m: f32,
    /// The largest `|v|` of the second moment buffer (0 without one).
    pub v: f32,
}

impl Maxima {
    /// Nothing known: the next step checks every value.
    pub const UNKNOWN: Self = Maxima { params: f32::INFINITY, m: f32::INFINITY, v: f32::INFINITY };

    /// Whether anything is known.
    #[inline(always)]
    pub fn is_known(&self) -> bool {
        self.params.is_finite() && self.m.is_finite() && self.v.is_finite()
    }
}

/// The bits of `|x|`: magnitudes order as their bits do (as unsigned integers), and NaN and
/// infinity are the patterns from `0x7f80_0000` up, so one integer maximum (which
/// vectorises, and skips no NaN) takes the largest magnitude.
#[inline(always)]
pub fn magnitude_bits(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// The largest magnitude in `values` (0 when empty): infinite or NaN if one is.
#[inline(always)]
pub fn max_magnitude(values: &[f32]) -> f32 {
    f32::from_bits(values.iter().fold(0, |acc, &x| acc.max(magnitude_bits(x))))
}

/// Whether a step of `O` from parameters and moments whose largest magnitudes are
/// `maxima`, with gradients at most `g_max` in magnitude, certainly stores no refused
/// value ([`first_refused`] would find none): [`Optimizer::step_bound`] of the maxima is
/// below `limit` for the parameters and finite for the moments. A step so proven skips
/// the check; for Adam at the usual hyperparameters that is every step whose maxima are
/// known. NaN anywhere proves nothing.
#[inline(always)]
pub fn proven<O: Optimizer>(c: &Coeffs, maxima: &Maxima, g_max: f32, limit: f32) -> bool {
    let [p, m, v] = O::step_bound(c, maxima.params, g_max, maxima.m, maxima.v);
    p < limit && m.is_finite() && v.is_finite()
}

/// The index of the first parameter whose step is refused, or `None` if none is: its new
/// value (before rounding to the storage) is not below `limit` in magnitude, or NaN, or a
/// new moment is not finite. `moments` holds `O::MOMENTS` buffers of `params.len()`
/// values, one after the other. Reads only: one branch-free pass on
/// [`Optimizer::bound`] (no division or square root for Adam: this check then costs a
/// fraction of [`apply`]), then, only where some bound is not below `limit`, a search with
/// the exact update: the same answer as the exact update's alone.
#[inline(always)]
pub fn first_refused<O: Optimizer>(
    c: &Coeffs,
    params: &[f32],
    grads: &[f32],
    moments: &[f32],
    limit: f32,
) -> Option<usize> {
    let (m_buf, v_buf) = moments.split_at(moments.len().min(params.len()));
    first_refused_split::<O>(c, params, grads, m_buf, v_buf, limit)
}

/// [`first_refused`] with the moment buffers apart: `m_buf` the first (empty without one),
/// `v_buf` the second (empty without one), each as long as `params` or empty.
#[inline(always)]
pub fn first_refused_split<O: Optimizer>(
    c: &Coeffs,
    params: &[f32],
    grads: &[f32],
    m_buf: &[f32],
    v_buf: &[f32],
    limit: f32,
) -> Option<usize> {
    let ok = |p: f32, m: f32, v: f32| (p.abs() < limit) & m.is_finite() & v.is_finite();
    let refused = |(p, g, m, v): (f32, f32, f32, f32)| {
        let (np, nm, nv) = O::update(c, p, g, m, v);
        !ok(np, nm, nv)
    };
    let unbounded = |(p, g, m, v): (f32, f32, f32, f32)| {
        let (bound, nm, nv) = O::bound(c, p, g, m, v);
        !ok(bound, nm, nv)
    };
    // One plain loop per number of moments, so that each is inlined into the caller (and
    // compiled with its target features) and vectorises without index checks; the search
    // runs only on failure.
    let mut bad = false;
    match O::MOMENTS {
        0 => {
            for (&p, &g) in params.iter().zip(grads) {
                bad |= unbounded((p, g, 0.0, 0.0));
            }
            if bad {
                return params.iter().zip(grads).position(|(&p, &g)| refused((p, g, 0.0, 0.0)));
            }
        }
        1 => {
            for ((&p, &g), &m) in params.iter().zip(grads).zip(m_buf) {
                bad |= unbounded((p, g, m, 0.0));
            }
            if bad {
                return params.iter().zip(grads).zip(m_buf).position(|((&p, &g), &m)| refused((p, g, m, 0.0)));
            }
        }
        _ => {
            for (((&p, &g), &m), &v) in params.iter().zip(grads).zip(m_buf).zip(v_buf) {
                bad |= unbounded((p, g, m, v));
            }
            if bad {
                return params
                    .iter()
                    .zip(grads)
                    .zip(m_buf)
                    .zip(v_buf)
                    .position(|(((&p, &g), &m), &v)| refused((p, g, m, v)));
            }
        }
    }
    None
}

/// Applies one step to every parameter in place: the new value rounded by `round` (to the
/// storage type) and the new moments (laid out as for [`first_refused`], which the caller
/// runs first, or [`proven`]). Returns the [`Maxima`] of what it stored (with `std`;
/// [`Maxima::UNKNOWN`] without, where nothing uses them).
#[inline(always)]
pub fn apply<O: Optimizer>(
    c: &Coeffs,
    params: &mut [f32],
    grads: &[f32],
    moments: &mut [f32],
    round: impl Fn(f32) -> f32,
) -> Maxima {
    let (m_buf, v_buf) = moments.split_at_mut(moments.len().min(params.len()));
    apply_split::<O>(c, params, grads, m_buf, v_buf, round)
}

/// [`apply`] with the moment buffers apart, as [`first_refused_split`] takes them.
#[inline(always)]
pub fn apply_split<O: Optimizer>(
    c: &Coeffs,
    params: &mut [f32],
    grads: &[f32],
    m_buf: &mut [f32],
    v_buf: &mut [f32],
    round: impl Fn(f32) -> f32,
) -> Maxima {
    apply_split_by::<O>(c, params, grads, m_buf, v_buf, round, O::update)
}

/// [`apply_split`] with [`Optimizer::update_fma`] (the same bits), for code compiled with
/// fused multiply-adds.
#[cfg(feature = "std")]
#[inline(always)]
pub fn apply_split_fma<O: Optimizer>(
    c: &Coeffs,
    params: &mut [f32],
    grads: &[f32],
    m_buf: &mut [f32],
    v_buf: &mut [f32],
    round: impl Fn(f32) -> f32,
) -> Maxima {
    apply_split_by::<O>(c, params, grads, m_buf, v_buf, round, O::update_fma)
}

/// [`apply_split`] with `update` as the optimizer's update.
#[inline(always)]
fn apply_split_by<O: Optimizer>(
    c: &Coeffs,
    params: &mut [f32],
    grads: &[f32],
    m_buf: &mut [f32],
    v_buf: &mut [f32],
    round: impl Fn(f32) -> f32,
    update: impl Fn(&Coeffs, f32, f32, f32, f32) -> (f32, f32, f32),
) -> Maxima {
    // The maxima on the bits (see `magnitude_bits`), alongside the stores; with `std` only
    // (the `no_std` core checks every step, and keeps its flash).
    let (mut mp, mut mm, mut mv) = (0u32, 0u32, 0u32);
    let track = cfg!(feature = "std");
    match O::MOMENTS {
        0 => {
            for (p, &g) in params.iter_mut().zip(grads) {
                *p = round(update(c, *p, g, 0.0, 0.0).0);
                if track {
                    mp = mp.max(magnitude_bits(*p));
                }
            }
        }
        1 => {
            for ((p, &g), m) in params.iter_mut().zip(grads).zip(m_buf) {
                let (np, nm, _) = update(c, *p, g, *m, 0.0);
                (*p, *m) = (round(np), nm);
                if track {
                    mp = mp.max(magnitude_bits(*p));
                    mm = mm.max(magnitude_bits(nm));
                }
            }
        }
        _ => {
            for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m_buf).zip(v_buf) {
                let (np, nm, nv) = update(c, *p, g, *m, *v);
                (*p, *m, *v) = (round(np), nm, nv);
                if track {
                    mp = mp.max(magnitude_bits(*p));
                    mm = mm.max(magnitude_bits(nm));
                    mv = mv.max(magnitude_bits(nv));
                }
            }
        }
    }
    if !track {
        return Maxima::UNKNOWN;
    }
    Maxima { params: f32::from_bits(mp), m: f32::from_bits(mm), v: f32::from_bits(mv) }
}

/// The OpenCL C of [`Coeffs`], [`one_minus_pow`] and [`adam_coeffs`] (`tb_adam_coeffs`),
/// line for line the Rust above; the optimizer's own [`Optimizer::OPENCL_COEFFS`] builds on
/// them.
const OPENCL_SHARED: &str = "\
typedef struct {
    float lr, weight_decay, momentum, nesterov, first, one_minus_beta1, beta2, one_minus_beta2, eps,
        step_size, bias2_sqrt, decay;
} tb_coeffs;
inline tb_coeffs tb_coeffs_zero(void) {
    tb_coeffs c;
    c.lr = c.weight_decay = c.momentum = c.nesterov = c.first = 0.0f;
    c.one_minus_beta1 = c.beta2 = c.one_minus_beta2 = c.eps = c.step_size = c.bias2_sqrt = 0.0f;
    c.decay = 1.0f;
    return c;
}
inline float tb_one_minus_pow(const float b, uint t) {
    float acc = 1.0f;
    float base = b;
    for (;;) {
        if (t & 1u) {
            acc *= base;
            if (acc < TB_OPT_NEGLIGIBLE) {
                return 1.0f;
            }
        }
        t >>= 1;
        if (t == 0u) {
            return 1.0f - acc;
        }
        base *= base;
        if (base < TB_OPT_NEGLIGIBLE) {
            return 1.0f;
        }
    }
}
inline tb_coeffs tb_adam_coeffs(const float lr, const float beta1, const float beta2, const float eps, const uint t) {
    tb_coeffs c = tb_coeffs_zero();
    c.lr = lr;
    c.one_minus_beta1 = 1.0f - beta1;
    c.beta2 = beta2;
    c.one_minus_beta2 = 1.0f - beta2;
    c.eps = eps;
    c.step_size = lr / tb_one_minus_pow(beta1, t);
    c.bias2_sqrt = sqrt(tb_one_minus_pow(beta2, t));
    return c;
}
";

/// The OpenCL C of [`adam_update`], generic as [`Optimizer::OPENCL_UPDATE`] is.
const OPENCL_SHARED_UPDATE: &str = "\
inline TB_T tb_adam_updateTB_S(const tb_coeffs c, const TB_T p, const TB_T g, TB_T *m, TB_T *v) {
    *m = c.one_minus_beta1 < 0.5f ? *m + c.one_minus_beta1 * (g - *m) : g - (g - *m) * (1.0f - c.one_minus_beta1);
    *v = *v * c.beta2 + c.one_minus_beta2 * (g * g);
    return p - c.step_size * (*m / (sqrt(*v) / c.bias2_sqrt + c.eps));
}
";

/// Writes `text` with `TB_T` replaced by `ty` and `TB_S` by `suffix`.
fn write_typed(out: &mut impl core::fmt::Write, text: &str, ty: &str, suffix: &str) -> core::fmt::Result {
    for (i, part) in text.split("TB_S").enumerate() {
        if i > 0 {
            out.write_str(suffix)?;
        }
        for (j, piece) in part.split("TB_T").enumerate() {
            if j > 0 {
                out.write_str(ty)?;
            }
            out.write_str(piece)?;
        }
    }
    Ok(())
}

/// Writes the OpenCL C of optimizer `O` into the kernels' prelude: `TB_OPT_MOMENTS` (its
/// [`Optimizer::MOMENTS`]), the shared helpers, its [`Optimizer::OPENCL_COEFFS`]
/// (`tb_opt_coeffs`), then its [`Optimizer::OPENCL_UPDATE`] on `float` (`tb_opt_update`)
/// and on `float16` (`tb_opt_update16`), which the update kernels (`cl/update.cl`) run.
pub fn write_opencl<O: Optimizer>(out: &mut impl core::fmt::Write) -> core::fmt::Result {
    writeln!(out, "// The optimizer `{}` (src/math/optim.rs).", O::NAME)?;
    writeln!(out, "#define TB_OPT_MOMENTS {}", O::MOMENTS)?;
    writeln!(out, "#define TB_OPT_NEGLIGIBLE {NEGLIGIBLE:e}f")?;
    out.write_str(OPENCL_SHARED)?;
    out.write_str(O::OPENCL_COEFFS)?;
    for (ty, suffix) in [("float", ""), ("float16", "16")] {
        write_typed(out, OPENCL_SHARED_UPDATE, ty, suffix)?;
        write_typed(out, O::OPENCL_UPDATE, ty, suffix)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(not(feature = "std"))]
    use std::{format, vec::Vec};

    /// Values with many significant bits over many magnitudes (xorshift).
    fn values(n: usize, seed: u32, scale: f32) -> impl Iterator<Item = f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let mantissa = (s >> 9) as f32 / (1u32 << 23) as f32 * 2.0 - 1.0;
            let exponent = ((s & 0x1f) as i32 - 16) as f32;
            scale * mantissa * libm::exp2f(exponent)
        })
    }

    /// Adam's and AdamW's bound is never below the exact new value's magnitude, whatever
    /// the ε (down to 0 and subnormal), the step count and the values; so the check that
    /// tries it first refuses exactly what the exact update refuses.
    #[test]
    fn adams_bound_holds() {
        for (k, eps) in [1e-8f32, 1e-3, 1e-30, 1e-44, 0.0, 0.5].into_iter().enumerate() {
            for t in [1u32, 2, 10, 1000, 100_000] {
                let adam = Adam { lr: 0.3, beta1: 0.9, beta2: 0.999, eps, weight_decay: 0.01 }.coeffs(t);
                let adamw = AdamW { lr: 0.3, beta1: 0.3, beta2: 0.5, eps, weight_decay: 0.1 }.coeffs(t);
                let ps = values(4000, 1 + k as u32, 4.0);
                let gs = values(4000, 7 + t, 1.0);
                let ms = values(4000, 13, 0.1);
                let vs = values(4000, 17, 0.01).map(f32::abs);
                for (((p, g), m), v) in ps.zip(gs).zip(ms).zip(vs) {
                    for (bound, exact) in [
                        (Adam::bound(&adam, p, g, m, v), Adam::update(&adam, p, g, m, v)),
                        (AdamW::bound(&adamw, p, g, m, v), AdamW::update(&adamw, p, g, m, v)),
                    ] {
                        assert_eq!((bound.1.to_bits(), bound.2.to_bits()), (exact.1.to_bits(), exact.2.to_bits()));
                        if bound.0.is_finite() {
                            assert!(bound.0 >= exact.0.abs(), "eps {eps} t {t}: {bound:?} {exact:?}");
                        }
                    }
                }
            }
        }
    }

    /// [`Optimizer::step_bound`] of a tensor's maxima is never below a new value's
    /// magnitude, and a step [`proven`] safe is one that [`first_refused`] accepts: every
    /// optimizer, at scales from tiny to near overflow, small and huge learning rates.
    /// Both outcomes occur (proven, and refused), so that the check can fail either way.
    #[test]
    fn step_bounds_hold_and_proven_steps_are_accepted() {
        fn run<O: Optimizer>(o: O, counts: &mut [usize; 2]) {
            for (k, scale) in [1e-30f32, 1e-3, 1.0, 1e6, 1e18, 1e30, 1e37].into_iter().enumerate() {
                for lr in [1e-3f32, 0.5, 1e20, 1e36] {
                    for t in [1u32, 2, 50] {
                        let c = o.with_lr(lr).coeffs(t);
                        let n = 500;
                        let p: Vec<f32> = values(n, 3 + k as u32, scale).collect();
                        let g: Vec<f32> = values(n, 5 + t, scale).collect();
                        let m: Vec<f32> = values(n, 11, scale * 0.1).collect();
                        let v: Vec<f32> = values(n, 19, scale * 0.01).map(|x| x * x).collect();
                        let moments = [m.clone(), v.clone()].concat();
                        let (mm, mv) =
                            if O::MOMENTS == 0 { (0.0, 0.0) } else { (max_magnitude(&m), max_magnitude(&v)) };
                        let maxima =
                            Maxima { params: max_magnitude(&p), m: mm, v: if O::MOMENTS == 2 { mv } else { 0.0 } };
                        let [bp, bm, bv] = O::step_bound(&c, maxima.params, max_magnitude(&g), maxima.m, maxima.v);
                        for i in 0..n {
                            let (np, nm, nv) = O::update(&c, p[i], g[i], m[i], v[i]);
                            let what = format!("{} scale {scale} lr {lr} t {t} at {i}", O::NAME);
                            if bp.is_finite() {
                                assert!(np.abs() <= bp, "{what}: {np} over {bp}");
                            }
                            if bm.is_finite() && O::MOMENTS >= 1 {
                                assert!(nm.abs() <= bm, "{what}: m {nm} over {bm}");
                            }
                            if bv.is_finite() && O::MOMENTS == 2 {
                                assert!(nv.abs() <= bv, "{what}: v {nv} over {bv}");
                            }
                        }
                        for limit in [f32::INFINITY, 65520.0] {
                            let refused = first_refused::<O>(&c, &p, &g, &moments[..O::MOMENTS * n], limit);
                            if proven::<O>(&c, &maxima, max_magnitude(&g), limit) {
                                assert_eq!(refused, None, "{} scale {scale} lr {lr} t {t}", O::NAME);
                                counts[0] += 1;
                            }
                            counts[1] += usize::from(refused.is_some());
                        }
                    }
                }
            }
        }
        for o in [Sgd { lr: 0.1, weight_decay: 0.0 }, Sgd { lr: 0.1, weight_decay: 0.3 }] {
            let mut counts = [0; 2];
            run(o, &mut counts);
            assert!(counts[0] > 0 && counts[1] > 0, "{o:?}: {counts:?}");
        }
        for nesterov in [false, true] {
            let mut counts = [0; 2];
            run(Momentum { lr: 0.1, momentum: 0.9, nesterov, weight_decay: 0.01 }, &mut counts);
            assert!(counts[0] > 0 && counts[1] > 0, "nesterov {nesterov}: {counts:?}");
        }
        for eps in [1e-8f32, 1e-3, 0.0] {
            let mut counts = [0; 2];
            run(Adam { eps, weight_decay: 0.01, ..Adam::default() }, &mut counts);
            run(AdamW { eps, beta1: 0.3, ..AdamW::default() }, &mut counts);
            // With ε = 0 nothing is proven (the bound divides by it); steps still refuse.
            assert!((counts[0] > 0) == (eps > 0.0) && counts[1] > 0, "eps {eps}: {counts:?}");
        }
    }

    /// [`div_fma`] is the division, bit for bit: for divisors `√(1 - β2^t)` of Adam's (six
    /// `β2`, steps 1 to 3000 and beyond) and the ends of its range, over every 64th
    /// significand of `a` (the division and [`div_fma`] scale exactly with `a`'s exponent,
    /// so one binade stands for every `a`), and at 0 and the largest `√v`.
    #[cfg(feature = "std")]
    #[test]
    fn div_fma_is_the_division() {
        let mut divisors = vec![1.0f32, 2.0f32.powi(-12), 1.0 - f32::EPSILON / 2.0];
        for beta2 in [0.999f32, 0.99, 0.9, 0.5, 0.9999, 1.0 - f32::EPSILON / 2.0] {
            for t in (1..3000).step_by(97).chain([5000, 20_000, 100_000]) {
                divisors.push(Adam { beta2, ..Adam::default() }.coeffs(t).bias2_sqrt);
            }
        }
        for d in divisors {
            let y = 1.0 / d;
            let mut wrong = 0;
            for k in (0..1u32 << 23).step_by(64).chain([(1 << 23) - 1]) {
                let a = f32::from_bits(0x3f80_0000 | k);
                wrong += usize::from(div_fma(a, d, y).to_bits() != (a / d).to_bits());
            }
            assert_eq!(wrong, 0, "d {d}");
            for a in [0.0f32, f32::MAX.sqrt(), 1e-22] {
                assert_eq!(div_fma(a, d, y).to_bits(), (a / d).to_bits(), "a {a} d {d}");
            }
        }
    }

    /// A step whose bound says nothing (ε = 0, a zero moment: 0/0) is still checked exactly.
    #[test]
    fn without_a_bound_the_update_decides() {
        let c = Adam { lr: 0.1, eps: 0.0, ..Adam::default() }.coeffs(1);
        let (p, g, m) = ([1.0f32, 2.0], [0.5f32, 0.0], [0.0f32; 4]);
        assert_eq!(first_refused::<Adam>(&c, &p, &g, &m, f32::INFINITY), Some(1));
        let g = [0.5f32, 0.25];
        assert_eq!(first_refused::<Adam>(&c, &p, &g, &m, f32::INFINITY), None);
        assert_eq!(first_refused::<Adam>(&c, &p, &g, &m, 1.5), Some(1));
    }
}
