//! Where spreading a layer over the CPU backend's worker threads starts to pay, and what a
//! hand-off to them costs.
//!
//! For linear models of growing size (outputs wide enough to split) it times one train step
//! with the threshold forced off (everything on the calling thread) and forced on (every
//! GEMM split over the threads), each in a child process of its own (the threshold is
//! read once per process from `TENSORBRIDGE_PAR_MIN_MACS`), three rounds interleaved, and
//! prints the ratios (above 1: the threads pay). The crossover is where `PAR_MIN_MACS` in
//! `src/gemm.rs` sits.
//!
//! Then the hand-off: a job of two parts whose first part (the caller's) waits until a
//! worker has run the second, timed from the call to its return, back to back (the worker
//! spinning: hot) and 2 ms apart (the worker parked: cold), median of 2,000 and 200 calls.
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench cpu_threshold`

use std::time::Instant;

use tensorbridge::Device;
use tensorbridge_xtests::median_step_us;

tensorbridge::model! { struct M17 { batch: 32, features: 64, classes: 64 } }
tensorbridge::model! { struct M18 { batch: 64, features: 64, classes: 64 } }
tensorbridge::model! { struct M19 { batch: 64, features: 128, classes: 64 } }
tensorbridge::model! { struct M20 { batch: 64, features: 128, classes: 128 } }
tensorbridge::model! { struct M21 { batch: 64, features: 256, classes: 128 } }
tensorbridge::model! { struct M22 { batch: 128, features: 256, classes: 128 } }
tensorbridge::model! { struct M23 { batch: 128, features: 256, classes: 256 } }
tensorbridge::model! { struct M24 { batch: 128, features: 512, classes: 256 } }
tensorbridge::model! { struct M26 { batch: 256, features: 1024, classes: 256 } }

fn child() {
    let rows = [
        ("32x64x64", 32 * 64 * 64, median_step_us::<M17>()),
        ("64x64x64", 64 * 64 * 64, median_step_us::<M18>()),
        ("64x128x64", 64 * 128 * 64, median_step_us::<M19>()),
        ("64x128x128", 64 * 128 * 128, median_step_us::<M20>()),
        ("64x256x128", 64 * 256 * 128, median_step_us::<M21>()),
        ("128x256x128", 128 * 256 * 128, median_step_us::<M22>()),
        ("128x256x256", 128 * 256 * 256, median_step_us::<M23>()),
        ("128x512x256", 128 * 512 * 256, median_step_us::<M24>()),
        ("256x1024x256", 256 * 1024 * 256, median_step_us::<M26>()),
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
    let rounds: Vec<_> = (0..3).map(|_| (run(&usize::MAX.to_string()), run("0"))).collect();
    println!("{:<12} {:>9} {:>30} {:>30} {:>20}", "B x F x C", "MACs", "serial us (3 rounds)", "split us", "ratios");
    for (k, (name, macs, _)) in rounds[0].0.iter().enumerate() {
        let serial: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.0[k].2)).collect();
        let split: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.1[k].2)).collect();
        let ratio: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.0[k].2 / r.1[k].2)).collect();
        println!("{name:<12} {macs:>9} {:>30} {:>30} {:>20}", serial.join(" "), split.join(" "), ratio.join(" "));
    }
    handoff();
}

/// The hand-off's cost (see the module documentation).
fn handoff() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // With one thread the parts run in turn, and the first would wait for ever.
    if Device::cpu().name().contains("(1 threads") {
        return println!("hand-off: one thread (TENSORBRIDGE_THREADS=1), no workers");
    }
    let time = |gap: std::time::Duration, calls: usize| -> f64 {
        let mut us: Vec<f64> = (0..calls)
            .map(|_| {
                std::thread::sleep(gap);
                let ran = AtomicBool::new(false);
                let t = Instant::now();
                tensorbridge::__private::pool_run(2, &|p| {
                    if p == 1 {
                        ran.store(true, Ordering::Release);
                    } else {
                        while !ran.load(Ordering::Acquire) {
                            std::hint::spin_loop();
                        }
                    }
                });
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        us.sort_by(f64::total_cmp);
        us[calls / 2]
    };
    time(std::time::Duration::ZERO, 100);
    let hot = time(std::time::Duration::ZERO, 2000);
    let cold = time(std::time::Duration::from_millis(2), 200);
    println!("hand-off to a worker, median: hot {hot:.2} us, cold (parked) {cold:.2} us");
}
