//! How close the CPU backend's AVX2 variant can come to its AVX-512 variant on this
//! machine, with the same bits: the digits train step on each, beside the lowest ratio the
//! processor's multiply-add throughput allows.
//!
//! Every variant computes the same sums in the same order, so the AVX2 variant issues
//! twice as many fused multiply-adds on half the lanes. On a processor with two 512-bit
//! FMA ports (this project's benchmark machines), a 256-bit FMA does half the work of a
//! 512-bit one in the same slot, and at the same share of the peak the step's products
//! take twice as long on AVX2, whatever the code around them does; on one with a single
//! 512-bit port, the two widths are closer. This program measures which it is:
//!
//! 1. **Peaks.** Twelve independent chains of `vfmadd` (enough to cover the latency on
//!    either width), `ymm` and `zmm`, best of 20 runs: multiply-adds a second.
//! 2. **Steps.** The digits step (`{batch 32, features 64, hidden [32], classes 10}`, SGD,
//!    `f32`), one train step's median time over 15 trials, in a child process per variant
//!    (`TENSORBRIDGE_SIMD` is read once per process), AVX-512 and AVX2 interleaved, five
//!    rounds. Each child measures the peaks just before its step.
//! 3. **The floor.** The step's `M` = 161,792 multiply-adds take at least `M / peak` at each
//!    width; the rest of the AVX-512 step, `t512 − M / peak512`, is taken as the code both
//!    variants share. The lowest AVX2 ratio with the same bits is then
//!    `(M / peak256 + t512 − M / peak512) / t512`: both products at their peaks and the rest
//!    at its AVX-512 time, which flatters AVX2 unless its products ran nearer their peak than
//!    AVX-512's do.
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench avx2_floor` (x86-64 with AVX-512F and
//! FMA; elsewhere it says so and stops).

// Off x86-64 only `main`'s message is compiled in use.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::time::Instant;

use tensorbridge_xtests::median_step_us;

tensorbridge::model! { struct Digits { batch: 32, features: 64, hidden: [32], classes: 10 } }

/// The digits step's multiply-adds: the forward products `B (F H + H C)`, the weight
/// gradients (as many), and the hidden layer's input gradient `B H C`.
const STEP_MACS: f64 = (2 * 32 * (64 * 32 + 32 * 10) + 32 * 32 * 10) as f64;

/// Independent multiply-add chains a run keeps in flight.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// `iters` rounds of [`CHAINS`] 256-bit multiply-adds; the lanes' sum, so that none is
    /// dropped.
    ///
    /// # Safety
    /// The processor must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run256(iters: u64) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for c in &mut acc {
                *c = _mm256_fmadd_ps(*c, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &c| _mm256_add_ps(s, c));
        // SAFETY: `lanes` holds the vector's eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }

    /// `iters` rounds of [`CHAINS`] 512-bit multiply-adds; the lanes' sum.
    ///
    /// # Safety
    /// The processor must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn run512(iters: u64) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for c in &mut acc {
                *c = _mm512_fmadd_ps(*c, a, b);
            }
        }
        let sum = acc.iter().fold(_mm512_setzero_ps(), |s, &c| _mm512_add_ps(s, c));
        _mm512_reduce_add_ps(sum)
    }
}

/// The best of 20 runs of `run(iters)` ([`CHAINS`] × `lanes` multiply-adds a round), in
/// multiply-adds a second.
fn peak_rate(lanes: usize, run: impl Fn(u64) -> f32) -> f64 {
    let iters = 2_000_000u64;
    (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(run(std::hint::black_box(iters)));
            (iters as f64 * (CHAINS * lanes) as f64) / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// What a child process measures: the two peaks (multiply-adds a second), then the step
/// (microseconds), under its `TENSORBRIDGE_SIMD`.
struct Child {
    p256: f64,
    p512: f64,
    step: f64,
}

/// Runs this program again with `TENSORBRIDGE_SIMD=simd` and reads what it measured.
fn child(simd: &str) -> Child {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .env("AVX2_FLOOR_CHILD", "1")
        .env("TENSORBRIDGE_SIMD", simd)
        .output()
        .expect("child run");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match v[..] {
        [p256, p512, step] => Child { p256, p512, step },
        _ => panic!("the child printed {text:?}"),
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return println!("avx2_floor: this processor lacks AVX-512F, AVX2 or FMA; nothing to compare");
    }
    if std::env::var_os("AVX2_FLOOR_CHILD").is_some() {
        // The peaks just before the step, in the same process: a shared machine's clock
        // moves from one second to the next.
        // SAFETY: AVX2 and FMA are present (checked above).
        let p256 = peak_rate(8, |n| unsafe { peak::run256(n) });
        // SAFETY: AVX-512F is present (checked above).
        let p512 = peak_rate(16, |n| unsafe { peak::run512(n) });
        return println!("{p256} {p512} {}", median_step_us::<Digits>());
    }
    println!("digits step: {STEP_MACS} multiply-adds; FMA peaks of one thread ({CHAINS} chains, best of 20), in G multiply-adds a second, measured just before the AVX-512 step");
    println!(
        "{:<6} {:>9} {:>9} {:>12} {:>12} {:>16} {:>18}",
        "round", "peak 256", "peak 512", "AVX-512 us", "AVX2 us", "AVX2 / AVX-512", "floor, same bits"
    );
    for round in 1..=5 {
        let wide = child("avx512");
        let narrow = child("avx2");
        let rest = wide.step - STEP_MACS / wide.p512 * 1e6;
        let floor = (STEP_MACS / wide.p256 * 1e6 + rest) / wide.step;
        println!(
            "{round:<6} {:>9.1} {:>9.1} {:>12.2} {:>12.2} {:>16.2} {floor:>18.2}",
            wide.p256 / 1e9,
            wide.p512 / 1e9,
            wide.step,
            narrow.step,
            narrow.step / wide.step
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("avx2_floor: compares the x86-64 variants; nothing to compare on this processor");
}
