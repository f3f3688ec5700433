//! The seed example: the smallest complete use of tensorbridge, explained by its own output.
//!
//! The model, `CatDog`, is a linear softmax classifier: 4 features in (cached image
//! features), 2 classes out (0 = cat, 1 = dog), mini-batches of 2 rows; its logits are
//! `x · W + b` with `W` a 4 x 2 weight matrix and `b` a bias of 2.
//!
//! Stages 1-5 follow one mini-batch from the host (the CPU side, where data is prepared)
//! to the device (where the model computes: an OpenCL device, or the CPU backend) and back,
//! with hand-set weights (`W = [[10, 2], [10, 1], [-8, 9], [1, 10]]`, `b = 0`), so that every
//! printed number can be checked by hand: the logits are 16.25 / 4.0 for the first row and
//! -2.45 / 17.1 for the second. After stage 5, a fresh model (seeded random weights) is
//! trained on all ten rows.
//!
//! Run: `cargo run --release --example seed` (`TENSORBRIDGE_DEVICE=cpu|opencl` to choose).

use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::{host, Device};
use tensorbridge::{matrix, vector};

tensorbridge::model! {
    /// The seed's cat-vs-dog head: 4 cached image features in, 2 classes out
    /// (0 = cat, 1 = dog), mini-batches of 2.
    pub struct CatDog {
        batch: 2,
        features: 4,
        classes: 2,
    }
}

fn main() -> tensorbridge::Result<()> {
    println!(
        "The model: CatDog, a linear softmax classifier, 4 features -> 2 classes (0 = cat, 1 = dog),\n\
         logits = x . W + b, mini-batches of 2 rows. Stages 1-5 follow one mini-batch from the host\n\
         (the CPU side, where data is prepared) to the device (where the model computes) and back,\n\
         with hand-set weights, so every number below can be checked by hand.\n"
    );
    // ---- Stage 1: the host prepares the data.
    // Ten cached feature vectors. Rows 0-2 are the document's; the other seven are made up in
    // the same spirit: cats score high on the first two features, dogs on the last two.
    let all_features: SMatrix<f32, 10, 4> = matrix![
        0.9,  0.8,  0.1,  0.05; // cat 1
        0.1,  0.2,  0.8,  0.95; // dog 1
        0.8,  0.9,  0.0,  0.15; // cat 2
        0.2,  0.1,  0.9,  0.85; // dog 2
        0.85, 0.7,  0.2,  0.1;  // cat 3
        0.15, 0.3,  0.7,  0.9;  // dog 3
        0.7,  0.95, 0.1,  0.2;  // cat 4
        0.05, 0.15, 0.95, 0.8;  // dog 4
        0.95, 0.6,  0.15, 0.05; // cat 5
        0.3,  0.25, 0.75, 0.7;  // dog 5
    ];
    let all_labels: SVector<u32, 10> = vector![0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
    println!(
        "Stage 1 (host: prepare the data): {} cached feature vectors of {} features, labels {:?}",
        all_features.nrows(),
        all_features.ncols(),
        all_labels.as_slice()
    );

    // Slice rows 0..2 as the mini-batch: a statically sized [2 x 4] view, copied out.
    let x: SMatrix<f32, 2, 4> = all_features.fixed_rows::<2>(0).into_owned();
    let y: SVector<u32, 2> = all_labels.fixed_rows::<2>(0).into_owned();
    println!("  the first mini-batch, rows 0-1: x = {:?}, y = {:?}", rows(&x), y.as_slice());

    // ---- Stage 2: across the bridge.
    let (device, why) = Device::auto_explained();
    println!("Stage 2 (host -> device: upload the batch): device = {device}");
    println!("  why this device: {why}");
    let params = CatDogParams { w0: matrix![10.0, 2.0; 10.0, 1.0; -8.0, 9.0; 1.0, 10.0], b0: vector![0.0, 0.0] };
    println!("  hand-set weights W = {:?}, b = {:?}", rows(&params.w0), params.b0.as_slice());
    let model = CatDog::with_params(&device, params)?;
    let x_device = model.to_device(&x)?;
    println!("  x is now a device tensor: {x_device:?}");

    // ---- Stage 3: the device computes logits = x . W (+ b, here 0).
    let logits_device = model.forward(&x_device)?;
    let loss = model.loss(&x, &y)?;
    println!(
        "Stage 3 (device: compute): logits = x . W + b, still on the device: {logits_device:?};\n  \
         mean cross-entropy loss of the batch = {loss:.3e} (near 0: both rows are confidently right)"
    );

    // ---- Stage 4: back across the bridge.
    let logits = logits_device.to_host()?;
    println!("Stage 4 (device -> host: download the logits): {:?}", rows(&logits));
    println!("  by hand: row 0 = [0.9*10 + 0.8*10 - 0.1*8 + 0.05*1, ...] = [16.25, 4.0], row 1 = [-2.45, 17.1]");

    // ---- Stage 5: the host analyses.
    let predicted = host::argmax_rows(&logits);
    let correct: Vec<bool> = predicted.iter().zip(y.iter()).map(|(p, l)| p == l).collect();
    println!(
        "Stage 5 (host: analyse): predicted class per row (argmax) = {predicted:?}, correct = {correct:?}, accuracy = {:.1}",
        host::accuracy(&predicted, y.as_slice())
    );

    // ---- Training a fresh head on all ten rows, learning rates as a plain host list.
    println!(
        "\nTraining: a fresh CatDog (seeded random weights) learns all ten rows, 5 mini-batches per\n\
         epoch, one SGD step per batch; the learning rate of each epoch comes from a host-side list."
    );
    let mut model = CatDog::new(&device)?;
    let learning_rates = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.1, 0.1];
    for (epoch, &lr) in learning_rates.iter().enumerate() {
        let mut total = 0.0;
        for start in (0..10).step_by(2) {
            let xb: SMatrix<f32, 2, 4> = all_features.fixed_rows::<2>(start).into_owned();
            let yb: SVector<u32, 2> = all_labels.fixed_rows::<2>(start).into_owned();
            total += model.train_step(&xb, &yb, lr)?;
        }
        println!("  epoch {} (lr {lr:<4}): mean loss {:.4}", epoch + 1, total / 5.0);
    }
    let mut predicted = Vec::new();
    for start in (0..10).step_by(2) {
        let xb: SMatrix<f32, 2, 4> = all_features.fixed_rows::<2>(start).into_owned();
        predicted.extend(model.predict(&xb)?.iter().copied());
    }
    println!(
        "  predictions {predicted:?}\n  accuracy on the ten rows: {:.1}",
        host::accuracy(&predicted, all_labels.as_slice())
    );
    Ok(())
}

/// A matrix as a list of rows, for printing.
fn rows<const R: usize, const C: usize>(m: &SMatrix<f32, R, C>) -> Vec<Vec<f32>> {
    m.row_iter().map(|r| r.iter().copied().collect()).collect()
}
