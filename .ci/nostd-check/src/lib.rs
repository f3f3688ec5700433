//! A `no_std`, allocator-free user of tensorbridge's core: the seed's cat-vs-dog head,
//! predicted and trained on statically sized buffers. Built for `thumbv7em-none-eabihf` by
//! `.ci/run`; its tests run on the host.
#![cfg_attr(not(test), no_std)]

use tensorbridge::nalgebra::{SMatrix, SVector};

tensorbridge::model! {
    /// The seed's cat-vs-dog head.
    pub struct CatDog { batch: 2, features: 4, classes: 2 }
}

/// The seed's hand-set head weights (`../../tests/seed.rs` works their logits out by hand).
pub fn seed_params() -> CatDogParams {
    CatDogParams {
        w0: SMatrix::from_row_slice(&[10.0, 2.0, 10.0, 1.0, -8.0, 9.0, 1.0, 10.0]),
        b0: SVector::from_column_slice(&[0.0, 0.0]),
    }
}

/// The seed's mini-batch and labels (0 = cat, 1 = dog).
pub fn seed_batch() -> (<CatDog as tensorbridge::Model>::Input, <CatDog as tensorbridge::Model>::Labels) {
    (SMatrix::from_row_slice(&[0.9, 0.8, 0.1, 0.05, 0.1, 0.2, 0.8, 0.95]), SVector::from_column_slice(&[0, 1]))
}

/// Classifies the seed batch with the seed weights: what a board would run.
pub fn classify() -> tensorbridge::Result<[u32; 2]> {
    let mut model = CatDog::with_params(seed_params())?;
    let (x, _) = seed_batch();
    let p = model.predict(&x)?;
    Ok([p[0], p[1]])
}

/// `steps` SGD steps from the seeded initialisation on the seed batch; the last loss.
pub fn train(steps: usize, lr: f32) -> tensorbridge::Result<f32> {
    let mut model = CatDog::new();
    let (x, y) = seed_batch();
    let mut loss = f32::NAN;
    for _ in 0..steps {
        loss = model.train_step(&x, &y, lr)?;
    }
    Ok(loss)
}

/// A bad label is a typed error, not a panic, in the core too.
pub fn bad_label_is_an_error() -> bool {
    let mut model = CatDog::new();
    let (x, _) = seed_batch();
    matches!(
        model.train_step(&x, &SVector::from_column_slice(&[0, 2]), 0.1),
        Err(tensorbridge::Error::LabelOutOfRange { row: 1, label: 2, .. })
    )
}

tensorbridge::model! {
    /// The same head with a hidden layer, trained with Adam: its moments sized statically,
    /// inside the model (no allocator).
    pub struct CatDogAdam { batch: 2, features: 4, hidden: [8], classes: 2, optimizer: adam }
}

/// `steps` Adam steps (PyTorch's defaults, at `lr`) from the seeded initialisation on the
/// seed batch; the last loss.
pub fn train_adam(steps: usize, lr: f32) -> tensorbridge::Result<f32> {
    let mut model = CatDogAdam::new();
    model.set_optimizer(tensorbridge::optim::Adam::default())?;
    let (x, y) = seed_batch();
    let mut loss = f32::NAN;
    for _ in 0..steps {
        loss = model.train_step(&x, &y, lr)?;
    }
    Ok(loss)
}

/// The constructors that take a device, as with `std` (`Name::on(&device)`,
/// `Name::on_with_params(&device, params)`): the same code builds with and without `std`.
pub fn classify_on(device: &tensorbridge::Device) -> tensorbridge::Result<[u32; 2]> {
    let mut model = CatDog::on_with_params(device, seed_params())?;
    let (x, _) = seed_batch();
    let p = model.predict(&x)?;
    let _fresh = CatDog::on(device)?;
    Ok([p[0], p[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_logits_by_hand() {
        let mut model = CatDog::with_params(seed_params()).unwrap();
        let (x, _) = seed_batch();
        let z = model.logits(&x).unwrap();
        // 0.9*10 + 0.8*10 + 0.1*-8 + 0.05*1 = 16.25; 0.9*2 + 0.8*1 + 0.1*9 + 0.05*10 = 4.0
        // 0.1*10 + 0.2*10 + 0.8*-8 + 0.95*1 = -2.45; 0.1*2 + 0.2*1 + 0.8*9 + 0.95*10 = 17.1
        let expected = [16.25f32, -2.45, 4.0, 17.1]; // column-major
        for (got, want) in z.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert_eq!(classify().unwrap(), [0, 1]);
    }

    #[test]
    fn seed_loss_by_hand() {
        let mut model = CatDog::with_params(seed_params()).unwrap();
        let (x, y) = seed_batch();
        // Row losses ln(1 + e^(4 - 16.25)) and ln(1 + e^(-2.45 - 17.1)), averaged.
        let expected = ((1.0 + (-12.25f64).exp()).ln() + (1.0 + (-19.55f64).exp()).ln()) / 2.0;
        let loss = model.loss(&x, &y).unwrap();
        assert!(((loss as f64) - expected).abs() < 1e-9, "{loss} vs {expected}");
    }

    #[test]
    fn training_learns_the_batch_and_errors_are_typed() {
        let first = train(1, 0.5).unwrap();
        let later = train(30, 0.5).unwrap();
        assert!(later < first / 4.0, "{first} -> {later}");
        assert!(bad_label_is_an_error());
    }

    #[test]
    fn adams_first_step_by_hand_and_training() {
        // At step 1, m = (1 - β1) g and v = (1 - β2) g², so with the bias corrections the
        // step is lr · g / (|g| + eps): about lr against the gradient's sign.
        let mut model = CatDogAdam::new();
        let (x, y) = seed_batch();
        let before = model.params();
        let (_, g) = model.gradients(&x, &y).unwrap();
        let lr = 0.01f32;
        model.train_step(&x, &y, lr).unwrap();
        let after = model.params();
        for ((p0, p1), g) in before.w0.iter().zip(after.w0.iter()).zip(g.w0.iter()) {
            let g = *g as f64;
            let expected = *p0 as f64 - lr as f64 * g / (g.abs() + 1e-8);
            assert!((*p1 as f64 - expected).abs() < 1e-6, "{p1} vs {expected}");
        }
        let first = train_adam(1, 0.01).unwrap();
        let later = train_adam(50, 0.01).unwrap();
        assert!(later < first / 4.0, "{first} -> {later}");
    }

    #[test]
    fn constructors_with_a_device_classify_the_seed() {
        assert_eq!(classify_on(&tensorbridge::Device::cpu()).unwrap(), [0, 1]);
    }
}

/// A hidden tanh layer in the core: XOR, which no linear head can learn.
pub mod tanh {
    use tensorbridge::nalgebra::{SMatrix, SVector};

    tensorbridge::model! {
        /// XOR through 8 tanh units.
        pub struct Xor { batch: 4, features: 2, hidden: [8], classes: 2, activation: tanh }
    }

    /// `steps` SGD steps on XOR from the seeded (Glorot) initialisation; the last loss.
    pub fn train(steps: usize, lr: f32) -> tensorbridge::Result<f32> {
        let mut model = Xor::new();
        let x = SMatrix::<f32, 4, 2>::from_row_slice(&[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        let y = SVector::<u32, 4>::from_column_slice(&[0, 1, 1, 0]);
        let mut loss = f32::NAN;
        for _ in 0..steps {
            loss = model.train_step(&x, &y, lr)?;
        }
        Ok(loss)
    }

    #[cfg(test)]
    #[test]
    fn tanh_learns_xor() {
        // ln 2 (0.69) is a linear head's best; the hidden layer gets far below it.
        let loss = train(2000, 0.5).unwrap();
        assert!(loss < 0.1, "{loss}");
    }
}
