//! This crate builds tensorbridge's integration tests (the repository's `tests/`), its
//! benchmarks (`benches/`) and the compile-fail tests of `model!` (`tests/ui/`), so that
//! their tools (libtest-mimic, criterion, trybuild) are never built for the runtime crate
//! or its examples. Its library holds what several benchmarks share.

use std::time::Instant;

use tensorbridge::{Engine, HostTensor, Model};

/// The benchmarks' batch: deterministic features in `[-0.5, 0.5)` and labels cycling
/// through the classes.
pub fn bench_batch<M: Model<Storage = f32>>() -> (M::Input, M::Labels) {
    let x: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|k| ((k * 37 % 101) as f32 / 101.0) - 0.5).collect();
    let y: Vec<u32> = (0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect();
    (M::Input::from_flat(&x), M::Labels::from_flat(&y))
}

/// One immediate CPU train step's time (lr 1e-3, on the [`bench_batch`]), in microseconds:
/// after 0.2 s of warm-up, the median over 15 trials of a tenth of the warm-up's steps each.
///
/// # Panics
/// If the model cannot be made or a step fails (a benchmark's model and batch are fixed).
pub fn median_step_us<M: Model<Storage = f32>>() -> f64 {
    let (x, y) = bench_batch::<M>();
    let mut model = Engine::<M>::new(&tensorbridge::Device::cpu()).expect("model");
    let mut step = || model.train_step(&x, &y, 1e-3).expect("step");
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 0.2 {
        step();
        n += 1;
    }
    let reps = (n / 10).max(1);
    let mut trials: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                step();
            }
            t.elapsed().as_secs_f64() * 1e6 / reps as f64
        })
        .collect();
    trials.sort_by(f64::total_cmp);
    trials[7]
}

/// Seconds per step of `n` deferred train steps (lr 1e-4) and the `take_losses` that
/// ends them; `None` if a step fails.
pub fn deferred_step_seconds<M: Model>(model: &mut Engine<M>, x: &M::Input, y: &M::Labels, n: usize) -> Option<f64> {
    let t = Instant::now();
    for _ in 0..n {
        model.train_step_deferred(x, y, 1e-4).ok()?;
    }
    model.take_losses().ok()?;
    Some(t.elapsed().as_secs_f64() / n as f64)
}

/// This process's resident set in KiB (`VmRSS` of `/proc/self/status`; 0 where that file
/// is absent, as off Linux).
pub fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
