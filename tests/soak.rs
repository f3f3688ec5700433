//! The resident set stays flat over a long run of deferred train steps on OpenCL, as a
//! board that trains without end needs (`benches/soak.rs` runs every path for 10^6 steps;
//! this is its short form). Each model runs in a child process of its own: 20,000 steps
//! and a `take_losses` to warm up, then 100,000 more, with a `take_losses` every 20,000, as
//! a training loop that logs its losses would. The resident set may not grow by more than
//! 1 MiB from the warm-up to the end. Two shapes:
//! - the seed's, on the tiny kernel (its deferred steps four a launch, the batch by value);
//! - the Iris example's, whose batch goes up through a mapped buffer (`f32`, a host-unified
//!   device such as PoCL), before the fused kernel.
//!
//! Without the fixes they grew: the Iris shape by 250 bytes a step (the event of
//! `clEnqueueMapBuffer` was never released), and both by 2-5 MB in the second round (the
//! losses' record was freed at every take, and glibc's heap kept that much afterwards).

use crate::support::{child_process, child_stdout, opencl_device, tagged};
use tensorbridge::{Device, Engine, HostTensor, Model, StorageElement};
use tensorbridge_xtests::resident_kib;

tensorbridge::model! {
    /// The seed's shape: the tiny kernel.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// The Iris example's shape: 80 words of batch, uploaded through a staging buffer.
    pub struct Iris { batch: 16, features: 4, classes: 3 }
}

const CHILD: &str = "TENSORBRIDGE_SOAK_CHILD";
/// Steps between two `take_losses`; the warm-up is the first such round.
const ROUND: usize = 20_000;
/// Steps measured after the warm-up.
const STEPS: usize = 100_000;
/// The most the resident set may grow after the warm-up.
const LIMIT_KIB: u64 = 1024;

/// The kernels a step of `M` runs on `device`, from its profiled stages.
fn kernels<M: Model>(device: &Device, x: &M::Input, y: &M::Labels) -> String {
    let mut model = Engine::<M>::new(&device.with_profiling(true)).unwrap();
    let stages = model.profile_step(x, y, 1e-3).unwrap().stages;
    stages.into_iter().map(|s| s.name).collect::<Vec<_>>().join("+")
}

/// In the child: prints the kernels, then the resident set after the warm-up and at the
/// end, in KiB.
fn soak<M: Model>() {
    let device = opencl_device();
    let x: Vec<M::Storage> =
        (0..M::BATCH * M::FEATURES).map(|k| M::Storage::from_f32((k % 7) as f32 / 7.0 - 0.5)).collect();
    let y: Vec<u32> = (0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect();
    let (x, y) = (M::Input::from_flat(&x), M::Labels::from_flat(&y));
    println!("kernels: {}", kernels::<M>(&device, &x, &y));
    let mut model = Engine::<M>::new(&device).unwrap();
    let mut taken = 0;
    let mut run = |steps: usize| {
        for k in 1..=steps {
            model.train_step_deferred(&x, &y, 1e-3).unwrap();
            if k % ROUND == 0 {
                taken += model.take_losses().unwrap().len();
            }
        }
    };
    run(ROUND);
    let warm = resident_kib();
    run(STEPS);
    let end = resident_kib();
    assert_eq!(taken, ROUND + STEPS, "every step's loss taken");
    println!("resident: {warm} {end}");
}

fn soak_child() {
    match std::env::var(CHILD).as_deref() {
        Ok("Seed") => soak::<Seed>(),
        Ok("Iris") => soak::<Iris>(),
        other => panic!("no soak model {other:?}"),
    }
}

/// Runs `model` in a child process; returns its kernels and (warm-up, end) in KiB.
fn child_soak(model: &str) -> (String, u64, u64) {
    let mut child = child_process(module_path!(), "soak_child");
    let text = child_stdout(child.env(CHILD, model), "the soak's child process failed");
    let kernels = tagged(&text, "kernels: ").unwrap_or_else(|| panic!("no kernels in: {text}")).to_string();
    let resident: Vec<u64> = tagged(&text, "resident: ")
        .unwrap_or_else(|| panic!("no resident set in: {text}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(resident.len(), 2, "{text}");
    (kernels, resident[0], resident[1])
}

fn resident_set_stays_flat_over_deferred_steps(_device: &Device) {
    assert!(resident_kib() > 0, "no VmRSS in /proc/self/status");
    for model in ["Seed", "Iris"] {
        // (Which kernels each runs is `opencl_tiny`'s to check; here it is only reported.)
        let (kernels, warm, end) = child_soak(model);
        let growth = end as i64 - warm as i64;
        assert!(
            growth <= LIMIT_KIB as i64,
            "{model} ({kernels}): the resident set grew by {growth} KiB over {STEPS} deferred steps after the \
             warm-up ({warm} KiB to {end} KiB; at most {LIMIT_KIB})"
        );
    }
}

crate::tests! {
    child(CHILD) soak_child,
    opencl resident_set_stays_flat_over_deferred_steps,
}
