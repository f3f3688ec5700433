//! The seed's journey (../shared/seed/README.md): a mini-batch prepared on the host crosses
//! to the device, runs through the model, and its logits come back for metrics. Then a
//! fresh model is trained on all ten rows with a host-side list of learning rates.
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
    // ---- Stage 1: the host is the data steward.
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
        "Stage 1 (host): {} cached feature vectors of {} features, labels {:?}",
        all_features.nrows(),
        all_features.ncols(),
        all_labels.as_slice()
    );

    // Slice rows 0..2 as the mini-batch: a statically sized [2 x 4] view, copied out.
    let x: SMatrix<f32, 2, 4> = all_features.fixed_rows::<2>(0).into_owned();
    let y: SVector<u32, 2> = all_labels.fixed_rows::<2>(0).into_owned();
    println!("  mini-batch x = {:?}, y = {:?}", rows(&x), y.as_slice());

    // ---- Stage 2: across the bridge.
    let device = Device::auto();
    println!("Stage 2 (bridge): device = {device}");
    let params = CatDogParams { w0: matrix![10.0, 2.0; 10.0, 1.0; -8.0, 9.0; 1.0, 10.0], b0: vector![0.0, 0.0] };
    let mut model = CatDog::with_params(&device, params)?;
    let x_device = model.to_device(&x)?;
    println!("  x is now {x_device:?}");

    // ---- Stage 3: the device computes logits = x . W (+ b, here 0).
    let logits_device = model.forward(&x_device)?;
    let loss = model.loss(&x, &y)?;
    println!("Stage 3 (device): forward pass -> {logits_device:?}; loss = {loss:.3e}");

    // ---- Stage 4: back across the bridge.
    let logits = logits_device.to_host()?;
    println!("Stage 4 (bridge back): logits = {:?}", rows(&logits));

    // ---- Stage 5: the host analyses.
    let predicted = host::argmax_rows(&logits);
    let correct: Vec<bool> = predicted.iter().zip(y.iter()).map(|(p, l)| p == l).collect();
    println!(
        "Stage 5 (host): argmax = {predicted:?}, correct = {correct:?}, accuracy = {:.1}",
        host::accuracy(&predicted, y.as_slice())
    );

    // ---- Training a fresh head on all ten rows, learning rates as a plain host list.
    println!("\nTraining a fresh CatDog (seeded initialisation) on the ten rows:");
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
