//! The model and data of the Cortex-M0 firmware, shared with the host
//! (`examples/firmware_m0_host.rs`): `{batch 8, features 16, hidden [32], classes 4}` with
//! made-up weights and features from an integer generator (so that host and board draw the
//! same values).

use tensorbridge::{HostTensor, Model, Params};

tensorbridge::model! {
    /// 16 features, one hidden layer of 32 (ReLU), 4 classes, batches of 8.
    pub struct Big { batch: 8, features: 16, hidden: [32], classes: 4 }
}

/// Parameters of [`Big`], flat.
pub const PARAMS: usize = <BigParams as Params>::LEN;

/// A linear congruential generator's next value, uniform in `[-0.5, 0.5)`.
fn uniform(state: &mut u32) -> f32 {
    *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    (*state >> 8) as f32 * (1.0 / 16_777_216.0) - 0.5
}

/// Made-up parameters of [`Big`], in the flat layout: weights in `[-0.5, 0.5)`, biases in
/// `[-0.05, 0.05)`.
pub fn params() -> [f32; PARAMS] {
    let mut state = 0x1234_5678u32;
    let mut flat = [0.0f32; PARAMS];
    for (k, v) in flat.iter_mut().enumerate() {
        let u = uniform(&mut state);
        // The biases are the last `out` values of each layer: 16*32 + 32, then 32*4 + 4.
        let bias = (512..544).contains(&k) || k >= 544 + 128;
        *v = if bias { u * 0.1 } else { u };
    }
    flat
}

/// Batch `k` of made-up features, uniform in `[-2, 2)`.
pub fn batch(k: u32) -> <Big as Model>::Input {
    let mut state = 0x2545_F491u32 ^ k.wrapping_mul(0x9E37_79B9);
    <<Big as Model>::Input as HostTensor>::from_fn(|_| 4.0 * uniform(&mut state))
}

tensorbridge::model! {
    /// Odd sizes for the integer pass's edges: 5 features (not a whole group of four),
    /// hidden [7, 6] (an odd layer, then an even one), 3 classes, batches of 7 (a block of
    /// four rows, one of two, and one row alone).
    pub struct Odd { batch: 7, features: 5, hidden: [7, 6], classes: 3 }
}

/// Parameters of [`Odd`], flat.
pub const ODD_PARAMS: usize = <OddParams as Params>::LEN;

/// Made-up parameters of [`Odd`], in the flat layout, uniform in `[-0.5, 0.5)`.
pub fn odd_params() -> [f32; ODD_PARAMS] {
    let mut state = 0x0DD5_EED5u32;
    let mut flat = [0.0f32; ODD_PARAMS];
    for v in flat.iter_mut() {
        *v = uniform(&mut state);
    }
    flat
}

/// Batch `k` of made-up features of [`Odd`], uniform in `[-2, 2)`.
pub fn odd_batch(k: u32) -> <Odd as Model>::Input {
    let mut state = 0x7F4A_7C15u32 ^ k.wrapping_mul(0x9E37_79B9);
    <<Odd as Model>::Input as HostTensor>::from_fn(|_| 4.0 * uniform(&mut state))
}
