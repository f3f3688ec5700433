//! The optimizers against NumPy transcriptions of `torch.optim`'s formulas
//! (`fixtures/optimizers.py`): 25 steps of an MLP with a learning-rate schedule, for SGD with
//! weight decay, momentum, Nesterov momentum with weight decay, Adam (with and without weight
//! decay) and AdamW, in `f32` and `f16` storage, on the CPU backend and on OpenCL (its
//! automatic kernel choice, the fused and the tiled kernels; immediate and deferred steps).
//! Then the optimizer's state: checkpoints resume bit for bit, `set_params` leaves it alone,
//! `reset_optimizer` clears it, a refused step changes nothing; OpenCL and the CPU agree;
//! and the hyperparameters' checks.

mod reference {
    include!("fixtures/optimizers.rs");
}

use tensorbridge::optim::{Adam, AdamW, Momentum, Optimizer, Sgd};
use tensorbridge::{Device, Engine, Error, HostTensor, KernelPath, Model, Params, StorageElement};

use crate::support::{assert_close, scratch};

tensorbridge::model! { struct SgdMlp { batch: 6, features: 5, hidden: [7], classes: 3, optimizer: sgd } }
tensorbridge::model! { struct MomentumMlp { batch: 6, features: 5, hidden: [7], classes: 3, optimizer: momentum } }
tensorbridge::model! { struct AdamMlp { batch: 6, features: 5, hidden: [7], classes: 3, optimizer: adam } }
tensorbridge::model! { struct AdamWMlp { batch: 6, features: 5, hidden: [7], classes: 3, optimizer: adamw } }
tensorbridge::model! { struct SgdMlp16 { batch: 6, features: 5, hidden: [7], classes: 3, storage: f16, optimizer: sgd } }
tensorbridge::model! {
    struct MomentumMlp16 { batch: 6, features: 5, hidden: [7], classes: 3, storage: f16, optimizer: momentum }
}
tensorbridge::model! { struct AdamMlp16 { batch: 6, features: 5, hidden: [7], classes: 3, storage: f16, optimizer: adam } }
tensorbridge::model! { struct AdamWMlp16 { batch: 6, features: 5, hidden: [7], classes: 3, storage: f16, optimizer: adamw } }

/// `f32`: the reference's gradients are float64 rounded once, ours are summed in `f32`, a
/// few ulps apart; 25 steps carry that difference along (Adam divides by `√v`, so it does
/// not shrink with the gradient). Measured: at most 1.2e-7 (one `f32` ulp at 1); each wrong
/// formula the fixture tries is at least 0.016 away (`WRONG_F32`).
const ATOL_F32: f64 = 1e-6;
/// `f16`: each step rounds every parameter to `f16` (half an ulp: 2^-12 relative, 2.4e-4 at
/// magnitude 1, 4.9e-4 at 2); a gradient a few `f32` ulps off can round a value on the
/// other side of a tie, one `f16` ulp (2^-11 relative) apart, and later steps carry that on.
/// Adam's normalised step (about `lr` whatever the gradient's size) carries such a flip on
/// most. Measured: at most 2.4e-3 (Adam), 5e-4 to 1e-3 for the others; allowed: four `f16`
/// ulps at the largest magnitudes here (|p| < 2), 4 · 2^-10 ≈ 3.9e-3. Every wrong formula
/// the fixture tries is at least 0.016 away (`WRONG_F16`).
const ATOL_F16: f64 = 3.9e-3;
const RTOL: f64 = 1e-5;

/// The model `M` with the fixture's initial parameters (rounded to the storage).
fn start<M: Model>(device: &Device) -> tensorbridge::Result<Engine<M>> {
    let flat: Vec<M::Storage> = reference::P0.iter().map(|&v| M::Storage::from_f32(v)).collect();
    Engine::<M>::with_params(device, <M::Params as Params>::from_flat(&flat))
}

/// The fixture's batch `k`.
fn batch<M: Model>(k: usize) -> (M::Input, M::Labels) {
    let (x, y): (&[f32], &[u32]) = match k % reference::BATCHES {
        0 => (&reference::X0, &reference::Y0),
        1 => (&reference::X1, &reference::Y1),
        2 => (&reference::X2, &reference::Y2),
        _ => (&reference::X3, &reference::Y3),
    };
    let x: Vec<M::Storage> = x.iter().map(|&v| M::Storage::from_f32(v)).collect();
    (M::Input::from_flat(&x), M::Labels::from_flat(y))
}

/// The parameters, flat, in `f32`.
fn flat<M: Model>(engine: &Engine<M>) -> Vec<f32> {
    let mut out = vec![M::Storage::from_f32(0.0); <M::Params as Params>::LEN];
    engine.params().unwrap().write_flat(&mut out);
    out.iter().map(|v| v.to_f32()).collect()
}

/// Steps `from..to` of the fixture's run, at the rates of `lrs`; the losses.
fn steps<M: Model>(engine: &mut Engine<M>, lrs: &[f32], from: usize, to: usize) -> Vec<f32> {
    (from..to)
        .map(|t| {
            let (x, y) = batch::<M>(t);
            engine.train_step(&x, &y, lrs[t]).unwrap()
        })
        .collect()
}

/// Steps `from..to` like [`steps`], as deferred steps; the losses, read once at the end.
fn deferred_steps<M: Model>(engine: &mut Engine<M>, lrs: &[f32], from: usize, to: usize) -> Vec<f32> {
    for (t, &lr) in lrs.iter().enumerate().take(to).skip(from) {
        let (x, y) = batch::<M>(t);
        engine.train_step_deferred(&x, &y, lr).unwrap();
    }
    engine.take_losses().unwrap()
}

/// The CPU as is; OpenCL through its automatic choice (for these shapes, the tiny kernel,
/// which runs the optimizer's step in its one launch), the fused kernel (its gradients,
/// then the update kernels) and the tiled kernels, as `tests/activations.rs` forces them.
fn kernel_paths(device: &Device) -> Vec<Device> {
    if device.is_cpu() {
        vec![device.clone()]
    } else {
        [KernelPath::Auto, KernelPath::Fused, KernelPath::Tiled].map(|p| device.with_kernel_path(p)).to_vec()
    }
}

/// Trains `M` with `optimizer` on each of `device`'s kernel paths, with immediate and with
/// deferred steps, through the fixture's steps and compares the losses and the final
/// parameters with the reference.
fn check<M: Model>(
    device: &Device,
    optimizer: M::Optimizer,
    lrs: &[f32],
    expected: &[f32],
    losses: &[f64],
    case: &str,
) {
    for device in kernel_paths(device) {
        for deferred in [false, true] {
            let what = format!("{case} ({}) on {device} (deferred: {deferred})", M::Storage::NAME);
            let mut engine = start::<M>(&device).unwrap();
            engine.set_optimizer(optimizer).unwrap();
            let ours = if deferred {
                deferred_steps(&mut engine, lrs, 0, reference::STEPS)
            } else {
                steps(&mut engine, lrs, 0, reference::STEPS)
            };
            let atol = if M::Storage::IS_F16 { ATOL_F16 } else { ATOL_F32 };
            let expected: Vec<f64> = expected.iter().map(|&v| f64::from(v)).collect();
            assert_close(&format!("{what}: losses"), &ours, losses, atol, 1e-4);
            let ours = flat(&engine);
            let worst = ours.iter().zip(&expected).map(|(&a, &b)| (f64::from(a) - b).abs()).fold(0.0, f64::max);
            crate::test_log!("{what}: parameters at most {worst:.2e} from the reference");
            assert_close(&format!("{what}: parameters"), &ours, &expected, atol, RTOL);
        }
    }
}

macro_rules! case {
    ($name:ident, $case:ident, $f32:ident, $f16:ident, $optimizer:expr) => {
        fn $name(device: &Device) {
            use reference::$case as r;
            let optimizer = $optimizer;
            check::<$f32>(device, optimizer, &r::LRS, &r::FINAL_F32, &r::LOSSES_F32, stringify!($case));
            check::<$f16>(device, optimizer, &r::LRS, &r::FINAL_F16, &r::LOSSES_F16, stringify!($case));
        }
    };
}

case!(sgd_with_weight_decay_matches_torch, sgd_decay, SgdMlp, SgdMlp16, Sgd { lr: 0.0, weight_decay: r::WEIGHT_DECAY });
case!(
    momentum_matches_torch,
    momentum,
    MomentumMlp,
    MomentumMlp16,
    Momentum { lr: 0.0, momentum: r::MOMENTUM, nesterov: r::NESTEROV, weight_decay: r::WEIGHT_DECAY }
);
case!(
    nesterov_with_weight_decay_matches_torch,
    nesterov_decay,
    MomentumMlp,
    MomentumMlp16,
    Momentum { lr: 0.0, momentum: r::MOMENTUM, nesterov: r::NESTEROV, weight_decay: r::WEIGHT_DECAY }
);
case!(
    adam_matches_torch,
    adam,
    AdamMlp,
    AdamMlp16,
    Adam { lr: 0.0, beta1: r::BETA1, beta2: r::BETA2, eps: r::EPS, weight_decay: r::WEIGHT_DECAY }
);
case!(
    adam_with_weight_decay_and_a_large_eps_matches_torch,
    adam_decay,
    AdamMlp,
    AdamMlp16,
    Adam { lr: 0.0, beta1: r::BETA1, beta2: r::BETA2, eps: r::EPS, weight_decay: r::WEIGHT_DECAY }
);
case!(
    adamw_matches_torch,
    adamw,
    AdamWMlp,
    AdamWMlp16,
    AdamW { lr: 0.0, beta1: r::BETA1, beta2: r::BETA2, eps: r::EPS, weight_decay: r::WEIGHT_DECAY }
);
case!(
    adamw_with_beta1_below_a_half_matches_torch,
    adamw_low_beta1,
    AdamWMlp,
    AdamWMlp16,
    AdamW { lr: 0.0, beta1: r::BETA1, beta2: r::BETA2, eps: r::EPS, weight_decay: r::WEIGHT_DECAY }
);

/// The fixture's wrong formulas are farther from the reference than the tolerances: the
/// comparisons above could fail.
fn the_tolerances_tell_the_wrong_formulas_apart() {
    let wrong = [
        (reference::sgd_decay::WRONG_F32, reference::sgd_decay::WRONG_F16),
        (reference::momentum::WRONG_F32, reference::momentum::WRONG_F16),
        (reference::nesterov_decay::WRONG_F32, reference::nesterov_decay::WRONG_F16),
        (reference::adam::WRONG_F32, reference::adam::WRONG_F16),
        (reference::adam_decay::WRONG_F32, reference::adam_decay::WRONG_F16),
        (reference::adamw::WRONG_F32, reference::adamw::WRONG_F16),
        (reference::adamw_low_beta1::WRONG_F32, reference::adamw_low_beta1::WRONG_F16),
    ];
    for (w32, w16) in wrong {
        assert!(f64::from(w32) > 4.0 * ATOL_F32 && f64::from(w16) > 4.0 * ATOL_F16, "{w32} {w16}");
    }
}

/// Hyperparameters of the Adam runs below.
fn adam() -> Adam {
    Adam { lr: 0.0, beta1: 0.9, beta2: 0.99, eps: 1e-6, weight_decay: 0.01 }
}

/// The bits of the parameters after steps `0..20` at the Adam case's rates.
fn uninterrupted<M: Model<Optimizer = Adam>>(device: &Device) -> Vec<u32> {
    let mut engine = start::<M>(device).unwrap();
    engine.set_optimizer(adam()).unwrap();
    steps(&mut engine, &reference::adam::LRS, 0, 20);
    flat(&engine).iter().map(|v| v.to_bits()).collect()
}

fn resume<M: Model<Optimizer = Adam>>(device: &Device, name: &str) {
    let whole = uninterrupted::<M>(device);
    let mut first = start::<M>(device).unwrap();
    first.set_optimizer(adam()).unwrap();
    steps(&mut first, &reference::adam::LRS, 0, 10);
    let path = scratch(name).join("checkpoint.safetensors");
    first.save(&path).unwrap();
    let mut second = Engine::<M>::load(device, &path).unwrap();
    second.set_optimizer(adam()).unwrap();
    steps(&mut second, &reference::adam::LRS, 10, 20);
    let resumed: Vec<u32> = flat(&second).iter().map(|v| v.to_bits()).collect();
    assert_eq!(resumed, whole, "{device}: save at step 10, load, 10 more steps");

    // Without the state (a fresh Adam from the loaded parameters) the run differs: the
    // comparison above could fail.
    let mut fresh = Engine::<M>::load(device, &path).unwrap();
    fresh.set_optimizer(adam()).unwrap();
    fresh.reset_optimizer().unwrap();
    steps(&mut fresh, &reference::adam::LRS, 10, 20);
    assert_ne!(flat(&fresh).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), whole);
    let _ = std::fs::remove_file(&path);
}

/// On each kernel path: on OpenCL, the state is read from the device at `save` and written
/// to it at `load`.
fn a_checkpoint_resumes_adam_bit_for_bit(device: &Device) {
    for device in kernel_paths(device) {
        resume::<AdamMlp>(&device, "optim-resume-f32.safetensors");
        resume::<AdamMlp16>(&device, "optim-resume-f16.safetensors");
    }
}

fn a_checkpoint_holds_the_state_as_named_tensors(device: &Device) {
    let mut engine = start::<MomentumMlp>(device).unwrap();
    engine.set_optimizer(Momentum { momentum: 0.9, ..Momentum::default() }).unwrap();
    steps(&mut engine, &reference::momentum::LRS, 0, 3);
    let path = scratch("optim-names").join("checkpoint.safetensors");
    engine.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for name in ["\"optim.step\"", "\"optim.momentum_buffer.w0\"", "\"optim.momentum_buffer.b1\""] {
        assert!(text.contains(name), "{name} missing from the header");
    }
    // A file with the state but without its step count is refused, naming it.
    let momentum_only = SgdMlp::load(device, &path);
    assert!(matches!(momentum_only, Err(Error::Checkpoint { .. })), "an SGD model refuses momentum's state");
    let _ = std::fs::remove_file(&path);
}

fn set_params_leaves_the_state_and_reset_clears_it(device: &Device) {
    let whole = uninterrupted::<AdamMlp>(device);
    let mut engine = start::<AdamMlp>(device).unwrap();
    engine.set_optimizer(adam()).unwrap();
    steps(&mut engine, &reference::adam::LRS, 0, 10);
    let params = engine.params().unwrap();
    engine.set_params(&params).unwrap();
    steps(&mut engine, &reference::adam::LRS, 10, 20);
    assert_eq!(flat(&engine).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), whole, "set_params kept the state");

    // Reset: the next steps are those of a new model with these parameters.
    let mut reset = start::<AdamMlp>(device).unwrap();
    reset.set_optimizer(adam()).unwrap();
    steps(&mut reset, &reference::adam::LRS, 0, 10);
    reset.reset_optimizer().unwrap();
    let mut fresh = Engine::<AdamMlp>::with_params(device, reset.params().unwrap()).unwrap();
    fresh.set_optimizer(adam()).unwrap();
    steps(&mut reset, &reference::adam::LRS, 10, 13);
    steps(&mut fresh, &reference::adam::LRS, 10, 13);
    assert_eq!(flat(&reset), flat(&fresh));
}

/// A step refused for overflow leaves the parameters and the state (moments and step
/// count, which the later steps' bias correction reads) as they were: the run goes on as if
/// it had not been tried. Immediate and deferred, on each kernel path.
fn a_refused_step_leaves_parameters_and_state_unchanged(device: &Device) {
    fn run<M: Model<Optimizer = Adam>>(device: &Device, huge: f32, deferred: bool) {
        let what = format!("{} on {device} (deferred: {deferred})", M::Storage::NAME);
        let whole = uninterrupted::<M>(device);
        let mut engine = start::<M>(device).unwrap();
        engine.set_optimizer(adam()).unwrap();
        steps(&mut engine, &reference::adam::LRS, 0, 10);
        let (x, y) = batch::<M>(10);
        let before = flat(&engine);
        let err = if deferred {
            engine.train_step_deferred(&x, &y, huge).unwrap();
            engine.take_losses().unwrap_err()
        } else {
            engine.train_step(&x, &y, huge).unwrap_err()
        };
        assert!(matches!(err, Error::UpdateOverflow { .. }), "{what}: {err}");
        assert_eq!(flat(&engine), before, "{what}");
        steps(&mut engine, &reference::adam::LRS, 10, 20);
        assert_eq!(flat(&engine).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), whole, "{what}");
    }
    for device in kernel_paths(device) {
        for deferred in [false, true] {
            run::<AdamMlp>(&device, 3e38, deferred);
            run::<AdamMlp16>(&device, 1e6, deferred);
        }
    }
}

/// A step after new parameters is checked against them, not against what the earlier
/// steps knew of the old ones (the CPU skips the check of a step proven from the last
/// step's largest values): with the last bias at 3e38 (the softmax unchanged) and a weight
/// decay of 0.01, the gradient's square overflows, and the step is refused.
fn a_step_after_new_parameters_is_checked_against_them(device: &Device) {
    for device in kernel_paths(device) {
        let mut engine = start::<AdamMlp>(&device).unwrap();
        engine.set_optimizer(adam()).unwrap();
        steps(&mut engine, &reference::adam::LRS, 0, 10);
        let mut huge = flat(&engine);
        let n = huge.len();
        huge[n - 3..].fill(3e38);
        engine.set_params(&<AdamMlp as Model>::Params::from_flat(&huge)).unwrap();
        let (x, y) = batch::<AdamMlp>(10);
        let err = engine.train_step(&x, &y, 1e-3).unwrap_err();
        assert!(matches!(err, Error::UpdateOverflow { .. }), "on {device}: {err}");
        assert_eq!(flat(&engine), huge, "on {device}");
    }
}

/// Out-of-range hyperparameters are typed errors, and leave the old ones in place.
fn hyperparameters_out_of_range_are_refused(device: &Device) {
    let mut adam_model = start::<AdamMlp>(device).unwrap();
    for bad in [
        Adam { beta1: 1.0, ..Adam::default() },
        Adam { beta2: -0.1, ..Adam::default() },
        Adam { eps: f32::NAN, ..Adam::default() },
        Adam { weight_decay: -1.0, ..Adam::default() },
        Adam { lr: f32::INFINITY, ..Adam::default() },
    ] {
        let err = adam_model.set_optimizer(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidHyperparameter { optimizer: "adam", .. }), "{err}");
    }
    assert_eq!(adam_model.optimizer(), Adam::default());
    let mut momentum = start::<MomentumMlp>(device).unwrap();
    let err = momentum.set_optimizer(Momentum { momentum: 0.0, nesterov: true, ..Momentum::default() }).unwrap_err();
    assert!(matches!(err, Error::InvalidHyperparameter { name: "momentum", .. }), "{err}");
}

/// PyTorch's defaults.
fn the_defaults_are_pytorchs() {
    assert_eq!(Sgd::default(), Sgd { lr: 1e-3, weight_decay: 0.0 });
    assert_eq!(Momentum::default(), Momentum { lr: 1e-3, momentum: 0.0, nesterov: false, weight_decay: 0.0 });
    assert_eq!(Adam::default(), Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
    assert_eq!(AdamW::default(), AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 });
    assert_eq!(<AdamMlp as Model>::OPTIMIZER_BYTES, 2 * 4 * <AdamMlpParams as Params>::LEN + 4 + 20);
    assert_eq!(<SgdMlp as Model>::OPTIMIZER_BYTES, 4 + 8);
    assert_eq!(<Adam as Optimizer>::MOMENTS, 2);
}

/// The `no_std` core (`Cpu`) and the CPU backend take the same Adam steps, bit for bit.
fn the_core_and_the_backend_take_the_same_adam_steps() {
    let params = start::<AdamMlp>(&Device::cpu()).unwrap().params().unwrap();
    let mut core = tensorbridge::cpu::Cpu::<AdamMlp>::with_params(&params).unwrap();
    core.set_optimizer(adam()).unwrap();
    let mut engine = start::<AdamMlp>(&Device::cpu()).unwrap();
    engine.set_optimizer(adam()).unwrap();
    for t in 0..12 {
        let (x, y) = batch::<AdamMlp>(t);
        let lr = reference::adam::LRS[t];
        assert_eq!(core.train_step(&x, &y, lr).unwrap().to_bits(), engine.train_step(&x, &y, lr).unwrap().to_bits());
    }
    assert_eq!(core.params(), engine.params().unwrap());
}

/// The fixture's four batches as one dataset of 24 rows (four batches of the model's 6).
fn dataset() -> tensorbridge::data::Dataset {
    let xs = [&reference::X0, &reference::X1, &reference::X2, &reference::X3];
    let ys = [&reference::Y0, &reference::Y1, &reference::Y2, &reference::Y3];
    // Each batch column-major [6 x 5]: row r of batch k is dataset row 6k + r.
    let features = tensorbridge::nalgebra::DMatrix::from_fn(24, 5, |row, col| xs[row / 6][col * 6 + row % 6]);
    let labels = (0..24).map(|row| ys[row / 6][row % 6]).collect();
    tensorbridge::data::Dataset::new(features, labels).unwrap()
}

/// `fit_schedule` with a per-step list and shuffling off takes exactly the steps of a loop
/// of `train_step`s at those rates, bit for bit.
fn fit_takes_an_optimizer_and_a_rate_per_step() {
    use tensorbridge::train::{FitOptions, Schedule, Stopped};
    let rates = &reference::adam::LRS[..20];
    let mut fitted = start::<AdamMlp>(&Device::cpu()).unwrap();
    let options = FitOptions::new().progress(false).shuffle(false);
    let history = fitted.fit_schedule(&dataset(), adam(), 5, Schedule::per_step(rates), 0, options).unwrap();
    assert_eq!((history.epochs.len(), history.stopped), (5, Stopped::Completed));
    assert_eq!(history.epochs[4].learning_rate, rates[19]);
    assert_eq!(fitted.optimizer(), adam(), "the optimizer stays set");
    let whole = uninterrupted::<AdamMlp>(&Device::cpu());
    assert_eq!(flat(&fitted).iter().map(|v| v.to_bits()).collect::<Vec<_>>(), whole);

    // A closure gives the same rates.
    let mut closure = start::<AdamMlp>(&Device::cpu()).unwrap();
    let options = FitOptions::new().progress(false).shuffle(false);
    let schedule = Schedule::from_fn(|step, _| rates[step]);
    closure.fit_schedule(&dataset(), adam(), 5, schedule, 0, options).unwrap();
    assert_eq!(flat(&closure), flat(&fitted));

    // A list shorter than the run: refused before any step.
    let mut short = start::<AdamMlp>(&Device::cpu()).unwrap();
    let options = FitOptions::new().progress(false);
    let err = short.fit_schedule(&dataset(), adam(), 6, Schedule::per_step(rates), 0, options).unwrap_err();
    assert!(matches!(err, Error::ScheduleTooShort { rates: 20, steps: 24 }), "{err}");
    assert_eq!(flat(&short), reference::P0.to_vec());
}

/// `on_epoch` stops training early by returning `Flow::Stop`; the history says so. A
/// callback returning `()` (the old form) still compiles and never stops.
fn on_epoch_stops_training_early() {
    use tensorbridge::train::{FitOptions, Flow, Schedule, Stopped};
    let mut model = start::<AdamMlp>(&Device::cpu()).unwrap();
    let options =
        FitOptions::new().progress(false).on_epoch(|e| if e.epoch == 3 { Flow::Stop } else { Flow::Continue });
    let history = model.fit_schedule(&dataset(), adam(), 10, Schedule::constant(0.01), 1, options).unwrap();
    assert_eq!(history.epochs.len(), 3);
    assert_eq!(history.stopped, Stopped::Early { epoch: 3 });

    let mut seen = 0;
    let options = FitOptions::new().progress(false).on_epoch(|_| seen += 1);
    let history = model.fit_with(&dataset(), &[0.01; 4], 1, options).unwrap();
    assert_eq!((history.epochs.len(), history.stopped, seen), (4, Stopped::Completed, 4));
}

/// The largest `|a - b|` over two runs' parameters.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&a, &b)| (a - b).abs()).fold(0.0, f32::max)
}

/// OpenCL's kernels (each path) and the CPU backend take the same 25 steps of each
/// optimizer within rounding: `f32` within `ATOL_F32` (the kernels' division, square root and
/// contracted multiply-adds may differ from the CPU's by an ulp or two), `f16` within
/// `ATOL_F16` (a few flipped roundings). A wrong formula is at least 0.016 away from the
/// reference (the fixture's `WRONG_*`), so from the CPU's run too.
fn opencl_and_the_cpu_take_the_same_steps(device: &Device) {
    fn run<M: Model>(device: &Device, optimizer: M::Optimizer, lrs: &[f32]) {
        let mut cpu = start::<M>(&Device::cpu()).unwrap();
        cpu.set_optimizer(optimizer).unwrap();
        steps(&mut cpu, lrs, 0, reference::STEPS);
        let atol = if M::Storage::IS_F16 { ATOL_F16 } else { ATOL_F32 } as f32;
        for device in kernel_paths(device) {
            let mut cl = start::<M>(&device).unwrap();
            cl.set_optimizer(optimizer).unwrap();
            steps(&mut cl, lrs, 0, reference::STEPS);
            let worst = worst(&flat(&cl), &flat(&cpu));
            let what = format!("{} ({}) on {device}", <M::Optimizer as Optimizer>::NAME, M::Storage::NAME);
            crate::test_log!("{what}: at most {worst:.2e} from the CPU's parameters");
            assert!(worst <= atol, "{what}: {worst} from the CPU's parameters");
        }
    }
    use reference::{adam as a, adamw as w, momentum as mo, nesterov_decay as n, sgd_decay as s};
    let sgd = Sgd { lr: 0.0, weight_decay: s::WEIGHT_DECAY };
    let momentum = Momentum { lr: 0.0, momentum: mo::MOMENTUM, nesterov: mo::NESTEROV, weight_decay: 0.0 };
    let nesterov = Momentum { lr: 0.0, momentum: n::MOMENTUM, nesterov: n::NESTEROV, weight_decay: n::WEIGHT_DECAY };
    let adam = Adam { lr: 0.0, beta1: a::BETA1, beta2: a::BETA2, eps: a::EPS, weight_decay: a::WEIGHT_DECAY };
    let adamw = AdamW { lr: 0.0, beta1: w::BETA1, beta2: w::BETA2, eps: w::EPS, weight_decay: w::WEIGHT_DECAY };
    run::<SgdMlp>(device, sgd, &s::LRS);
    run::<SgdMlp16>(device, sgd, &s::LRS);
    run::<MomentumMlp>(device, momentum, &mo::LRS);
    run::<MomentumMlp>(device, nesterov, &n::LRS);
    run::<MomentumMlp16>(device, nesterov, &n::LRS);
    run::<AdamMlp>(device, adam, &a::LRS);
    run::<AdamMlp16>(device, adam, &a::LRS);
    run::<AdamWMlp>(device, adamw, &w::LRS);
    run::<AdamWMlp16>(device, adamw, &w::LRS);
}

crate::tests! {
    device sgd_with_weight_decay_matches_torch,
    device momentum_matches_torch,
    device nesterov_with_weight_decay_matches_torch,
    device adam_matches_torch,
    device adam_with_weight_decay_and_a_large_eps_matches_torch,
    device adamw_matches_torch,
    device adamw_with_beta1_below_a_half_matches_torch,
    plain the_tolerances_tell_the_wrong_formulas_apart,
    device a_checkpoint_resumes_adam_bit_for_bit,
    device a_checkpoint_holds_the_state_as_named_tensors,
    device set_params_leaves_the_state_and_reset_clears_it,
    device a_refused_step_leaves_parameters_and_state_unchanged,
    device a_step_after_new_parameters_is_checked_against_them,
    device hyperparameters_out_of_range_are_refused,
    plain the_defaults_are_pytorchs,
    plain the_core_and_the_backend_take_the_same_adam_steps,
    plain fit_takes_an_optimizer_and_a_rate_per_step,
    plain on_epoch_stops_training_early,
    opencl opencl_and_the_cpu_take_the_same_steps,
}
