//! `storage: f16` on OpenCL (PoCL in CI, which has no `cl_khr_fp16`: the kernels only
//! `vload_half` / `vstore_half_rte`), on the fused and the tiled kernels:
//! - against the `f32` model on the f16-rounded values (the same arithmetic on the same
//!   numbers): `1e-5 + 1e-4 * |value|`, as the f32 differential tests;
//! - against the CPU backend's `f16` model: logits, losses and gradients to
//!   `1e-5 + 1e-4 * |value|`; parameters after steps, which both round to f16 after every
//!   update, to `1e-4 + 2e-3 * |value|` (when the two f32 results of an update straddle a
//!   rounding boundary of f16, they round one f16 step, 2^-10 relative, apart); after 150
//!   steps, where such a step feeds back into later updates, to `1e-3 + 1e-2 * |value|`
//!   (measured on PoCL: bit-identical for the small models; up to 4e-4 for the wide one, whose
//!   sums of 301 products round differently in the two backends, so that single-ulp
//!   flips of the f16 rounding accumulate like a random walk over the steps);
//!
//! The first runs on every device (on the CPU backend, f16 and f32 agree exactly); training
//! an `f16` MLP to perfect accuracy on blobs is one test for every device in
//! `tests/f16_storage.rs`.

use crate::support::{assert_agree as assert_close, noise, paths};
use tensorbridge::half::f16;
use tensorbridge::{Device, Engine, HostTensor, Model, Params};

tensorbridge::model! {
    /// The seed's shape in f16.
    pub struct Seed16 { batch: 2, features: 4, classes: 2, storage: f16 }
}
tensorbridge::model! {
    /// Odd sizes (an odd number of halves in the batch), f16.
    pub struct Odd16 { batch: 3, features: 5, classes: 7, storage: f16 }
}
tensorbridge::model! {
    /// Odd sizes, f32: the reference of `Odd16`.
    pub struct Odd32 { batch: 3, features: 5, classes: 7 }
}
tensorbridge::model! {
    /// Two hidden layers, f16.
    pub struct Mlp16 { batch: 3, features: 5, classes: 7, hidden: [6, 4], storage: f16 }
}
tensorbridge::model! {
    /// Two hidden layers, f32.
    pub struct Mlp32 { batch: 3, features: 5, classes: 7, hidden: [6, 4] }
}
tensorbridge::model! {
    /// Several tiles in every dimension; tiled kernels under Auto.
    pub struct Wide16 { batch: 40, features: 301, classes: 10, hidden: [20], storage: f16 }
}
tensorbridge::model! {
    /// The same in f32.
    pub struct Wide32 { batch: 40, features: 301, classes: 10, hidden: [20] }
}

const ABS: f32 = 1e-5;
const REL: f32 = 1e-4;

fn f16s(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn widen(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn input<M: Model<Storage = f16>>(seed: u64) -> M::Input {
    M::Input::from_flat(&f16s(&(0..M::BATCH * M::FEATURES).map(|k| noise(seed, k) * 2.0).collect::<Vec<_>>()))
}

fn labels<M: Model>(seed: u64) -> M::Labels {
    M::Labels::from_flat(
        &(0..M::BATCH)
            .map(|k| ((noise(seed + 99, k) + 1.0) * 0.5 * M::CLASSES as f32) as u32 % M::CLASSES as u32)
            .collect::<Vec<_>>(),
    )
}

fn flat<P: Params>(p: &P) -> Vec<f32> {
    let mut out = vec![P::Elem::default(); P::LEN];
    p.write_flat(&mut out);
    out.iter().map(|v| tensorbridge::StorageElement::to_f32(*v)).collect()
}

/// The f16 model against the f32 model on the same device fed the same (widened) values:
/// equal on the CPU backend (it widens f16 exactly and runs the f32 arithmetic), within
/// `ABS + REL * |value|` on OpenCL (the two programs may sum in other orders).
fn agrees_with_f32_on_rounded_values<M16, M32>(device: &Device, seed: u64)
where
    M16: Model<Storage = f16>,
    M32: Model<Storage = f32>,
{
    let p16 = f16s(&(0..M16::Params::LEN).map(|k| noise(seed + 1, k) * 0.5).collect::<Vec<_>>());
    let x16 = input::<M16>(seed);
    let y = labels::<M16>(seed);
    let m16 = Engine::<M16>::with_params(device, M16::Params::from_flat(&p16)).unwrap();
    let m32 = Engine::<M32>::with_params(device, M32::Params::from_flat(&widen(&p16))).unwrap();
    let x32 = M32::Input::from_flat(&widen(x16.as_flat()));
    let y32 = M32::Labels::from_flat(y.as_flat());
    let what = |call: &str| format!("{} vs {} on {device}: {call}", M16::NAME, M32::NAME);
    let (abs, rel) = if device.is_cpu() { (0.0, 0.0) } else { (ABS, REL) };
    assert_close(&what("logits"), m16.logits(&x16).unwrap().as_flat(), m32.logits(&x32).unwrap().as_flat(), abs, rel);
    let ((l16, g16), (l32, g32)) = (m16.gradients(&x16, &y).unwrap(), m32.gradients(&x32, &y32).unwrap());
    assert_close(&what("loss"), &[l16], &[l32], abs, rel);
    assert_close(&what("gradients"), &flat(&g16), &flat(&g32), abs, rel);
}

/// Every call of an f16 model, on `device` and on the CPU.
fn every_call_agrees<M: Model<Storage = f16>>(device: &Device, seed: u64) {
    let mut cl = Engine::<M>::with_seed(device, seed).expect("model on OpenCL");
    let mut cpu = Engine::<M>::with_seed(&Device::cpu(), seed).expect("model on the CPU");
    let (x, y) = (input::<M>(seed), labels::<M>(seed));
    let what = |call: &str| format!("{} on {device}: {call}", M::NAME);
    let rows = M::BATCH.div_ceil(2);

    assert_eq!(flat(&cl.params().unwrap()), flat(&cpu.params().unwrap()), "{}", what("params"));
    let xd = cl.to_device(&x).unwrap();
    assert_eq!(xd.to_host().unwrap().as_flat(), x.as_flat(), "{}", what("f16 tensor round trip"));
    let expected = cpu.logits(&x).unwrap();
    assert_close(&what("forward"), cl.forward(&xd).unwrap().to_host().unwrap().as_flat(), expected.as_flat(), ABS, REL);
    assert_close(&what("logits"), cl.logits(&x).unwrap().as_flat(), expected.as_flat(), ABS, REL);
    assert_close(
        &what("loss_rows"),
        &[cl.loss_rows(&x, &y, rows).unwrap()],
        &[cpu.loss_rows(&x, &y, rows).unwrap()],
        ABS,
        REL,
    );
    let ((l1, g1), (l2, g2)) = (cl.gradients(&x, &y).unwrap(), cpu.gradients(&x, &y).unwrap());
    assert_close(&what("gradients loss"), &[l1], &[l2], ABS, REL);
    assert_close(&what("gradients"), &flat(&g1), &flat(&g2), ABS, REL);

    let (s1, s2) = (cl.train_step(&x, &y, 0.1).unwrap(), cpu.train_step(&x, &y, 0.1).unwrap());
    assert_close(&what("train_step loss"), &[s1], &[s2], ABS, REL);
    assert_close(&what("params after a step"), &flat(&cl.params().unwrap()), &flat(&cpu.params().unwrap()), 1e-4, 2e-3);

    // set_params / with_params: f16 values come back bit for bit.
    let fresh = M::Params::from_flat(&f16s(&(0..M::Params::LEN).map(|k| noise(seed + 7, k)).collect::<Vec<_>>()));
    cl.set_params(&fresh).unwrap();
    cpu.set_params(&fresh).unwrap();
    assert_eq!(cl.params().unwrap(), fresh, "{}", what("set_params round trip"));
    assert_eq!(Engine::<M>::with_params(device, &fresh).unwrap().params().unwrap(), fresh, "{}", what("with_params"));

    let mut expected_losses = Vec::new();
    for k in 0..5 {
        let (xk, yk) = (input::<M>(seed + 100 + k), labels::<M>(seed + 100 + k));
        cl.train_step_deferred(&xk, &yk, 0.05).unwrap();
        expected_losses.push(cpu.train_step(&xk, &yk, 0.05).unwrap());
    }
    assert_close(&what("take_losses"), &cl.take_losses().unwrap(), &expected_losses, 1e-4, 1e-3);
    assert_close(
        &what("params after deferred steps"),
        &flat(&cl.params().unwrap()),
        &flat(&cpu.params().unwrap()),
        1e-4,
        2e-3,
    );
}

/// Parameters after 150 steps: see the module docs.
const STEPS_ABS: f32 = 1e-3;
const STEPS_REL: f32 = 1e-2;

/// 150 SGD steps over 4 rotating batches, on `device` and on the CPU; returns the largest
/// parameter difference.
fn training_agrees<M: Model<Storage = f16>>(device: &Device, seed: u64, lr: f32) -> f32 {
    let mut cl = Engine::<M>::with_seed(device, seed).unwrap();
    let mut cpu = Engine::<M>::with_seed(&Device::cpu(), seed).unwrap();
    let batches: Vec<_> = (0..4).map(|k| (input::<M>(seed + k), labels::<M>(seed + k))).collect();
    for step in 0..150 {
        let (x, y) = &batches[step % batches.len()];
        let expected = cpu.train_step(x, y, lr).unwrap();
        if step % 25 == 0 {
            let loss = cl.train_step(x, y, lr).unwrap();
            assert_close(&format!("{} step {step} loss", M::NAME), &[loss], &[expected], 1e-4, 1e-3);
        } else {
            cl.train_step_deferred(x, y, lr).unwrap();
        }
    }
    cl.take_losses().unwrap();
    let (a, b) = (flat(&cl.params().unwrap()), flat(&cpu.params().unwrap()));
    let worst = a.iter().zip(&b).map(|(&p, &q)| (p - q).abs()).fold(0.0, f32::max);
    let largest = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    crate::test_log!("{} on {device}: after 150 steps at most {worst:e} apart (largest |p| {largest})", M::NAME);
    assert_close(&format!("{} params after 150 steps on {device}", M::NAME), &a, &b, STEPS_ABS, STEPS_REL);
    worst
}

fn f16_logits_and_gradients_match_the_f32_model_on_rounded_values(device: &Device) {
    for d in paths(device) {
        agrees_with_f32_on_rounded_values::<Odd16, Odd32>(&d, 1);
        agrees_with_f32_on_rounded_values::<Mlp16, Mlp32>(&d, 2);
    }
    agrees_with_f32_on_rounded_values::<Wide16, Wide32>(device, 3);
}

fn f16_every_call_agrees_with_the_cpu(device: &Device) {
    for d in paths(device) {
        every_call_agrees::<Seed16>(&d, 4);
        every_call_agrees::<Odd16>(&d, 5);
        every_call_agrees::<Mlp16>(&d, 6);
    }
    every_call_agrees::<Wide16>(device, 7);
}

fn f16_training_agrees_with_the_cpu_over_150_steps(device: &Device) {
    for d in paths(device) {
        training_agrees::<Odd16>(&d, 8, 0.1);
        training_agrees::<Mlp16>(&d, 9, 0.1);
    }
    training_agrees::<Wide16>(device, 10, 0.02);
}

crate::tests! {
    device f16_logits_and_gradients_match_the_f32_model_on_rounded_values,
    opencl f16_every_call_agrees_with_the_cpu,
    opencl f16_training_agrees_with_the_cpu_over_150_steps,
}
