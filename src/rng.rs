//! A small seeded generator (SplitMix64) for initialisation and shuffling. Hand-written so
//! that a seed gives the same parameters in every version of tensorbridge and on every
//! platform: a dependency upgrade can never change a user's "deterministic" model. (One
//! deliberate change: the initialisation's normals are drawn in single precision since the
//! `no_std` core runs on single-precision FPUs, [`Rng::normal_pair`]; a seed gives other
//! values than before that change, and the same ones on every platform since.)

/// The seed `new` uses ([`Engine::new`](crate::Engine::new), the `no_std` core's
/// [`Cpu::with_seed`](crate::cpu::Cpu::with_seed)): every model created with `new` starts
/// from the same parameters on every machine and in every version (since the normals were
/// drawn in single precision; see the module's docs).
pub const DEFAULT_SEED: u64 = 0x7E45_0B21_D6E5_0001;

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, one multiply-xorshift
/// per output.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Standard normal in `f64` (Box-Muller; one of the pair is used), for host code; the
    /// core initialises with [`Rng::normal_pair`], in `f32`.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        // libm in every build, so that the `no_std` core initialises exactly as the full crate.
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)
    }

    /// Two independent standard normals in `f32` arithmetic only (Marsaglia's polar method:
    /// a point uniform in the unit disc, scaled by `sqrt(-2 ln s / s)`; no trigonometry), so
    /// that a single-precision FPU initialises a model without software `f64`. Each draw
    /// takes one 64-bit output: 24 bits for each coordinate.
    pub fn normal_pair(&mut self) -> (f32, f32) {
        loop {
            let bits = self.next_u64();
            // Uniform in [-1, 1): 24 random bits each, exact in f32.
            let u = (bits >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0;
            let v = ((bits >> 16) & 0x00FF_FFFF) as f32 * (2.0 / 16_777_216.0) - 1.0;
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                let f = crate::math::sqrt(-2.0 * libm::logf(s) / s);
                return (u * f, v * f);
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;
    #[cfg(not(feature = "std"))]
    use std::vec::Vec;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of the reference C implementation (Vigna's splitmix64.c) for seed 0.
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Rng::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn normal_pairs_have_unit_moments_and_no_correlation() {
        let mut rng = Rng::new(7);
        let n = 100_000;
        let pairs: Vec<(f64, f64)> =
            (0..n).map(|_| rng.normal_pair()).map(|(a, b)| (f64::from(a), f64::from(b))).collect();
        let xs: Vec<f64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        let kurtosis = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / xs.len() as f64 / (var * var);
        let corr = pairs.iter().map(|&(a, b)| (a - mean) * (b - mean)).sum::<f64>() / n as f64 / var;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        // A normal's kurtosis is 3 (a uniform's 1.8).
        assert!((kurtosis - 3.0).abs() < 0.1, "kurtosis {kurtosis}");
        assert!(corr.abs() < 0.01, "correlation {corr}");
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }
}
