//! Training on separable synthetic data: the loss falls and the accuracy reaches 1.0.

use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::rng::Rng;
use tensorbridge::{Device, Model};

tensorbridge::model! { struct Blobs { batch: 8, features: 3, classes: 3 } }
tensorbridge::model! { struct BlobsMlp { batch: 8, features: 3, hidden: [16], classes: 3 } }

/// Three well-separated Gaussian blobs (centres 4 apart, unit noise / 4), 8 rows per batch.
fn batches(n: usize, seed: u64) -> Vec<(SMatrix<f32, 8, 3>, SVector<u32, 8>)> {
    let centres = [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]];
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let y = SVector::<u32, 8>::from_fn(|_, _| rng.below(3) as u32);
            let x = SMatrix::<f32, 8, 3>::from_fn(|r, c| centres[y[r] as usize][c] + 0.25 * rng.normal() as f32);
            (x, y)
        })
        .collect()
}

macro_rules! train_to_perfect_accuracy {
    ($model:ty) => {{
        let mut model = <$model>::new(&Device::cpu()).unwrap();
        let train = batches(32, 1);
        let test = batches(8, 2);
        let mean_loss = |m: &mut $model| -> f32 {
            test.iter().map(|(x, y)| m.loss(x, y).unwrap()).sum::<f32>() / test.len() as f32
        };
        let first = mean_loss(&mut model);
        let learning_rates = [0.5, 0.5, 0.2, 0.1];
        let mut losses = vec![first];
        for lr in learning_rates {
            for (x, y) in &train {
                model.train_step(x, y, lr).unwrap();
            }
            losses.push(mean_loss(&mut model));
        }
        assert!(losses.last().unwrap() < &(first * 0.1), "loss did not fall: {losses:?}");
        let correct: usize = test
            .iter()
            .map(|(x, y)| model.predict(x).unwrap().iter().zip(y.iter()).filter(|(p, l)| p == l).count())
            .sum();
        assert_eq!(correct, test.len() * <$model as Model>::BATCH, "accuracy below 1.0");
    }};
}

fn softmax_regression_separates_blobs() {
    train_to_perfect_accuracy!(Blobs);
}

fn mlp_separates_blobs() {
    train_to_perfect_accuracy!(BlobsMlp);
}

crate::tests! {
    plain softmax_regression_separates_blobs,
    plain mlp_separates_blobs,
}
