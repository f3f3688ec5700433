//! The tiny kernel (`cl/tiny_step.cl`): tiny models' steps with the batch by value run in
//! one work-item, and deferred steps go to the device in groups of up to four a launch.
//! What must hold:
//! - it is the path such a model takes (its profile names it), and the fused work-group
//!   kernel stays the path of models it does not fit;
//! - grouped deferred steps compute, bit for bit, what one launch per step of the fused
//!   work-group kernel computes (`KernelPath::Fused`), whatever call sends a group: every
//!   loss, every parameter, in order, with padded batches and changing rates among them,
//!   `f32` and `f16` storage; and agree with the CPU backend;
//! - a step inside a group whose update overflows, or whose loss is not finite, is
//!   skipped alone, and reported as on the other kernels;
//! - runs longer than the device's loss record (1024 steps) lose no loss;
//! - an optimizer with moments (momentum, Adam, AdamW) steps there too, its state and
//!   hyperparameters in the kernel's buffer: the same bits as the fused kernel's gradients
//!   and update kernels, hyperparameters changed between the steps of a group, and a refused
//!   step in a group leaves the state as if it had not been tried.

use crate::support::{assert_agree, noise, param_bits};
use tensorbridge::optim::{Adam, AdamW, Momentum};
use tensorbridge::{Device, Engine, Error, HostTensor, KernelPath, Model, StorageElement};

tensorbridge::model! {
    /// The seed's shape: four steps a launch (13 words a step).
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// Two hidden layers, odd sizes: 21 words a step, so three steps a launch.
    pub struct Mlp { batch: 3, features: 5, classes: 7, hidden: [6, 4] }
}
tensorbridge::model! {
    /// f16 storage, an odd number of halves (8 + 3 + 3 words a step).
    pub struct Odd16 { batch: 3, features: 5, classes: 7, storage: f16 }
}
tensorbridge::model! {
    /// The seed's shape with Adam.
    pub struct SeedAdam { batch: 2, features: 4, classes: 2, optimizer: adam }
}
tensorbridge::model! {
    /// `Mlp` with momentum.
    pub struct MlpMomentum { batch: 3, features: 5, classes: 7, hidden: [6, 4], optimizer: momentum }
}
tensorbridge::model! {
    /// `Odd16` with AdamW.
    pub struct Odd16AdamW { batch: 3, features: 5, classes: 7, storage: f16, optimizer: adamw }
}
tensorbridge::model! {
    /// A batch too large to go by value: the fused work-group kernel.
    pub struct Wider { batch: 40, features: 3, classes: 2 }
}

fn batch<M: Model>(seed: u64, scale: f32) -> (M::Input, M::Labels) {
    let x: Vec<M::Storage> =
        (0..M::BATCH * M::FEATURES).map(|k| M::Storage::from_f32(noise(seed, k) * scale)).collect();
    let c = M::CLASSES as u32;
    let y: Vec<u32> = (0..M::BATCH).map(|r| ((noise(seed ^ 0x5EED, r) + 1.0) * 500.0) as u32 % c).collect();
    (M::Input::from_flat(&x), M::Labels::from_flat(&y))
}

/// The stage names of one profiled step of `M` on `device`.
fn stages<M: Model>(device: &Device) -> Vec<String> {
    let mut model = Engine::<M>::with_seed(&device.with_profiling(true), 1).unwrap();
    let (x, y) = batch::<M>(1, 1.0);
    model.profile_step(&x, &y, 0.1).unwrap().stages.into_iter().map(|s| s.name).collect()
}

fn the_tiny_kernel_is_the_path_of_tiny_models_only(device: &Device) {
    assert_eq!(stages::<Seed>(device), ["tiny"]);
    assert_eq!(stages::<Mlp>(device), ["tiny"]);
    assert_eq!(stages::<Odd16>(device), ["tiny"]);
    assert_eq!(stages::<SeedAdam>(device), ["tiny"]);
    assert_eq!(stages::<MlpMomentum>(device), ["tiny"]);
    assert_eq!(stages::<Odd16AdamW>(device), ["tiny"]);
    // Asked for by name, the fused work-group kernel; a batch too large for the
    // arguments, the same.
    assert_eq!(stages::<Seed>(&device.with_kernel_path(KernelPath::Fused)), ["fused"]);
    assert_eq!(stages::<Wider>(device), ["upload", "fused"]);
}

/// Everything a model shows through a sequence of deferred steps (runs of 1 to 9, with
/// padded batches and two rates among them) and the calls that come between the runs, as
/// bits. A run's steps are sent in groups; each call after it must see all of them.
/// With `optimizers`, the model's optimizer is set to the first, and to the second from the
/// 18th step (which joins a group behind the 16th and 17th, steps of the first: each model
/// here runs three or four steps a launch, and the 16th starts a group).
fn trace<M: Model>(device: &Device, optimizers: Option<[M::Optimizer; 2]>) -> Vec<u32> {
    let mut model = Engine::<M>::with_seed(device, 11).unwrap();
    let mut seen = Vec::new();
    let mut step = 0u64;
    for (round, run) in [1usize, 2, 3, 4, 5, 7, 9, 3, 6, 2].into_iter().enumerate() {
        for _ in 0..run {
            step += 1;
            if let Some(optimizers) = optimizers.filter(|_| step == 1 || step == 18) {
                model.set_optimizer(optimizers[usize::from(step == 18)]).unwrap();
            }
            let (x, y) = batch::<M>(step, 2.0);
            let lr = if step.is_multiple_of(3) { 0.2 } else { 0.05 };
            if step % 4 == 1 {
                model.train_step_deferred_rows(&x, &y, 1 + (step as usize) % M::BATCH, lr).unwrap();
            } else {
                model.train_step_deferred(&x, &y, lr).unwrap();
            }
        }
        let (x, y) = batch::<M>(1000 + round as u64, 2.0);
        match round % 8 {
            0 => seen.extend(param_bits(&model.params().unwrap())),
            1 => seen.extend(model.take_losses().unwrap().iter().map(|l| l.to_bits())),
            2 => seen.push(model.train_step(&x, &y, 0.1).unwrap().to_bits()),
            3 => seen.push(model.loss(&x, &y).unwrap().to_bits()),
            4 => seen.extend(model.logits(&x).unwrap().as_flat().iter().map(|v| v.to_bits())),
            5 => {
                let (loss, grads) = model.gradients(&x, &y).unwrap();
                seen.push(loss.to_bits());
                seen.extend(param_bits(&grads));
            }
            6 => {
                // Set while steps wait: they run first, then the new parameters replace
                // what they made.
                let before = Engine::<M>::with_seed(device, 99).unwrap().params().unwrap();
                model.set_params(&before).unwrap();
                seen.extend(param_bits(&model.params().unwrap()));
            }
            _ => seen.extend(model.predict(&x).unwrap().as_flat().iter().copied()),
        }
    }
    seen.extend(model.take_losses().unwrap().iter().map(|l| l.to_bits()));
    seen.extend(param_bits(&model.params().unwrap()));
    seen
}

fn grouped<M: Model>(device: &Device, optimizers: Option<[M::Optimizer; 2]>) {
    let tiny = trace::<M>(device, optimizers);
    let fused = trace::<M>(&device.with_kernel_path(KernelPath::Fused), optimizers);
    assert_eq!(tiny.len(), fused.len(), "{}", M::NAME);
    if let Some(k) = tiny.iter().zip(&fused).position(|(a, b)| a != b) {
        panic!("{}: value {k} differs: tiny {:#x}, fused {:#x}", M::NAME, tiny[k], fused[k]);
    }
    let cpu = trace::<M>(&Device::cpu(), optimizers);
    // The class predictions are small integers; everything else is f32 bits.
    let f = |v: &[u32]| v.iter().map(|&b| if b < 16 { b as f32 } else { f32::from_bits(b) }).collect::<Vec<_>>();
    let tol = if M::Storage::IS_F16 { 2e-2 } else { 1e-3 };
    assert_agree(&format!("{} vs cpu", M::NAME), &f(&tiny), &f(&cpu), tol, tol);
}

fn grouped_deferred_steps_are_the_steps_one_launch_each(device: &Device) {
    grouped::<Seed>(device, None);
    grouped::<Mlp>(device, None);
    grouped::<Odd16>(device, None);
    let adam = Adam { eps: 1e-6, weight_decay: 0.01, ..Adam::default() };
    grouped::<SeedAdam>(device, Some([adam, Adam { beta1: 0.5, beta2: 0.9, ..adam }]));
    let momentum = Momentum { momentum: 0.9, ..Momentum::default() };
    grouped::<MlpMomentum>(device, Some([momentum, Momentum { nesterov: true, weight_decay: 0.1, ..momentum }]));
    grouped::<Odd16AdamW>(device, Some([AdamW::default(), AdamW { weight_decay: 0.5, ..AdamW::default() }]));
}

/// Deferred Adam steps on the batches and at the rates of `steps`, then what `take_losses`
/// says and the parameters' bits.
fn adam_run(device: &Device, steps: &[(u64, f32)]) -> (String, Vec<u32>) {
    let mut model = Engine::<SeedAdam>::with_seed(device, 1).unwrap();
    for &(k, lr) in steps {
        let (x, y) = batch::<SeedAdam>(k, 40.0);
        model.train_step_deferred(&x, &y, lr).unwrap();
    }
    let taken = match model.take_losses() {
        Ok(losses) => format!("{} losses", losses.len()),
        Err(err) => format!("{err:?}"),
    };
    (taken, param_bits(&model.params().unwrap()))
}

/// An Adam step refused inside a group (its update overflows at the rate 3e38) changes
/// neither the parameters nor the moments nor the step count: the run equals the one
/// without that step, and the fused kernel's and the CPU's.
fn a_refused_adam_step_in_a_group_leaves_the_state(device: &Device) {
    let steps = [(0, 0.01), (1, 0.01), (2, 3e38), (3, 0.01), (4, 0.01), (5, 0.01)];
    let (tiny, tiny_params) = adam_run(device, &steps);
    assert!(tiny.starts_with("UpdateOverflow"), "{tiny}");
    assert_eq!((tiny.clone(), tiny_params.clone()), adam_run(&device.with_kernel_path(KernelPath::Fused), &steps));
    let without: Vec<_> = steps.iter().copied().filter(|&(k, _)| k != 2).collect();
    assert_eq!(adam_run(device, &without).1, tiny_params, "the refused step changed the state");
    assert_eq!(adam_run(&Device::cpu(), &steps).0, tiny);
}

/// Deferred steps with `lrs`, on batches of `scale`, then what `take_losses` says and the
/// parameters' bits.
fn run_with_rates<M: Model>(device: &Device, lrs: &[f32], scale: &dyn Fn(usize) -> f32) -> (String, Vec<u32>) {
    // A seed whose initial parameters make the huge batch's logits overflow in
    // `a_failing_step_in_a_group_is_skipped_alone` (seed 1, 11 and 26 of 0-29 do on the CPU).
    let mut model = Engine::<M>::with_seed(device, 1).unwrap();
    for (k, &lr) in lrs.iter().enumerate() {
        let (x, y) = batch::<M>(k as u64, scale(k));
        model.train_step_deferred(&x, &y, lr).unwrap();
    }
    let taken = match model.take_losses() {
        Ok(losses) => format!("{} losses", losses.len()),
        Err(err) => format!("{err:?}"),
    };
    (taken, param_bits(&model.params().unwrap()))
}

fn a_failing_step_in_a_group_is_skipped_alone(device: &Device) {
    // The third step's update overflows f32 (rate f32::MAX on gradients far above 1).
    let lrs = [0.1, 0.1, f32::MAX, 0.1, 0.1, 0.1];
    let scale = |_| 40.0;
    let (tiny, tiny_params) = run_with_rates::<Seed>(device, &lrs, &scale);
    assert!(tiny.starts_with("UpdateOverflow"), "{tiny}");
    let fused = run_with_rates::<Seed>(&device.with_kernel_path(KernelPath::Fused), &lrs, &scale);
    assert_eq!((tiny.clone(), tiny_params.clone()), fused);
    // The same five steps without the failing one: the same parameters.
    let skipped = [0.1, 0.1, 0.0, 0.1, 0.1, 0.1];
    let (_, without) = run_with_rates::<Seed>(device, &skipped, &scale);
    assert_eq!(tiny_params, without, "the failing step changed the parameters");
    let (cpu, _) = run_with_rates::<Seed>(&Device::cpu(), &lrs, &scale);
    assert_eq!(tiny, cpu);

    // f16: the second step's update leaves f16's range.
    let lrs = [0.1, 1e6, 0.1, 0.1, 0.1];
    let (tiny, tiny_params) = run_with_rates::<Odd16>(device, &lrs, &|_| 8.0);
    assert!(tiny.starts_with("UpdateOverflow"), "{tiny}");
    assert_eq!(
        (tiny, tiny_params),
        run_with_rates::<Odd16>(&device.with_kernel_path(KernelPath::Fused), &lrs, &|_| 8.0)
    );

    // The fourth step's logits overflow: its loss is not finite, its update skipped.
    let lrs = [0.1; 6];
    let huge = |k| if k == 3 { 3e38 } else { 1.0 };
    let (tiny, tiny_params) = run_with_rates::<Seed>(device, &lrs, &huge);
    assert!(tiny.starts_with("NonFiniteLoss"), "{tiny}");
    assert_eq!((tiny, tiny_params), run_with_rates::<Seed>(&device.with_kernel_path(KernelPath::Fused), &lrs, &huge));
}

fn a_long_deferred_run_loses_no_loss(device: &Device) {
    let run = |device: &Device| {
        let mut model = Engine::<Seed>::with_seed(device, 3).unwrap();
        let mut losses = Vec::new();
        for k in 0..2600u64 {
            let (x, y) = batch::<Seed>(k % 17, 1.0);
            model.train_step_deferred(&x, &y, 0.01).unwrap();
            if k == 1500 {
                losses.extend(model.take_losses().unwrap().iter().map(|l| l.to_bits()));
            }
        }
        losses.extend(model.take_losses().unwrap().iter().map(|l| l.to_bits()));
        (losses, param_bits(&model.params().unwrap()))
    };
    let tiny = run(device);
    assert_eq!(tiny.0.len(), 2600);
    assert!(tiny == run(&device.with_kernel_path(KernelPath::Fused)), "tiny and fused differ");
}

fn errors_in_inputs_are_refused_before_a_step_joins_a_group(device: &Device) {
    let mut model = Engine::<Seed>::with_seed(device, 2).unwrap();
    let (x, y) = batch::<Seed>(1, 1.0);
    model.train_step_deferred(&x, &y, 0.1).unwrap();
    let bad = <Seed as Model>::Labels::from_flat(&[0, 7]);
    assert!(matches!(model.train_step_deferred(&x, &bad, 0.1), Err(Error::LabelOutOfRange { .. })));
    assert!(matches!(model.train_step_deferred(&x, &y, f32::NAN), Err(Error::InvalidLearningRate { .. })));
    model.train_step_deferred(&x, &y, 0.1).unwrap();
    assert_eq!(model.take_losses().unwrap().len(), 2, "only the two valid steps ran");
}

crate::tests! {
    opencl the_tiny_kernel_is_the_path_of_tiny_models_only,
    opencl grouped_deferred_steps_are_the_steps_one_launch_each,
    opencl a_failing_step_in_a_group_is_skipped_alone,
    opencl a_refused_adam_step_in_a_group_leaves_the_state,
    opencl a_long_deferred_run_loses_no_loss,
    opencl errors_in_inputs_are_refused_before_a_step_joins_a_group,
}
