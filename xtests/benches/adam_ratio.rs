//! An Adam step against an SGD step of the same shape on the CPU backend, timed in one
//! process, alternating: the ratio issue 20's speed targets name (Adam at most 1.15x SGD at
//! `mnist`, 2x at `seed`).
//!
//! `train_step`'s criterion groups time SGD and Adam one after the other, and on a machine
//! whose clock moves between (and within) processes their ratio scatters more than the
//! target's margin. Here both models live in one process and take turns: a block of 64
//! SGD steps and a block of 64 Adam steps (which one first alternating from pair to pair),
//! each block timed alone, both models started over (parameters and state, not timed)
//! after every block, so that each block is the first 64 steps from the same start (see
//! `train_step.rs` on why Adam starts over). 41 pairs a shape after 0.3 s of warm-up; it
//! prints the median step of each, and the median and quartiles of the 41 pairs' ratios (a
//! pair's two blocks run a few milliseconds apart, so that a change of clock touches both).
//!
//! Then the update pass alone, which is most of what an Adam step adds:
//! `optim::apply_split_fma` over about half of `mnist`'s parameters (one core's part of the
//! step) and their moments, hot in the cache, on one core, best of 200, compiled as the CPU
//! backend's AVX-512 variant is (where the processor has AVX-512). Each parameter costs one square root and one division,
//! the divider's work (PyTorch's formula, kept bit for bit).
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench adam_ratio [-- SHAPE]`

use std::time::Instant;

use tensorbridge::optim::{self, Adam, Coeffs, Optimizer};
use tensorbridge::{Device, Engine, Model};
use tensorbridge_xtests::bench_batch;

tensorbridge::model! { struct Seed { batch: 2, features: 4, classes: 2 } }
tensorbridge::model! { struct Digits { batch: 32, features: 64, hidden: [32], classes: 10 } }
tensorbridge::model! { struct Mnist { batch: 128, features: 784, hidden: [128], classes: 10 } }
tensorbridge::model! { struct Wide { batch: 256, features: 1024, hidden: [1024], classes: 16 } }

tensorbridge::model! { struct SeedAdam { batch: 2, features: 4, classes: 2, optimizer: adam } }
tensorbridge::model! { struct DigitsAdam { batch: 32, features: 64, hidden: [32], classes: 10, optimizer: adam } }
tensorbridge::model! { struct MnistAdam { batch: 128, features: 784, hidden: [128], classes: 10, optimizer: adam } }
tensorbridge::model! { struct WideAdam { batch: 256, features: 1024, hidden: [1024], classes: 16, optimizer: adam } }

/// Steps a block.
const BLOCK: usize = 64;
/// Pairs of blocks a shape.
const PAIRS: usize = 41;

/// A model that starts over after each block, and times its blocks.
struct Runner<M: Model<Storage = f32>> {
    model: Engine<M>,
    start: M::Params,
    x: M::Input,
    y: M::Labels,
}

impl<M: Model<Storage = f32>> Runner<M> {
    fn new() -> Self {
        let (x, y) = bench_batch::<M>();
        let model = Engine::<M>::new(&Device::cpu()).expect("model");
        let start = model.params().expect("params");
        Runner { model, start, x, y }
    }

    /// Microseconds a step over one block of [`BLOCK`] steps, then the restart.
    fn block(&mut self) -> f64 {
        let t = Instant::now();
        for _ in 0..BLOCK {
            self.model.train_step(&self.x, &self.y, 1e-3).expect("step");
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / BLOCK as f64;
        self.model.set_params(&self.start).expect("params");
        self.model.reset_optimizer().expect("reset");
        us
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn shape<S: Model<Storage = f32>, A: Model<Storage = f32>>(name: &str) {
    let (mut sgd, mut adam) = (Runner::<S>::new(), Runner::<A>::new());
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < 0.3 {
        sgd.block();
        adam.block();
    }
    let (mut s, mut a, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..PAIRS {
        // Alternate which goes first, so that neither always follows the other's restart.
        let (ts, ta) = if k % 2 == 0 {
            let ts = sgd.block();
            (ts, adam.block())
        } else {
            let ta = adam.block();
            (sgd.block(), ta)
        };
        s.push(ts);
        a.push(ta);
        r.push(ta / ts);
    }
    let (ms, ma) = (median(&mut s), median(&mut a));
    let mr = median(&mut r);
    let (q1, q3) = (r[PAIRS / 4], r[3 * PAIRS / 4]);
    println!("{name:<8} {ms:>10.2} {ma:>10.2} {mr:>8.3}   {q1:.3}-{q3:.3}");
}

/// Adam's update pass over `p` (see the module's docs), compiled with the features of the
/// CPU backend's widest variant of it (`optim_parts::wide` in `src/cpu.rs`).
///
/// # Safety
/// The processor must have AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn update_avx512(c: &Coeffs, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> f32 {
    optim::apply_split_fma::<Adam>(c, p, g, m, v, |x| x).params
}

/// Nanoseconds a parameter of Adam's update pass over `n` parameters (best of 200), or
/// `None` without AVX-512.
fn update_ns(n: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let mut p: Vec<f32> = (0..n).map(|k| ((k * 37 % 101) as f32 / 101.0) - 0.5).collect();
        let g: Vec<f32> = (0..n).map(|k| ((k * 53 % 97) as f32 / 97.0 - 0.5) * 1e-2).collect();
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let c = Adam::default().coeffs(5);
        let mut best = f64::INFINITY;
        for _ in 0..200 {
            let t = Instant::now();
            // SAFETY: the processor has the function's features (checked above).
            std::hint::black_box(unsafe { update_avx512(&c, &mut p, &g, &mut m, &mut v) });
            best = best.min(t.elapsed().as_secs_f64());
            // The same moments each time (the parameters drift by lr a step: immaterial).
            m.fill(0.0);
            v.fill(0.0);
        }
        return Some(best * 1e9 / n as f64);
    }
    let _ = n;
    None
}

fn main() {
    // `cargo bench` passes `--bench`; a shape's name as an argument runs that shape alone.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("{:<8} {:>10} {:>10} {:>8}   quartiles", "shape", "sgd us", "adam us", "ratio");
    if want("seed") {
        shape::<Seed, SeedAdam>("seed");
    }
    if want("digits") {
        shape::<Digits, DigitsAdam>("digits");
    }
    if want("mnist") {
        shape::<Mnist, MnistAdam>("mnist");
    }
    if want("wide") {
        shape::<Wide, WideAdam>("wide");
    }
    let half = tensorbridge::layout::param_count(<Mnist as Model>::LAYERS).div_ceil(2);
    match update_ns(half) {
        Some(ns) => println!(
            "update pass alone, {half} parameters, one core: {ns:.3} ns a parameter ({:.1} us)",
            ns * half as f64 / 1e3
        ),
        None => println!("update pass alone: skipped (no AVX-512 here)"),
    }
}
