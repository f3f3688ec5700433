//! Issue 11, items 3, 5 and 6 on OpenCL (PoCL in CI):
//! - the batch as a by-value kernel argument (`Upload::Arguments`), the mapped
//!   host-allocated staging buffer (`Upload::ZeroCopy`) and the copy (`Upload::Copy`)
//!   give bit-identical results to each other, and agree with the CPU backend to
//!   `1e-5 + 1e-4 * |value|` for single calls (`1e-4 + 1e-3 * |value|` after steps);
//! - per-stage step profiling names the stages after the model's layers, in the order
//!   they run, every duration > 0, and its JSON lists them in that order.

use crate::support::{assert_agree as assert_close, noise, param_bits};
use tensorbridge::{Device, Engine, Error, HostTensor, KernelPath, Model, Params, Upload};

tensorbridge::model! {
    /// The seed's shape: fused, batch small enough to go by value.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// Odd sizes, two hidden layers: fused, by value (3 * 5 + 3 = 18 words).
    pub struct Mlp { batch: 3, features: 5, classes: 7, hidden: [6, 4] }
}
tensorbridge::model! {
    /// Fused, but a batch too large for the argument (40 * 33 + 40 words).
    pub struct WideMlp { batch: 40, features: 33, classes: 10, hidden: [20] }
}
tensorbridge::model! {
    /// Fused, awkward sizes for the work-item loops (the register-blocked GEMM kernels'
    /// shape of tests/opencl_differential.rs).
    pub struct Awkward { batch: 13, features: 35, classes: 5, hidden: [21, 9] }
}
tensorbridge::model! {
    /// f16 storage, an odd number of halves: by value too (8 + 3 words).
    pub struct Odd16 { batch: 3, features: 5, classes: 7, storage: f16 }
}

fn input<M: Model<Storage = f32>>(seed: u64) -> M::Input {
    M::Input::from_flat(&(0..M::BATCH * M::FEATURES).map(|k| noise(seed, k) * 2.0).collect::<Vec<_>>())
}

fn labels<M: Model>(seed: u64) -> M::Labels {
    let c = M::CLASSES as u32;
    M::Labels::from_flat(
        &(0..M::BATCH).map(|r| ((noise(seed ^ 0xABCD, r) + 1.0) * 1000.0) as u32 % c).collect::<Vec<_>>(),
    )
}

fn values<P: Params>(p: &P) -> Vec<f32> {
    param_bits(p).into_iter().map(f32::from_bits).collect()
}

/// What a model computes on one device: losses of steps (immediate and deferred), the
/// parameters after them, logits, a loss and gradients of a padded batch.
#[derive(Debug, PartialEq)]
struct Trace {
    losses: Vec<u32>,
    params: Vec<u32>,
    logits: Vec<u32>,
    loss_rows: u32,
    grads: Vec<u32>,
}

fn trace<M: Model<Storage = f32>>(device: &Device) -> Trace {
    let mut model = Engine::<M>::with_seed(device, 7).unwrap();
    let mut losses = Vec::new();
    for s in 0..20u64 {
        let (x, y) = (input::<M>(s), labels::<M>(s));
        if s % 2 == 0 {
            losses.push(model.train_step(&x, &y, 0.05).unwrap().to_bits());
        } else {
            model.train_step_deferred(&x, &y, 0.05).unwrap();
        }
        if s == 9 {
            model.train_step_rows(&x, &y, 1, 0.05).unwrap();
        }
    }
    losses.extend(model.take_losses().unwrap().into_iter().map(f32::to_bits));
    let (x, y) = (input::<M>(99), labels::<M>(99));
    let logits = model.logits(&x).unwrap().as_flat().iter().map(|v| v.to_bits()).collect();
    let rows = M::BATCH.div_ceil(2);
    let loss_rows = model.loss_rows(&x, &y, rows).unwrap().to_bits();
    let (_, grads) = model.gradients_rows(&x, &y, rows).unwrap();
    Trace { losses, params: param_bits(&model.params().unwrap()), logits, loss_rows, grads: param_bits(&grads) }
}

/// Every upload mode the model allows on `device`'s kernel path gives the same bits;
/// returns the trace.
fn same_in_every_mode<M: Model<Storage = f32>>(device: &Device, by_value: bool) -> Trace {
    let copy = trace::<M>(&device.with_upload(Upload::Copy));
    assert_eq!(copy, trace::<M>(&device.with_upload(Upload::ZeroCopy)), "{}: zero-copy vs copy", M::NAME);
    assert_eq!(copy, trace::<M>(&device.with_upload(Upload::Auto)), "{}: auto vs copy", M::NAME);
    if by_value {
        assert_eq!(copy, trace::<M>(&device.with_upload(Upload::Arguments)), "{}: by value vs copy", M::NAME);
    } else {
        let err = Engine::<M>::new(&device.with_upload(Upload::Arguments)).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{}: {err}", M::NAME);
    }
    copy
}

fn upload_modes_are_bit_identical_and_match_the_cpu(device: &Device) {
    fn against_cpu<M: Model<Storage = f32>>(t: &Trace) {
        let cpu = trace::<M>(&Device::cpu());
        let f = |v: &[u32]| v.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>();
        assert_close(&format!("{} losses", M::NAME), &f(&t.losses), &f(&cpu.losses), 1e-4, 1e-3);
        assert_close(&format!("{} params", M::NAME), &f(&t.params), &f(&cpu.params), 1e-4, 1e-3);
        assert_close(&format!("{} logits", M::NAME), &f(&t.logits), &f(&cpu.logits), 1e-4, 1e-3);
        assert_close(&format!("{} grads", M::NAME), &f(&t.grads), &f(&cpu.grads), 1e-4, 1e-3);
    }
    let t = same_in_every_mode::<Seed>(device, true);
    against_cpu::<Seed>(&t);
    let t = same_in_every_mode::<Mlp>(device, true);
    against_cpu::<Mlp>(&t);
    let t = same_in_every_mode::<WideMlp>(device, false);
    against_cpu::<WideMlp>(&t);
    let t = same_in_every_mode::<Awkward>(device, false);
    against_cpu::<Awkward>(&t);
    // The tiled kernels never take the batch by value; copy and zero-copy still agree.
    let tiled = device.with_kernel_path(KernelPath::Tiled);
    let t = same_in_every_mode::<Mlp>(&tiled, false);
    against_cpu::<Mlp>(&t);
}

fn f16_batch_by_value_matches_the_buffer(device: &Device) {
    let run = |device: &Device| {
        let mut model = Engine::<Odd16>::with_seed(device, 3).unwrap();
        let mut out = Vec::new();
        for s in 0..10u64 {
            let x: Vec<tensorbridge::half::f16> =
                (0..15).map(|k| tensorbridge::half::f16::from_f32(noise(s, k))).collect();
            let x = <Odd16 as Model>::Input::from_flat(&x);
            out.push(model.train_step(&x, &labels::<Odd16>(s), 0.1).unwrap().to_bits());
        }
        out.extend(param_bits(&model.params().unwrap()));
        out
    };
    let copy = run(&device.with_upload(Upload::Copy));
    assert_eq!(copy, run(&device.with_upload(Upload::Arguments)));
    assert_eq!(copy, run(&device.with_upload(Upload::ZeroCopy)));
}

fn device_reports_its_memory_and_argument_room(device: &Device) {
    let info = device.info().unwrap();
    // Every OpenCL device allows 256 bytes of arguments at least (1024 on full profiles).
    assert!(info.max_parameter_size >= 256, "{}", info.max_parameter_size);
    if info.platform.contains("Portable Computing Language") {
        assert!(info.host_unified_memory, "PoCL's CPU device shares the host's memory");
    }
}

fn names(profile: &tensorbridge::StepProfile) -> Vec<&str> {
    profile.stages.iter().map(|s| s.name.as_str()).collect()
}

/// The profile's invariants: positive durations, the loss of the step, JSON in order.
fn check_profile(profile: &tensorbridge::StepProfile, want: &[&str], loss: f32) {
    assert_eq!(names(profile), want);
    for stage in &profile.stages {
        assert!(stage.duration.as_nanos() > 0, "{}: zero duration", stage.name);
        assert!(stage.commands >= 1);
    }
    assert_eq!(profile.loss.to_bits(), loss.to_bits(), "the profiled step is the step");
    let json = profile.to_json();
    let mut at = 0;
    for name in want {
        let needle = format!("{{\"name\":\"{name}\",\"ns\":");
        let pos = json[at..].find(&needle).unwrap_or_else(|| panic!("{name} not in order in {json}"));
        at += pos + needle.len();
    }
    assert!(json.contains(&format!("\"total_ns\":{}", profile.total().as_nanos())), "{json}");
    assert!(json.starts_with('{') && json.ends_with('}'));
}

fn profile_of_a_tiled_step_names_every_layer(device: &Device) {
    let device = device.with_kernel_path(KernelPath::Tiled);
    let (x, y) = (input::<Mlp>(1), labels::<Mlp>(1));
    let mut plain = Engine::<Mlp>::with_seed(&device, 5).unwrap();
    let loss = plain.train_step(&x, &y, 0.1).unwrap();
    let mut profiled = Engine::<Mlp>::with_seed(&device.with_profiling(true), 5).unwrap();
    let profile = profiled.profile_step(&x, &y, 0.1).unwrap();
    check_profile(
        &profile,
        &[
            "upload",
            "forward[0]",
            "forward[1]",
            "forward[2]",
            "loss",
            "backward[2]",
            "backward[1]",
            "backward[0]",
            "update",
        ],
        loss,
    );
    // backward[l > 0]: weights and inputs; backward[0]: weights only; update: check + sgd.
    let commands: Vec<usize> = profile.stages.iter().map(|s| s.commands).collect();
    assert_eq!(commands, [1, 1, 1, 1, 1, 2, 2, 1, 2]);
    // It was a real step: the parameters moved as the unprofiled model's did.
    assert_eq!(param_bits(&plain.params().unwrap()), param_bits(&profiled.params().unwrap()));
    // And profiling changes nothing afterwards.
    assert_eq!(plain.train_step(&x, &y, 0.1).unwrap().to_bits(), profiled.train_step(&x, &y, 0.1).unwrap().to_bits());
}

fn profile_of_a_fused_step(device: &Device) {
    let device = device.with_profiling(true);
    let (x, y) = (input::<Seed>(2), labels::<Seed>(2));
    for (upload, want) in [
        (Upload::Copy, &["upload", "fused"][..]),
        (Upload::ZeroCopy, &["upload", "fused"][..]),
        // The seed's step with its batch by value is tiny: one work-item (cl/tiny_step.cl).
        (Upload::Arguments, &["tiny"][..]),
    ] {
        let device = device.with_upload(upload);
        let loss = Engine::<Seed>::with_seed(&device, 9).unwrap().train_step(&x, &y, 0.1).unwrap();
        let profile = Engine::<Seed>::with_seed(&device, 9).unwrap().profile_step(&x, &y, 0.1).unwrap();
        check_profile(&profile, want, loss);
    }
}

fn profile_needs_profiling_on(device: &Device) {
    let (x, y) = (input::<Seed>(2), labels::<Seed>(2));
    let mut model = Engine::<Seed>::new(device).unwrap();
    let before = param_bits(&model.params().unwrap());
    assert!(matches!(model.profile_step(&x, &y, 0.1), Err(Error::Unsupported { .. })));
    assert_eq!(before, param_bits(&model.params().unwrap()), "a refused profile changes nothing");
    let mut cpu = Engine::<Seed>::new(&Device::cpu()).unwrap();
    assert!(matches!(cpu.profile_step(&x, &y, 0.1), Err(Error::Unsupported { .. })));
    // Invalid inputs are refused before anything runs, as for train_step.
    let mut model = Engine::<Seed>::new(&device.with_profiling(true)).unwrap();
    assert!(matches!(model.profile_step(&x, &y, f32::NAN), Err(Error::InvalidLearningRate { .. })));
    let _ = values(&model.params().unwrap());
}

crate::tests! {
    opencl upload_modes_are_bit_identical_and_match_the_cpu,
    opencl f16_batch_by_value_matches_the_buffer,
    opencl device_reports_its_memory_and_argument_room,
    opencl profile_of_a_tiled_step_names_every_layer,
    opencl profile_of_a_fused_step,
    opencl profile_needs_profiling_on,
}
