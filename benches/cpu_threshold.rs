//! Where spreading a layer over rayon's threads starts to pay on the CPU backend.
//!
//! For linear models of growing size it times one train step with the threshold forced off
//! (everything on the calling thread) and forced on (every layer on rayon), each in a child
//! process of its own (the threshold is read once per process from
//! `TENSORBRIDGE_PAR_MIN_MACS`), and prints the ratio. The crossover is the size at which
//! `PAR_MIN_MACS` in `src/backend/cpu.rs` should sit.
//!
//! Run: `cargo bench --bench cpu_threshold`

use std::time::Instant;

use tensorbridge::{Device, HostTensor, Model};

tensorbridge::model! { struct M12 { batch: 16, features: 16, classes: 16 } }
tensorbridge::model! { struct M14 { batch: 16, features: 64, classes: 16 } }
tensorbridge::model! { struct M15 { batch: 32, features: 64, classes: 16 } }
tensorbridge::model! { struct M16 { batch: 32, features: 128, classes: 16 } }
tensorbridge::model! { struct M17 { batch: 64, features: 128, classes: 16 } }
tensorbridge::model! { struct M18 { batch: 64, features: 256, classes: 16 } }
tensorbridge::model! { struct M20 { batch: 64, features: 512, classes: 32 } }

/// Median over 15 trials of the mean time of one train step, in microseconds.
fn time_step<M: Model<Storage = f32>>() -> f64 {
    let x_flat: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|k| (k % 11) as f32 / 11.0 - 0.5).collect();
    let y_flat: Vec<u32> = (0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect();
    let x = M::Input::from_flat(&x_flat);
    let y = M::Labels::from_flat(&y_flat);
    let mut model = tensorbridge::Engine::<M>::new(&Device::cpu()).expect("model");
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

fn child() {
    let rows = [
        ("16x16x16", 16 * 16 * 16, time_step::<M12>()),
        ("16x64x16", 16 * 64 * 16, time_step::<M14>()),
        ("32x64x16", 32 * 64 * 16, time_step::<M15>()),
        ("32x128x16", 32 * 128 * 16, time_step::<M16>()),
        ("64x128x16", 64 * 128 * 16, time_step::<M17>()),
        ("64x256x16", 64 * 256 * 16, time_step::<M18>()),
        ("64x512x32", 64 * 512 * 32, time_step::<M20>()),
    ];
    for (name, macs, us) in rows {
        println!("{name} {macs} {us}");
    }
}

fn main() {
    if std::env::var_os("CPU_THRESHOLD_CHILD").is_some() {
        return child();
    }
    let run = |threshold: &str| -> Vec<(String, usize, f64)> {
        let exe = std::env::current_exe().expect("own path");
        let out = std::process::Command::new(exe)
            .env("CPU_THRESHOLD_CHILD", "1")
            .env("TENSORBRIDGE_PAR_MIN_MACS", threshold)
            .output()
            .expect("child run");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .collect()
    };
    let serial = run(&usize::MAX.to_string());
    let parallel = run("0");
    println!("{:<12} {:>9} {:>12} {:>12} {:>8}", "B x F x C", "MACs", "serial us", "rayon us", "ratio");
    for ((name, macs, s), (_, _, p)) in serial.iter().zip(&parallel) {
        println!("{name:<12} {macs:>9} {s:>12.2} {p:>12.2} {:>8.2}", s / p);
    }
}
