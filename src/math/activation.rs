//! The hidden layers' activations: each one's function, its derivative taken from the
//! layer's output, its initialisation, and the OpenCL C text of the same formulas.
//!
//! A hidden layer's output is `y = f(z)`; the backward pass turns dL/dy into dL/dz with
//! [`Activation::backprop`], which reads `y` (not `z`): every derivative here is written in
//! terms of the output (`tanh' = 1 - y²`, `sigmoid' = y (1 - y)`), so the pre-activations
//! need not be kept. The output layer is always linear ([`Activation::Identity`]), its
//! logits going to the softmax cross-entropy ([`loss`](super::loss)).
//!
//! Adding an activation means adding a variant here (with its formulas and C text) and its
//! name to the `model!` macro's list; the CPU core, the CPU backend and the kernels take it
//! from here.

use core::fmt::{self, Write};

/// The function after a dense layer (`activation:` in [`model!`](macro@crate::model)).
///
/// NaN stays NaN through every one of them (so a diverged value still surfaces as a
/// non-finite loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(z, 0)`; derivative `1` where `y > 0`, else `0`. Initialised He-normal.
    Relu,
    /// `tanh(z)`; derivative `1 - y²`. Initialised Glorot-normal.
    Tanh,
    /// The logistic function `1 / (1 + e^-z)`; derivative `y (1 - y)`. Initialised
    /// Glorot-normal.
    Sigmoid,
    /// `z` itself; derivative `1`. Initialised Glorot-normal. The output layer's.
    Identity,
}

impl Activation {
    /// Every activation, in the order of their [`Activation::id`]s.
    pub const ALL: [Activation; 4] = [Activation::Identity, Activation::Relu, Activation::Tanh, Activation::Sigmoid];

    /// The hidden layers' activation when the declaration names none.
    pub const DEFAULT: Activation = Activation::Relu;

    /// The name as the declaration writes it (`relu`, `tanh`, `sigmoid`, `identity`).
    pub const fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Identity => "identity",
        }
    }

    /// The kernels' name of the activation's [`Activation::id`]: `TB_ACT_RELU`, ...
    pub const fn opencl_name(self) -> &'static str {
        match self {
            Activation::Relu => "TB_ACT_RELU",
            Activation::Tanh => "TB_ACT_TANH",
            Activation::Sigmoid => "TB_ACT_SIGMOID",
            Activation::Identity => "TB_ACT_IDENTITY",
        }
    }

    /// A small number for the kernels (`TB_ACT_<NAME>`, and `TB_ACT_<l>` per layer).
    pub const fn id(self) -> u8 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Tanh => 2,
            Activation::Sigmoid => 3,
        }
    }

    /// `f(z)`.
    #[inline(always)]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            // A select, not a conditional store, so that it vectorises; NaN kept.
            Activation::Relu => {
                if z < 0.0 {
                    0.0
                } else {
                    z
                }
            }
            Activation::Tanh => libm::tanhf(z),
            Activation::Sigmoid => 1.0 / (1.0 + libm::expf(-z)),
            Activation::Identity => z,
        }
    }

    /// dL/dz from `d` = dL/dy and the output `y = f(z)`: `d · f'(z)`, with `f'` written
    /// in terms of `y`. For ReLU a select (`y > 0 ? d : 0`), so that an infinite `d` of a
    /// dead unit gives 0, not NaN.
    #[inline(always)]
    pub fn backprop(self, d: f32, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if y > 0.0 {
                    d
                } else {
                    0.0
                }
            }
            Activation::Tanh => d * (1.0 - y * y),
            Activation::Sigmoid => d * (y * (1.0 - y)),
            Activation::Identity => d,
        }
    }

    /// [`Activation::apply`] to every value of `v`, one loop per activation (the `match`
    /// outside it, so that ReLU's loop vectorises as before).
    #[inline(always)]
    pub fn apply_in_place(self, v: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => {
                for x in v {
                    *x = Activation::Relu.apply(*x);
                }
            }
            Activation::Tanh => {
                for x in v {
                    *x = Activation::Tanh.apply(*x);
                }
            }
            Activation::Sigmoid => {
                for x in v {
                    *x = Activation::Sigmoid.apply(*x);
                }
            }
        }
    }

    /// [`Activation::backprop`] over a delta `d` and the outputs `y` it belongs to.
    #[inline(always)]
    pub fn backprop_in_place(self, d: &mut [f32], y: &[f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => {
                // `backprop`'s select, written on the place (a value copied out first cost
                // an instruction a value on a Cortex-M4F).
                for (d, &y) in d.iter_mut().zip(y) {
                    *d = if y > 0.0 { *d } else { 0.0 };
                }
            }
            Activation::Tanh => {
                for (d, &y) in d.iter_mut().zip(y) {
                    *d = Activation::Tanh.backprop(*d, y);
                }
            }
            Activation::Sigmoid => {
                for (d, &y) in d.iter_mut().zip(y) {
                    *d = Activation::Sigmoid.backprop(*d, y);
                }
            }
        }
    }

    /// The variance of the zero-mean normal distribution a hidden layer's weights are
    /// drawn from, for a layer of `fan_in` inputs and `fan_out` outputs followed by this
    /// activation:
    ///
    /// - ReLU: He-normal, `N(0, 2 / fan_in)` (He et al. 2015);
    /// - tanh, sigmoid and identity: Glorot-normal, `N(0, 2 / (fan_in + fan_out))` (Glorot
    ///   and Bengio 2010, as `torch.nn.init.xavier_normal_` with gain 1).
    ///
    /// The output layer is not a hidden layer: it is initialised LeCun-normal
    /// (`N(0, 1 / fan_in)`) whatever the hidden layers' activation.
    #[inline]
    pub fn init_variance(self, fan_in: usize, fan_out: usize) -> f32 {
        match self {
            Activation::Relu => 2.0 / fan_in as f32,
            Activation::Tanh | Activation::Sigmoid | Activation::Identity => 2.0 / (fan_in + fan_out) as f32,
        }
    }

    /// The ONNX operator of the activation (`Relu`, `Tanh`, `Sigmoid`, `Identity`), as
    /// `save_onnx` writes it between layers and `from_onnx` expects it.
    pub const fn onnx_op(self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Tanh => "Tanh",
            Activation::Sigmoid => "Sigmoid",
            Activation::Identity => "Identity",
        }
    }

    /// The OpenCL C expression of `f(x)` for a `float` (`vector: false`) or a `float16`
    /// `x` (`vector: true`).
    pub const fn opencl_apply(self, vector: bool) -> &'static str {
        match (self, vector) {
            (Activation::Relu, false) => "x < 0.0f ? 0.0f : x",
            (Activation::Relu, true) => "select(x, (float16)(0.0f), x < (float16)(0.0f))",
            (Activation::Tanh, _) => "tanh(x)",
            (Activation::Sigmoid, _) => "1.0f / (1.0f + exp(-x))",
            (Activation::Identity, _) => "x",
        }
    }

    /// The OpenCL C expression of [`Activation::backprop`] for `float` (`vector: false`)
    /// or `float16` (`vector: true`) `d` and `y`.
    pub const fn opencl_backprop(self, vector: bool) -> &'static str {
        match (self, vector) {
            (Activation::Relu, false) => "y > 0.0f ? d : 0.0f",
            (Activation::Relu, true) => "select((float16)(0.0f), d, y > (float16)(0.0f))",
            (Activation::Tanh, _) => "d * (1.0f - y * y)",
            (Activation::Sigmoid, _) => "d * (y * (1.0f - y))",
            (Activation::Identity, _) => "d",
        }
    }
}

/// The activation after layer `l` of a model with `layers` dense layers, whose hidden
/// layers' activations are `hidden` (one per hidden layer; a layer past its end takes
/// [`Activation::DEFAULT`]): the output layer's is [`Activation::Identity`].
#[inline(always)]
pub const fn after_layer(hidden: &[Activation], layers: usize, l: usize) -> Activation {
    if l + 1 >= layers {
        Activation::Identity
    } else if l < hidden.len() {
        hidden[l]
    } else {
        Activation::DEFAULT
    }
}

/// Whether every hidden layer's activation in `hidden` is `act` (true for an empty list
/// when `act` is [`Activation::DEFAULT`], which the layers past the list's end take).
pub const fn all_are(hidden: &[Activation], act: Activation) -> bool {
    let mut k = 0;
    while k < hidden.len() {
        if hidden[k].id() != act.id() {
            return false;
        }
        k += 1;
    }
    true
}

/// Writes the OpenCL C of every activation: `#define TB_ACT_<NAME> <id>`, and the
/// functions `tb_act(kind, x)`, `tb_act_grad(kind, d, y)` (on `float`) and `tb_act16`,
/// `tb_act_grad16` (on `float16`), each a `switch` on `kind` that folds away where `kind`
/// is a constant (the kernels pass `TB_ACT_<l>`).
pub fn write_opencl(out: &mut impl Write) -> fmt::Result {
    for act in Activation::ALL {
        writeln!(out, "#define {} {}", act.opencl_name(), act.id())?;
    }
    for (suffix, ty, vector) in [("", "float", false), ("16", "float16", true)] {
        writeln!(out, "inline {ty} tb_act{suffix}(const int kind, const {ty} x) {{\n    switch (kind) {{")?;
        for act in Activation::ALL {
            writeln!(out, "    case {}: return {};", act.id(), act.opencl_apply(vector))?;
        }
        writeln!(out, "    default: return x;\n    }}\n}}")?;
        writeln!(
            out,
            "inline {ty} tb_act_grad{suffix}(const int kind, const {ty} d, const {ty} y) {{\n    switch (kind) {{"
        )?;
        for act in Activation::ALL {
            writeln!(out, "    case {}: return {};", act.id(), act.opencl_backprop(vector))?;
        }
        writeln!(out, "    default: return d;\n    }}\n}}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_is_the_old_select() {
        for z in [-1.5f32, -0.0, 0.0, 2.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let want = if z < 0.0 { 0.0 } else { z };
            assert_eq!(Activation::Relu.apply(z).to_bits(), want.to_bits(), "{z}");
            let d = -3.0f32;
            let mask = if z > 0.0 { d } else { 0.0 };
            assert_eq!(Activation::Relu.backprop(d, z).to_bits(), mask.to_bits(), "{z}");
        }
    }

    #[test]
    fn derivatives_by_hand() {
        // tanh(0.5) = 0.46211716; 1 - y² = 0.78644773.
        let y = Activation::Tanh.apply(0.5);
        assert!((y - 0.462_117_16).abs() < 1e-6);
        assert!((Activation::Tanh.backprop(2.0, y) - 2.0 * 0.786_447_7).abs() < 1e-5);
        // sigmoid(0) = 1/2, derivative 1/4.
        assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
        assert_eq!(Activation::Sigmoid.backprop(1.0, 0.5), 0.25);
        assert_eq!(Activation::Sigmoid.apply(-200.0), 0.0);
        assert_eq!(Activation::Sigmoid.apply(200.0), 1.0);
        assert!(Activation::Tanh.apply(f32::NAN).is_nan() && Activation::Sigmoid.apply(f32::NAN).is_nan());
    }

    #[test]
    fn ids_follow_all() {
        for (k, act) in Activation::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(act.id()), k);
        }
    }
}
