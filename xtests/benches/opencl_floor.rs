//! Issue 11 items 3 and 6, measured in one run against the device's own floor:
//! - the seed's step (batch 2, features 4, classes 2) against one empty kernel launch +
//!   `clFinish` (`Device::__empty_launch`), and against one empty launch + a blocking read of
//!   4 bytes (`Device::__empty_launch_read`, the floor under a step that reads its loss): `train_step` (one launch + the loss read) and
//!   `train_step_deferred` (`take_losses` every 100 steps, its cost spread over them),
//!   with the batch as a kernel argument (`Upload::Auto` picks it: the tiny kernel, four
//!   deferred steps a launch) and, as the before, copied from a staging buffer
//!   (`Upload::Copy`: the fused work-group kernel, one launch a step);
//! - the upload of the mnist batch (128 x 784 `f32` + 128 labels) through a copy and
//!   through a mapped host-allocated buffer (`Upload::ZeroCopy`), each followed by
//!   `clFinish`;
//! - one profiled mnist step (`Engine::profile_step`), as JSON.
//!
//! The measurements are interleaved in rounds and each is reported as the median of its
//! rounds, so that load from other processes hits all of them alike; ratios are to the
//! floor of the same run.
//!
//! ```text
//! cargo bench --bench opencl_floor                     # PoCL's default (pthread) device
//! POCL_DEVICES=basic cargo bench --bench opencl_floor  # PoCL's single-threaded device
//! ```

use std::time::Instant;

use tensorbridge::{Device, Engine, Upload};
use tensorbridge_xtests::bench_batch;

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// The `mnist` anchor shape.
    pub struct MnistMlp { batch: 128, features: 784, hidden: [128], classes: 10 }
}

/// Seconds per call of `f`, over `n` calls.
fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os("POCL_CACHE_DIR").is_none() {
        std::env::set_var("POCL_CACHE_DIR", std::env::temp_dir().join("tensorbridge-bench-pocl"));
    }
    let rounds: usize = std::env::var("TB_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let Ok(cl) = Device::opencl() else {
        eprintln!("no OpenCL device: nothing to measure");
        return;
    };
    println!("device: {}", cl.name());
    let (x, y) = bench_batch::<Seed>();
    let mut by_value = Engine::<Seed>::new(&cl).expect("seed model");
    let mut copied = Engine::<Seed>::new(&cl.with_upload(Upload::Copy)).expect("seed model");
    for m in [&mut by_value, &mut copied] {
        m.warm_up().expect("warm-up");
    }
    let n = 2000;
    let names = [
        "empty launch + finish",
        "empty launch + 4-byte read",
        "train_step (argument)",
        "train_step (copy)",
        "deferred (argument)",
        "deferred (copy)",
    ];
    let mut t: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let deferred = |m: &mut Engine<Seed>| {
        per_call(n / 100, || {
            for _ in 0..100 {
                m.train_step_deferred(&x, &y, 1e-3).expect("step");
            }
            m.take_losses().expect("losses");
        }) / 100.0
    };
    for _ in 0..rounds {
        t[0].push(per_call(n, || cl.__empty_launch().expect("empty launch")));
        t[1].push(per_call(n, || cl.__empty_launch_read().expect("empty launch")));
        t[2].push(per_call(n, || {
            by_value.train_step(&x, &y, 1e-3).expect("step");
        }));
        t[3].push(per_call(n, || {
            copied.train_step(&x, &y, 1e-3).expect("step");
        }));
        t[4].push(deferred(&mut by_value));
        t[5].push(deferred(&mut copied));
    }
    let floor = median(&mut t[0]);
    let read_floor = median(&mut t[1]);
    for (name, v) in names.iter().zip(&mut t) {
        let m = median(v);
        println!(
            "seed  {name:<28} {:>8.2} us  {:>5.2}x floor  {:>5.2}x floor with the read",
            m * 1e6,
            m / floor,
            m / read_floor
        );
    }

    let (x, y) = bench_batch::<MnistMlp>();
    let mut copy = Engine::<MnistMlp>::new(&cl.with_upload(Upload::Copy)).expect("mnist model");
    let mut zero = Engine::<MnistMlp>::new(&cl.with_upload(Upload::ZeroCopy)).expect("mnist model");
    let (mut tc, mut tz) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        tc.push(per_call(50, || copy.__upload_batch(&x, &y).expect("upload")));
        tz.push(per_call(50, || zero.__upload_batch(&x, &y).expect("upload")));
    }
    let (c, z) = (median(&mut tc), median(&mut tz));
    println!(
        "mnist upload (128 x 784 f32 + labels): copy {:.1} us, zero-copy {:.1} us ({:.2}x)",
        c * 1e6,
        z * 1e6,
        c / z
    );
    let (mut sc, mut sz) = (Vec::new(), Vec::new());
    for _ in 0..rounds.min(7) {
        sc.push(per_call(5, || copy.train_step(&x, &y, 1e-3).map(drop).expect("step")));
        sz.push(per_call(5, || zero.train_step(&x, &y, 1e-3).map(drop).expect("step")));
    }
    println!("mnist train_step: copy {:.1} us, zero-copy {:.1} us", median(&mut sc) * 1e6, median(&mut sz) * 1e6);
    let mut profiled = Engine::<MnistMlp>::new(&cl.with_profiling(true)).expect("mnist model");
    profiled.warm_up().expect("warm-up");
    let profile = profiled.profile_step(&x, &y, 1e-3).expect("profile");
    print!("{profile}");
    println!("{}", profile.to_json());
}
