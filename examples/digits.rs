//! Handwritten digits (8x8, UCI) on the real runtime: load the files NumPy wrote, split 70/30 stratified,
//! standardise with the training statistics, train a linear softmax classifier, report the
//! test accuracy and confusion matrix, then save a checkpoint and the test logits (`.npy`)
//! for NumPy.
//!
//! ```text
//! cargo run --release --example digits [-- DATA_DIR [OUTPUT_DIR]]
//! ```
//! Reads `digits_features.npy` and `digits_labels.npy` from DATA_DIR (default: the
//! repository's `data/`, see `data/README.md`). Writes the checkpoint `digits.safetensors`,
//! the test logits `digits_test_logits.npy` and the training curves `digits_curves.svg` to
//! OUTPUT_DIR (default: `target/examples-out/digits/` in the repository), created if missing.
//! Both are printed first. `TENSORBRIDGE_DEVICE=cpu|opencl` picks the device.

use std::path::PathBuf;

use tensorbridge::data::{Dataset, Standardizer};
use tensorbridge::{npy, Device, FitOptions};

tensorbridge::model! {
    /// Digits: 64 pixels (0..16), 10 classes, batches of 32.
    pub struct Digits {
        batch: 32,
        features: 64,
        classes: 10,
    }
}

/// Seeds of the split and of the per-epoch shuffling.
const SPLIT_SEED: u64 = 0;
const TRAIN_SEED: u64 = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let data_dir =
        args.next().map_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data")), PathBuf::from);
    let out_dir = args.next().map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/examples-out/digits")),
        PathBuf::from,
    );
    println!("data from {}", data_dir.display());
    println!("outputs to {}", out_dir.display());
    std::fs::create_dir_all(&out_dir)?;

    let data = Dataset::from_npy(data_dir.join("digits_features.npy"), data_dir.join("digits_labels.npy"))?;
    let (train, test) = data.split_stratified(0.3, SPLIT_SEED)?;
    let scaler = Standardizer::fit(&train)?;
    let (train, test) = (scaler.apply(&train)?, scaler.apply(&test)?);
    println!(
        "digits: {} rows, {} train / {} test, {} features",
        data.len(),
        train.len(),
        test.len(),
        data.n_features()
    );

    let device = Device::auto();
    println!("device: {device}");
    let mut model = Digits::new(&device)?;
    // The learning-rate list: 30 epochs, 0.1 for 20, then 0.02.
    let rates: Vec<f32> = (0..30).map(|e| if e < 20 { 0.1 } else { 0.02 }).collect();
    let options = FitOptions::new().validation(&test).plot_svg(out_dir.join("digits_curves.svg")).on_epoch(|e| {
        if e.epoch % 5 == 0 || e.epoch == 1 {
            let test_acc = e.validation.as_ref().map_or(f64::NAN, |m| m.accuracy);
            println!(
                "epoch {:>3}  lr {:.2}  loss {:.4}  train accuracy {:.3}  test accuracy {:.3}",
                e.epoch, e.learning_rate, e.loss, e.accuracy, test_acc
            );
        }
    });
    let history = model.fit_with(&train, &rates, TRAIN_SEED, options)?;
    let final_train = history.last().map_or(f64::NAN, |e| e.accuracy);

    let metrics = model.evaluate(&test)?;
    println!("train accuracy {final_train:.3}; test {metrics}");

    let checkpoint = out_dir.join("digits.safetensors");
    model.save(&checkpoint)?;
    let logits_path = out_dir.join("digits_test_logits.npy");
    npy::write_matrix(&logits_path, &model.logits_of(&test)?)?;
    // The checkpoint restores the same model.
    let restored = Digits::load(&device, &checkpoint)?;
    assert_eq!(restored.evaluate(&test)?.accuracy, metrics.accuracy);
    println!(
        "saved {}, {} and {}",
        checkpoint.display(),
        logits_path.display(),
        out_dir.join("digits_curves.svg").display()
    );
    Ok(())
}
