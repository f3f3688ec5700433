//! The hidden layers' activations (`activation:` in `model!`): gradients against finite
//! differences for each one; 24 SGD steps of MLPs against NumPy (`fixtures/activations.py`,
//! float64, independent of tensorbridge) for each one, `f32` and `f16` storage, immediate
//! and deferred steps, on the CPU backend and on OpenCL through each kernel path (tiny,
//! fused, tiled); and the kernels' emitted formulas against the CPU core's, value by value.

mod reference {
    include!("fixtures/activations.rs");
}

use crate::support::{assert_agree, assert_close, paths};
use tensorbridge::half::f16;
use tensorbridge::nalgebra::SMatrix;
use tensorbridge::rng::Rng;
use tensorbridge::{Activation, Device, Engine, HostTensor, KernelPath, Model, Params, StorageElement};

tensorbridge::model! { struct GradRelu { batch: 3, features: 5, hidden: [6, 4], classes: 3, activation: relu } }
tensorbridge::model! { struct GradTanh { batch: 3, features: 5, hidden: [6, 4], classes: 3, activation: tanh } }
tensorbridge::model! { struct GradSigmoid { batch: 3, features: 5, hidden: [6, 4], classes: 3, activation: sigmoid } }
tensorbridge::model! { struct GradIdentity { batch: 3, features: 5, hidden: [6, 4], classes: 3, activation: identity } }
tensorbridge::model! { struct GradMixed { batch: 3, features: 5, hidden: [6, 4], classes: 3, activation: [tanh, sigmoid] } }

/// Every analytic gradient against `(L(p + h) - L(p - h)) / 2h` in f32 (h = 1e-2): for the
/// smooth activations every parameter; for ReLU those away from a kink (the one-sided
/// slopes agree).
fn check_gradients<M: Model<Storage = f32>>(device: &Device, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = M::Input::from_flat(&(0..M::BATCH * M::FEATURES).map(|_| rng.normal() as f32).collect::<Vec<_>>());
    let y = M::Labels::from_flat(&(0..M::BATCH).map(|_| rng.below(M::CLASSES as u64) as u32).collect::<Vec<_>>());
    let mut model = Engine::<M>::with_seed(device, seed).unwrap();
    let mut flat = vec![0.0; M::Params::LEN];
    model.params().unwrap().write_flat(&mut flat);
    for v in flat.iter_mut() {
        *v += 0.1 * rng.normal() as f32;
    }
    model.set_params(&M::Params::from_flat(&flat)).unwrap();
    let (_, grads) = model.gradients(&x, &y).unwrap();
    let mut analytic = vec![0.0; M::Params::LEN];
    grads.write_flat(&mut analytic);
    let smooth = M::ACTIVATIONS.iter().all(|&a| a != Activation::Relu);
    let h = 1e-2f32;
    let mut checked = 0;
    for k in 0..flat.len() {
        let mut at = |delta: f32| {
            let mut p = flat.clone();
            p[k] += delta;
            model.set_params(&M::Params::from_flat(&p)).unwrap();
            f64::from(model.loss(&x, &y).unwrap())
        };
        let (lm, l0, lp) = (at(-h), at(0.0), at(h));
        let (left, right) = ((l0 - lm) / f64::from(h), (lp - l0) / f64::from(h));
        if !smooth && (left - right).abs() > 0.05 * (left.abs() + right.abs()) + 1e-3 {
            continue;
        }
        let numeric = (lp - lm) / (2.0 * f64::from(h));
        let a = f64::from(analytic[k]);
        assert!(
            (a - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
            "{} on {device}: parameter {k}: analytic {a}, finite difference {numeric}",
            M::NAME
        );
        checked += 1;
    }
    let least = if smooth { flat.len() } else { flat.len() * 3 / 4 };
    assert!(checked >= least, "{}: only {checked} of {} parameters checked", M::NAME, flat.len());
}

fn each_activations_gradients_match_finite_differences(device: &Device) {
    for d in paths(device) {
        check_gradients::<GradRelu>(&d, 31);
        check_gradients::<GradTanh>(&d, 32);
        check_gradients::<GradSigmoid>(&d, 33);
        check_gradients::<GradIdentity>(&d, 34);
        check_gradients::<GradMixed>(&d, 35);
    }
}

tensorbridge::model! { struct SmallRelu { batch: 6, features: 5, hidden: [7, 4], classes: 3 } }
tensorbridge::model! { struct SmallTanh { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: tanh } }
tensorbridge::model! { struct SmallSigmoid { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: sigmoid } }
tensorbridge::model! { struct SmallIdentity { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: identity } }
tensorbridge::model! { struct SmallMixed { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: [sigmoid, tanh] } }
tensorbridge::model! { struct GemmTanh { batch: 32, features: 40, hidden: [56], classes: 8, activation: tanh } }
tensorbridge::model! { struct GemmSigmoid { batch: 32, features: 40, hidden: [56], classes: 8, activation: sigmoid } }
tensorbridge::model! { struct HalfRelu { batch: 6, features: 5, hidden: [7, 4], classes: 3, storage: f16 } }
tensorbridge::model! { struct HalfTanh { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: tanh, storage: f16 } }
tensorbridge::model! { struct HalfSigmoid { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: sigmoid, storage: f16 } }
tensorbridge::model! { struct HalfIdentity { batch: 6, features: 5, hidden: [7, 4], classes: 3, activation: identity, storage: f16 } }

/// A matrix of the storage type from the fixture's rows (exact: the fixture holds values
/// of that type).
fn m<T: StorageElement, const R: usize, const C: usize>(rows: &[[f64; C]; R]) -> SMatrix<T, R, C> {
    SMatrix::from_fn(|r, c| T::from_f32(rows[r][c] as f32))
}

fn v<T: StorageElement, const R: usize>(v: &[f64; R]) -> SMatrix<T, R, 1> {
    SMatrix::from_fn(|r, _| T::from_f32(v[r] as f32))
}

/// The CPU as is; OpenCL through its automatic choice (the tiny kernel for the small
/// shapes' steps), the fused kernel and the tiled kernels.
fn kernel_paths(device: &Device) -> Vec<Device> {
    if device.is_cpu() {
        vec![device.clone()]
    } else {
        [KernelPath::Auto, KernelPath::Fused, KernelPath::Tiled].map(|p| device.with_kernel_path(p)).to_vec()
    }
}

/// The largest `|got - want|`.
fn worst_error(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max)
}

/// Tolerances against the float64 reference after 24 steps.
/// - `f32`: each step's f32 arithmetic is within a few units of 2^-24 of the exact one, and
///   those differences carry into the next steps; measured (PoCL and the CPU backend,
///   AVX-512): at most 4.1e-7 over the losses and final parameters of every case. 2e-6
///   absolute + 1e-5 relative.
/// - `f16`: both sides round every parameter to f16 after each step, so they agree exactly
///   unless an f32 result and its f64 reference fall on two sides of an f16 rounding
///   boundary; then that parameter differs by one f16 step (2^-11 relative, 4.9e-4 at
///   magnitude 1) and the difference carries on. Measured: no such flip in these cases
///   (largest error 2.0e-7, the f32 losses'); 1e-3 absolute + 1e-3 relative allows about
///   two flipped steps, far below what a wrong formula gives (a wrong derivative or
///   initialisation moves the losses by 1e-2 and more within a few steps).
const F32_TOL: (f64, f64) = (2e-6, 1e-5);
const F16_TOL: (f64, f64) = (1e-3, 1e-3);

/// Runs a fixture case's 24 steps from its initial parameters, immediate and deferred, and
/// compares the losses and the final parameters with NumPy's.
macro_rules! sgd_case {
    ($device:expr, $model:ident, $params:ident, $t:ty, $case:ident, $tol:expr, [$(($w:ident, $b:ident, $W:ident, $B:ident, $EW:ident, $EB:ident)),+]) => {{
        use reference::$case as r;
        let (atol, rtol) = $tol;
        for device in kernel_paths($device) {
            for deferred in [false, true] {
                let what = format!("{} on {device} (deferred: {deferred})", stringify!($case));
                let params = $params { $($w: m::<$t, _, _>(&r::$W), $b: v::<$t, _>(&r::$B)),+ };
                let mut model = match $model::with_params(&device, params) {
                    Ok(model) => model,
                    Err(tensorbridge::Error::Unsupported { reason, .. }) => {
                        crate::test_log!("{what}: skipped: {reason}");
                        continue;
                    }
                    Err(err) => panic!("{what}: {err}"),
                };
                let batches = [
                    (m::<$t, _, _>(&r::X0), SMatrix::<u32, { r::Y0.len() }, 1>::from_column_slice(&r::Y0)),
                    (m::<$t, _, _>(&r::X1), SMatrix::<u32, { r::Y1.len() }, 1>::from_column_slice(&r::Y1)),
                    (m::<$t, _, _>(&r::X2), SMatrix::<u32, { r::Y2.len() }, 1>::from_column_slice(&r::Y2)),
                ];
                let mut losses = Vec::new();
                for step in 0..r::LOSSES.len() {
                    let (x, y) = &batches[step % batches.len()];
                    if deferred {
                        model.train_step_deferred(x, y, r::LR).unwrap();
                    } else {
                        losses.push(model.train_step(x, y, r::LR).unwrap());
                    }
                }
                if deferred {
                    losses = model.take_losses().unwrap();
                }
                assert_close(&format!("{what}: losses"), &losses, &r::LOSSES, atol, rtol);
                let mut worst = worst_error(&losses, &r::LOSSES);
                let end = model.params().unwrap();
                $(
                    let got: Vec<f32> = end.$w.iter().map(|e| e.to_f32()).collect();
                    let want: Vec<f64> = m::<f32, _, _>(&r::$EW).iter().map(|&e| f64::from(e)).collect();
                    assert_close(&format!("{what}: {}", stringify!($w)), &got, &want, atol, rtol);
                    worst = worst.max(worst_error(&got, &want));
                    let got: Vec<f32> = end.$b.iter().map(|e| e.to_f32()).collect();
                    assert_close(&format!("{what}: {}", stringify!($b)), &got, &r::$EB, atol, rtol);
                    worst = worst.max(worst_error(&got, &r::$EB));
                )+
                crate::test_log!("{what}: largest error {worst:e}");
            }
        }
    }};
}

macro_rules! small_case {
    ($device:expr, $model:ident, $params:ident, $t:ty, $case:ident, $tol:expr) => {
        sgd_case!(
            $device,
            $model,
            $params,
            $t,
            $case,
            $tol,
            [(w0, b0, W0, B0, END_W0, END_B0), (w1, b1, W1, B1, END_W1, END_B1), (w2, b2, W2, B2, END_W2, END_B2)]
        )
    };
}

fn sgd_matches_numpy_for_each_activation_f32(device: &Device) {
    small_case!(device, SmallRelu, SmallReluParams, f32, small_relu, F32_TOL);
    small_case!(device, SmallTanh, SmallTanhParams, f32, small_tanh, F32_TOL);
    small_case!(device, SmallSigmoid, SmallSigmoidParams, f32, small_sigmoid, F32_TOL);
    small_case!(device, SmallIdentity, SmallIdentityParams, f32, small_identity, F32_TOL);
    small_case!(device, SmallMixed, SmallMixedParams, f32, small_mixed, F32_TOL);
}

/// A shape large enough for the CPU backend's GEMM and fixed-size products (each SIMD
/// variant the machine has picks them) and OpenCL's tiled kernels.
fn sgd_matches_numpy_for_each_activation_gemm_shape(device: &Device) {
    sgd_case!(
        device,
        GemmTanh,
        GemmTanhParams,
        f32,
        gemm_tanh,
        F32_TOL,
        [(w0, b0, W0, B0, END_W0, END_B0), (w1, b1, W1, B1, END_W1, END_B1)]
    );
    sgd_case!(
        device,
        GemmSigmoid,
        GemmSigmoidParams,
        f32,
        gemm_sigmoid,
        F32_TOL,
        [(w0, b0, W0, B0, END_W0, END_B0), (w1, b1, W1, B1, END_W1, END_B1)]
    );
}

fn sgd_matches_numpy_for_each_activation_f16(device: &Device) {
    small_case!(device, HalfRelu, HalfReluParams, f16, half_relu, F16_TOL);
    small_case!(device, HalfTanh, HalfTanhParams, f16, half_tanh, F16_TOL);
    small_case!(device, HalfSigmoid, HalfSigmoidParams, f16, half_sigmoid, F16_TOL);
    small_case!(device, HalfIdentity, HalfIdentityParams, f16, half_identity, F16_TOL);
}

tensorbridge::model! { struct ProbeRelu { batch: 16, features: 1, hidden: [4], classes: 4, activation: relu } }
tensorbridge::model! { struct ProbeTanh { batch: 16, features: 1, hidden: [4], classes: 4, activation: tanh } }
tensorbridge::model! { struct ProbeSigmoid { batch: 16, features: 1, hidden: [4], classes: 4, activation: sigmoid } }
tensorbridge::model! { struct ProbeIdentity { batch: 16, features: 1, hidden: [4], classes: 4, activation: identity } }

/// The kernels' formulas (emitted from `tensorbridge::math::activation`) against the CPU
/// core's, value by value: a model whose hidden layer sees `z = x · w0 + b0` over a grid of
/// 64 values from -12 to 12 (ReLU's kink and both saturations included) and whose head is
/// the identity, so that its logits are the activations themselves and its bias gradients
/// the derivatives' sums. Each kernel path against the CPU backend, within 2 units in the
/// last place (OpenCL's `tanh` and `exp` are allowed 4 and 3 ulp, libm's fewer; where the
/// value is below 1e-6, 1e-6 absolute).
fn opencl_formulas_match_the_cpu_core<M: Model<Storage = f32>>(device: &Device) {
    let x = M::Input::from_flat(&(0..M::BATCH).map(|r| r as f32 / 8.0 - 1.0).collect::<Vec<_>>());
    let y = M::Labels::from_flat(&(0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect::<Vec<_>>());
    // w0 = [12, 3, 0.5, -7], b0 = [0, 0.25, -0.5, 1]; w1 = I, b1 = 0.
    let mut flat = vec![0.0f32; M::Params::LEN];
    flat[..4].copy_from_slice(&[12.0, 3.0, 0.5, -7.0]);
    flat[4..8].copy_from_slice(&[0.0, 0.25, -0.5, 1.0]);
    for o in 0..4 {
        flat[8 + o * 4 + o] = 1.0;
    }
    let params = M::Params::from_flat(&flat);
    let cpu = Engine::<M>::with_params(&Device::cpu(), &params).unwrap();
    let want = cpu.logits(&x).unwrap();
    let (want_loss, want_grads) = cpu.gradients(&x, &y).unwrap();
    let mut want_g = vec![0.0; M::Params::LEN];
    want_grads.write_flat(&mut want_g);
    for d in kernel_paths(device) {
        let cl = Engine::<M>::with_params(&d, &params).unwrap();
        let got = cl.logits(&x).unwrap();
        assert_agree(&format!("{} on {d}: activations", M::NAME), got.as_flat(), want.as_flat(), 1e-6, 2.5e-7);
        let (loss, grads) = cl.gradients(&x, &y).unwrap();
        let mut g = vec![0.0; M::Params::LEN];
        grads.write_flat(&mut g);
        assert_agree(&format!("{} on {d}: loss", M::NAME), &[loss], &[want_loss], 1e-6, 1e-6);
        assert_agree(&format!("{} on {d}: gradients", M::NAME), &g, &want_g, 1e-6, 1e-5);
    }
}

fn opencl_activation_formulas_match_the_cpu_core(device: &Device) {
    opencl_formulas_match_the_cpu_core::<ProbeRelu>(device);
    opencl_formulas_match_the_cpu_core::<ProbeTanh>(device);
    opencl_formulas_match_the_cpu_core::<ProbeSigmoid>(device);
    opencl_formulas_match_the_cpu_core::<ProbeIdentity>(device);
}

/// The declaration's activations reach the model, and each hidden layer is initialised as
/// documented: He-normal before ReLU (variance 2 / fan_in), Glorot-normal before the others
/// (2 / (fan_in + fan_out)); the head LeCun-normal (1 / fan_in). Checked on the sample
/// variance of a wide model's weights.
fn initialisation_follows_the_activation() {
    tensorbridge::model! { struct WideRelu { batch: 1, features: 300, hidden: [100], classes: 50 } }
    tensorbridge::model! { struct WideTanh { batch: 1, features: 300, hidden: [100], classes: 50, activation: tanh } }
    assert_eq!(WideRelu::ACTIVATIONS, &[Activation::Relu]);
    assert_eq!(WideTanh::ACTIVATIONS, &[Activation::Tanh]);
    assert_eq!(GradMixed::ACTIVATIONS, &[Activation::Tanh, Activation::Sigmoid]);
    let variance = |w: &[f32]| w.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / w.len() as f64;
    let relu = WideRelu::new(&Device::cpu()).unwrap().params().unwrap();
    let tanh = WideTanh::new(&Device::cpu()).unwrap().params().unwrap();
    // 30000 samples: the sample variance is within 3% of the true one (4.5 sigma).
    let near = |got: f64, want: f64, what: &str| assert!((got / want - 1.0).abs() < 0.03, "{what}: {got} vs {want}");
    near(variance(relu.w0.as_flat()), 2.0 / 300.0, "He");
    near(variance(tanh.w0.as_flat()), 2.0 / 400.0, "Glorot");
    // The head: LeCun, whatever the hidden activation (5000 samples: within 7%).
    assert!((variance(tanh.w1.as_flat()) / (1.0 / 100.0) - 1.0).abs() < 0.07);
    assert!((variance(relu.w1.as_flat()) / (1.0 / 100.0) - 1.0).abs() < 0.07);
}

/// A checkpoint records its hidden activations: a model of the same shape with another
/// activation refuses it (its weights would give other numbers), the same declaration loads
/// it, and a file without the record (written by hand, as by another tool) still loads.
fn checkpoints_refuse_another_activation() {
    let dir = crate::support::scratch("activations-checkpoint");
    let path = dir.join("tanh.safetensors");
    let tanh = SmallTanh::new(&Device::cpu()).unwrap();
    tanh.save(&path).unwrap();
    match SmallRelu::load(&Device::cpu(), &path) {
        Err(tensorbridge::Error::Checkpoint {
            kind: tensorbridge::checkpoint::CheckpointErrorKind::WrongActivations { expected, found, .. },
            ..
        }) => {
            assert_eq!((expected.as_str(), found.as_str()), ("relu, relu", "tanh, tanh"));
        }
        other => panic!("a tanh checkpoint loaded into a ReLU model: {:?}", other.map(|_| ())),
    }
    assert!(matches!(SmallMixed::load(&Device::cpu(), &path), Err(tensorbridge::Error::Checkpoint { .. })));
    let back = SmallTanh::load(&Device::cpu(), &path).unwrap();
    assert_eq!(back.params().unwrap(), tanh.params().unwrap());
    // The record is in the header's text, as written.
    let bytes = std::fs::read(&path).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..]);
    assert!(header.contains("SmallTanh: 5 -> 7 -> 4 -> 3; activations: tanh, tanh"), "{header}");
}

crate::tests! {
    plain checkpoints_refuse_another_activation,
    device each_activations_gradients_match_finite_differences,
    device sgd_matches_numpy_for_each_activation_f32,
    device sgd_matches_numpy_for_each_activation_gemm_shape,
    device sgd_matches_numpy_for_each_activation_f16,
    opencl opencl_activation_formulas_match_the_cpu_core,
    plain initialisation_follows_the_activation,
}
