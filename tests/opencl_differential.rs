//! Differential tests: every call of the runtime API on the OpenCL backend (PoCL in CI)
//! against the CPU backend, an independent implementation of the same functions, on the
//! fused and the tiled kernels, at several shapes.
//!
//! Tolerance: single calls agree to `1e-5 + 1e-4 * |value|` (the two backends sum in
//! different orders, in f32); after 300 SGD steps the parameters agree to
//! `1e-4 + 1e-3 * |value|`.

use crate::support::{assert_agree as assert_close, noise, paths};
use tensorbridge::{Device, Engine, Error, HostTensor, KernelPath, Model, Params};

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// Odd sizes: nothing is a multiple of a tile or a warp.
    pub struct Odd { batch: 3, features: 5, classes: 7 }
}
tensorbridge::model! {
    /// Larger: tiled kernels under Auto.
    pub struct Wide { batch: 64, features: 300, classes: 10 }
}
tensorbridge::model! {
    /// Two hidden ReLU layers, odd widths.
    pub struct Mlp { batch: 3, features: 5, classes: 7, hidden: [6, 4] }
}
tensorbridge::model! {
    /// A larger MLP spanning several tiles in every dimension.
    pub struct WideMlp { batch: 40, features: 33, classes: 10, hidden: [20] }
}

tensorbridge::model! {
    /// Awkward for the register-blocked GEMM kernels (16 rows x 4 outputs a work-item,
    /// weights read 4 inputs at a time): a batch of 13 (a partial block of rows), widths
    /// 35, 21 and 9 (partial blocks of inputs and outputs, a remainder after the vload4
    /// loop), several blocks and work-groups in every dimension.
    pub struct Awkward { batch: 13, features: 35, classes: 5, hidden: [21, 9] }
}
tensorbridge::model! {
    /// A batch that is a multiple of 8 (the weight gradient's float8 row loads) but not of
    /// 16 (the forward's float16 blocks), with widths that are not multiples of 4, and more
    /// rows than one block of the weight gradient's reduction.
    pub struct EightRows { batch: 24, features: 7, classes: 3, hidden: [30] }
}

const ABS: f32 = 1e-5;
const REL: f32 = 1e-4;

fn input<M: Model<Storage = f32>>(seed: u64) -> M::Input {
    let n = M::BATCH * M::FEATURES;
    M::Input::from_flat(&(0..n).map(|k| noise(seed, k) * 2.0).collect::<Vec<_>>())
}

fn labels<M: Model<Storage = f32>>(seed: u64) -> M::Labels {
    let c = M::CLASSES as u32;
    M::Labels::from_flat(
        &(0..M::BATCH).map(|r| ((noise(seed ^ 0xABCD, r) + 1.0) * 1000.0) as u32 % c).collect::<Vec<_>>(),
    )
}

fn flat<P: Params<Elem = f32>>(p: &P) -> Vec<f32> {
    let mut out = vec![0.0; P::LEN];
    p.write_flat(&mut out);
    out
}

/// Every API call, on `device` and on the CPU, from the same parameters and data.
fn every_call_agrees<M: Model<Storage = f32>>(device: &Device, seed: u64) {
    let mut cl = Engine::<M>::with_seed(device, seed).expect("model on OpenCL");
    let mut cpu = Engine::<M>::with_seed(&Device::cpu(), seed).expect("model on the CPU");
    let (x, y) = (input::<M>(seed), labels::<M>(seed));
    let what = |call: &str| format!("{} on {device}: {call}", M::NAME);
    let rows = M::BATCH.div_ceil(2);

    assert_eq!(flat(&cl.params().unwrap()), flat(&cpu.params().unwrap()), "{}", what("params"));

    let xd = cl.to_device(&x).unwrap();
    let via_tensor = cl.forward(&xd).unwrap().to_host().unwrap();
    let expected = cpu.logits(&x).unwrap();
    assert_close(&what("forward"), via_tensor.as_flat(), expected.as_flat(), ABS, REL);
    assert_close(&what("logits"), cl.logits(&x).unwrap().as_flat(), expected.as_flat(), ABS, REL);

    // predict: compare rows whose two best logits are clearly apart.
    let (p_cl, p_cpu) = (cl.predict(&x).unwrap(), cpu.predict(&x).unwrap());
    let z = expected.as_flat();
    for r in 0..M::BATCH {
        let mut row: Vec<f32> = (0..M::CLASSES).map(|c| z[c * M::BATCH + r]).collect();
        row.sort_by(|a, b| b.total_cmp(a));
        if row[0] - row[1] > 1e-3 {
            assert_eq!(p_cl.as_flat()[r], p_cpu.as_flat()[r], "{} row {r}", what("predict"));
        }
    }

    assert_close(&what("loss"), &[cl.loss(&x, &y).unwrap()], &[cpu.loss(&x, &y).unwrap()], ABS, REL);
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
    let ((l1, g1), (l2, g2)) = (cl.gradients_rows(&x, &y, rows).unwrap(), cpu.gradients_rows(&x, &y, rows).unwrap());
    assert_close(&what("gradients_rows loss"), &[l1], &[l2], ABS, REL);
    assert_close(&what("gradients_rows"), &flat(&g1), &flat(&g2), ABS, REL);

    let (s1, s2) = (cl.train_step(&x, &y, 0.1).unwrap(), cpu.train_step(&x, &y, 0.1).unwrap());
    assert_close(&what("train_step loss"), &[s1], &[s2], ABS, REL);
    assert_close(
        &what("params after train_step"),
        &flat(&cl.params().unwrap()),
        &flat(&cpu.params().unwrap()),
        ABS,
        REL,
    );
    let (s1, s2) = (cl.train_step_rows(&x, &y, rows, 0.05).unwrap(), cpu.train_step_rows(&x, &y, rows, 0.05).unwrap());
    assert_close(&what("train_step_rows loss"), &[s1], &[s2], ABS, REL);
    assert_close(
        &what("params after train_step_rows"),
        &flat(&cl.params().unwrap()),
        &flat(&cpu.params().unwrap()),
        ABS,
        REL,
    );

    // set_params / with_params cross explicitly; the values come back bit for bit.
    let fresh: Vec<f32> = (0..M::Params::LEN).map(|k| noise(seed + 7, k) * 0.5).collect();
    let fresh = M::Params::from_flat(&fresh);
    cl.set_params(&fresh).unwrap();
    cpu.set_params(&fresh).unwrap();
    assert_eq!(flat(&cl.params().unwrap()), flat(&fresh), "{}", what("set_params round trip"));
    let again = Engine::<M>::with_params(device, &fresh).unwrap();
    assert_eq!(flat(&again.params().unwrap()), flat(&fresh), "{}", what("with_params round trip"));

    // Deferred steps: the same losses and parameters as immediate steps on the CPU.
    let mut expected_losses = Vec::new();
    for k in 0..5 {
        let (xk, yk) = (input::<M>(seed + 100 + k), labels::<M>(seed + 100 + k));
        cl.train_step_deferred(&xk, &yk, 0.05).unwrap();
        expected_losses.push(cpu.train_step(&xk, &yk, 0.05).unwrap());
    }
    assert_close(&what("take_losses"), &cl.take_losses().unwrap(), &expected_losses, ABS, REL);
    assert!(cl.take_losses().unwrap().is_empty(), "{}", what("take_losses clears the record"));
    assert_close(
        &what("params after deferred steps"),
        &flat(&cl.params().unwrap()),
        &flat(&cpu.params().unwrap()),
        ABS,
        REL,
    );
}

/// 300 SGD steps over 4 rotating batches end with the same parameters on both devices.
fn training_agrees<M: Model<Storage = f32>>(device: &Device, seed: u64, lr: f32) {
    let mut cl = Engine::<M>::with_seed(device, seed).unwrap();
    let mut cpu = Engine::<M>::with_seed(&Device::cpu(), seed).unwrap();
    let batches: Vec<_> = (0..4).map(|k| (input::<M>(seed + k), labels::<M>(seed + k))).collect();
    let mut deferred = Vec::new();
    for step in 0..300 {
        let (x, y) = &batches[step % batches.len()];
        let expected = cpu.train_step(x, y, lr).unwrap();
        if step % 50 == 0 {
            // Every 50 steps: the deferred losses so far, then one immediate step.
            let cl_losses = cl.take_losses().unwrap();
            assert_close(&format!("{} deferred losses before {step}", M::NAME), &cl_losses, &deferred, 1e-4, 1e-3);
            deferred.clear();
            let loss = cl.train_step(x, y, lr).unwrap();
            assert_close(&format!("{} step {step} loss", M::NAME), &[loss], &[expected], 1e-4, 1e-3);
        } else {
            deferred.push(expected);
            cl.train_step_deferred(x, y, lr).unwrap();
        }
    }
    let cl_losses = cl.take_losses().unwrap();
    assert_close(&format!("{} deferred losses", M::NAME), &cl_losses, &deferred, 1e-4, 1e-3);
    assert_close(
        &format!("{} params after 300 steps on {device}", M::NAME),
        &flat(&cl.params().unwrap()),
        &flat(&cpu.params().unwrap()),
        1e-4,
        1e-3,
    );
}

fn seed_shape_every_call_agrees_with_the_cpu(device: &Device) {
    for d in paths(device) {
        every_call_agrees::<Seed>(&d, 1);
    }
}

fn odd_shape_every_call_agrees_with_the_cpu(device: &Device) {
    for d in paths(device) {
        every_call_agrees::<Odd>(&d, 2);
    }
}

fn wide_shape_every_call_agrees_with_the_cpu(device: &Device) {
    every_call_agrees::<Wide>(device, 3);
}

fn mlp_every_call_agrees_with_the_cpu(device: &Device) {
    for d in paths(device) {
        every_call_agrees::<Mlp>(&d, 4);
    }
    every_call_agrees::<WideMlp>(device, 5);
}

fn awkward_gemm_shapes_every_call_agrees_with_the_cpu(device: &Device) {
    for d in paths(device) {
        every_call_agrees::<Awkward>(&d, 6);
        every_call_agrees::<EightRows>(&d, 7);
    }
}

fn three_hundred_steps_end_with_the_same_parameters(device: &Device) {
    for d in paths(device) {
        training_agrees::<Seed>(&d, 10, 0.5);
        training_agrees::<Odd>(&d, 11, 0.2);
        training_agrees::<Mlp>(&d, 12, 0.1);
    }
    training_agrees::<Wide>(device, 13, 0.05);
    training_agrees::<Awkward>(&device.with_kernel_path(KernelPath::Tiled), 14, 0.05);
}

fn auto_picks_fused_for_small_models_and_tiled_for_large_ones(device: &Device) {
    let fused = device.with_kernel_path(KernelPath::Fused);
    assert!(Engine::<Seed>::new(&fused).is_ok());
    assert!(Engine::<Mlp>::new(&fused).is_ok());
    match Engine::<Wide>::new(&fused) {
        Err(Error::Unsupported { reason, .. }) => assert!(reason.contains("fused"), "{reason}"),
        other => panic!("expected Unsupported for a 64x300x10 model on the fused kernel, got {other:?}"),
    }
}

crate::tests! {
    opencl seed_shape_every_call_agrees_with_the_cpu,
    opencl odd_shape_every_call_agrees_with_the_cpu,
    opencl wide_shape_every_call_agrees_with_the_cpu,
    opencl mlp_every_call_agrees_with_the_cpu,
    opencl awkward_gemm_shapes_every_call_agrees_with_the_cpu,
    opencl three_hundred_steps_end_with_the_same_parameters,
    opencl auto_picks_fused_for_small_models_and_tiled_for_large_ones,
}
