//! One model serves many threads: inference takes `&self`, a model is `Send + Sync`, and
//! predictions from 4 threads sharing one `Arc<Model>` equal the sequential ones bit for bit,
//! on the CPU and on OpenCL (both kernel paths).

use std::sync::Arc;
use std::thread;

use crate::support::{noise, paths};
use tensorbridge::nalgebra::SMatrix;
use tensorbridge::{Device, Model};

tensorbridge::model! {
    pub struct Mlp { batch: 8, features: 6, classes: 4, hidden: [16] }
}

fn assert_send_sync<T: Send + Sync>() {}

/// Batch `k`: deterministic values in [-1, 1) (independent of the crate's RNG).
fn batch(k: usize) -> SMatrix<f32, 8, 6> {
    SMatrix::from_fn(|r, c| noise(k as u64 + 1, r * 6 + c))
}

fn labels(k: usize) -> tensorbridge::nalgebra::SVector<u32, 8> {
    tensorbridge::nalgebra::SVector::from_fn(|r, _| ((r + k) % 4) as u32)
}

/// Sequential results, then the same calls from 4 threads at once (each thread many
/// batches, interleaved), compared bit for bit.
fn shared_model_agrees(device: &Device) {
    assert_send_sync::<Mlp>();
    assert_send_sync::<tensorbridge::DeviceTensor<<Mlp as Model>::Logits>>();
    let model = Arc::new(Mlp::new(device).unwrap());
    let n = 24;
    let expected: Vec<_> = (0..n)
        .map(|k| {
            let x = batch(k);
            let logits = model.logits(&x).unwrap();
            let via_device = model.forward(&model.to_device(&x).unwrap()).unwrap().to_host().unwrap();
            (model.predict(&x).unwrap(), logits, via_device, model.loss(&x, &labels(k)).unwrap().to_bits())
        })
        .collect();
    let expected = Arc::new(expected);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (model, expected) = (Arc::clone(&model), Arc::clone(&expected));
            thread::spawn(move || {
                for round in 0..3 {
                    for k in (0..n).filter(|k| (k + t + round) % 2 == 0) {
                        let x = batch(k);
                        let (predicted, logits, via_device, loss) = &expected[k];
                        assert_eq!(&model.predict(&x).unwrap(), predicted, "thread {t}, batch {k}");
                        let got = model.logits(&x).unwrap();
                        assert!(got.iter().zip(logits.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "logits {k}");
                        let got = model.forward(&model.to_device(&x).unwrap()).unwrap().to_host().unwrap();
                        assert!(
                            got.iter().zip(via_device.iter()).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "forward {k}"
                        );
                        assert_eq!(model.loss(&x, &labels(k)).unwrap().to_bits(), *loss, "loss {k}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Scoped threads borrowing the model work too (no Arc).
    let model = Mlp::new(device).unwrap();
    thread::scope(|s| {
        for t in 0..4 {
            let (model, expected) = (&model, &expected);
            s.spawn(move || assert_eq!(model.predict(&batch(t)).unwrap(), expected[t].0));
        }
    });
}

/// On the CPU, and on OpenCL on both kernel paths.
fn shared_model_agrees_with_sequential(device: &Device) {
    for device in paths(device) {
        shared_model_agrees(&device);
    }
}

crate::tests! {
    device shared_model_agrees_with_sequential,
}
