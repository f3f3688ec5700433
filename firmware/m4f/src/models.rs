//! The models and data of the firmware's programs, shared with the host
//! (`examples/firmware_host.rs`): the seed's cat-vs-dog head with its hand-set weights and ten
//! rows, and a bigger model, `{batch 8, features 16, hidden [32], classes 4}`, with made-up
//! data from an integer generator (so that host and board draw the same values).

use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::{HostTensor, Model};

tensorbridge::model! {
    /// The seed's cat-vs-dog head: 4 features in, 2 classes out, mini-batches of 2.
    pub struct CatDog { batch: 2, features: 4, classes: 2 }
}

tensorbridge::model! {
    /// A bigger model: 16 features, one hidden layer of 32 (ReLU), 4 classes, batches of 8.
    pub struct Big { batch: 8, features: 16, hidden: [32], classes: 4 }
}

/// The seed's hand-set head weights: `W = [[10, 2], [10, 1], [-8, 9], [1, 10]]`, `b = 0`.
pub fn seed_params() -> CatDogParams {
    CatDogParams {
        w0: SMatrix::from_row_slice(&[10.0, 2.0, 10.0, 1.0, -8.0, 9.0, 1.0, 10.0]),
        b0: SVector::from_column_slice(&[0.0, 0.0]),
    }
}

/// The seed's ten rows (cats score high on the first two features, dogs on the last two),
/// as five mini-batches of two, and their labels (0 = cat, 1 = dog).
const SEED_ROWS: [[f32; 4]; 10] = [
    [0.9, 0.8, 0.1, 0.05],
    [0.1, 0.2, 0.8, 0.95],
    [0.8, 0.9, 0.0, 0.15],
    [0.2, 0.1, 0.9, 0.85],
    [0.85, 0.7, 0.2, 0.1],
    [0.15, 0.3, 0.7, 0.9],
    [0.7, 0.95, 0.1, 0.2],
    [0.05, 0.15, 0.95, 0.8],
    [0.95, 0.6, 0.15, 0.05],
    [0.3, 0.25, 0.75, 0.7],
];

/// Mini-batch `k` (rows `2k` and `2k + 1`) of the seed's rows, and its labels.
pub fn seed_batch(k: usize) -> (<CatDog as Model>::Input, <CatDog as Model>::Labels) {
    let x = <<CatDog as Model>::Input as HostTensor>::from_fn(|i| SEED_ROWS[2 * (k % 5) + i % 2][i / 2]);
    (x, SVector::from_column_slice(&[0, 1]))
}

/// Batch `k` of the bigger model's made-up data: features uniform in `[-0.5, 0.5)` from an
/// integer generator (so that host and board draw the same values), and labels that follow
/// the sign of two features' sums, so that there is something to learn.
pub fn big_batch(k: u32) -> (<Big as Model>::Input, <Big as Model>::Labels) {
    let mut state = 0x2545_F491u32 ^ k.wrapping_mul(0x9E37_79B9);
    let x = <<Big as Model>::Input as HostTensor>::from_fn(|_| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 * (1.0 / 16_777_216.0) - 0.5
    });
    let y = <<Big as Model>::Labels as HostTensor>::from_fn(|r| {
        let a = x[(r, 0)] + x[(r, 1)] > 0.0;
        let b = x[(r, 2)] + x[(r, 3)] > 0.0;
        u32::from(a) * 2 + u32::from(b)
    });
    (x, y)
}
