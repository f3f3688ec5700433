//! `model!`'s `weights: "path"` key and the parameters held apart from a model
//! (`tensorbridge::cpu::Weights`): the checkpoint of `tests/fixtures/weights.py`, compiled in,
//! holds the values of the script's formulas and those that `load` reads from the same file
//! at run time; inference from the weights in place gives the bits of a model built from
//! them; a model built from them trains.

use tensorbridge::cpu::{Cpu, Weights, Work};
use tensorbridge::layout::FlatParams;
use tensorbridge::nalgebra::SMatrix;
use tensorbridge::{Device, HostTensor, Model};

tensorbridge::model! {
    /// 4 -> 8 -> 3, with the weights of `tests/fixtures/weights/mlp.safetensors` compiled in
    /// (the path is relative to the declaring crate, xtests).
    pub struct Compiled { batch: 4, features: 4, hidden: [8], classes: 3, weights: "../tests/fixtures/weights/mlp.safetensors" }
}

tensorbridge::model! {
    /// `Compiled` with Adam, its weights from a checkpoint that also holds an Adam state
    /// (`tests/fixtures/weights/adam.safetensors`), which `weights:` leaves out.
    pub struct CompiledAdam {
        batch: 4, features: 4, hidden: [8], classes: 3, optimizer: adam,
        weights: "../tests/fixtures/weights/adam.safetensors"
    }
}

fn fixture() -> std::path::PathBuf {
    crate::support::repo().join("tests/fixtures/weights/mlp.safetensors")
}

fn x() -> SMatrix<f32, 4, 4> {
    SMatrix::from_fn(|r, c| (r as f32 - 1.5) * 0.5 + c as f32 * 0.25)
}

fn compiled_weights_are_the_formulas_of_the_fixture_script() {
    let p = Compiled::weights().params();
    for i in 0..4 {
        for o in 0..8 {
            assert_eq!(p.w0[(i, o)], (3.0 * i as f32 - o as f32) / 16.0, "w0[{i}, {o}]");
        }
    }
    for o in 0..8 {
        assert_eq!(p.b0[o], o as f32 / 8.0 - 0.5, "b0[{o}]");
    }
    for i in 0..8 {
        for o in 0..3 {
            assert_eq!(p.w1[(i, o)], (i as f32 - 2.0 * o as f32) / 32.0, "w1[{i}, {o}]");
        }
    }
    for o in 0..3 {
        assert_eq!(p.b1[o], (o as f32 - 1.0) / 4.0, "b1[{o}]");
    }
}

fn compiled_weights_equal_the_file_loaded_at_run_time() {
    let loaded = Compiled::load(&Device::cpu(), fixture()).unwrap();
    assert_eq!(Compiled::weights().params(), loaded.params().unwrap());
}

fn inference_in_place_gives_the_bits_of_a_model_built_from_the_weights() {
    let mut work = Work::<Compiled>::new();
    let weights = Compiled::weights();
    let in_place = weights.logits(&mut work, &x()).unwrap();
    let mut cpu = Cpu::<Compiled>::from_weights(weights);
    let model = Compiled::from_weights(&Device::cpu(), weights).unwrap();
    let bits = |m: &SMatrix<f32, 4, 3>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&in_place), bits(&cpu.logits(&x()).unwrap()));
    assert_eq!(bits(&in_place), bits(&model.logits(&x()).unwrap()));
    assert_eq!(weights.predict(&mut work, &x()).unwrap(), model.predict(&x()).unwrap());
    // Hand arithmetic for row 0, x = [-0.75, -0.5, -0.25, 0] (Σ x_i = -1.5, Σ i·x_i = -1):
    // h_o = relu(Σ_i x_i (3i - o)/16 + o/8 - 0.5) = relu((-3 + 1.5 o)/16 + o/8 - 0.5)
    //     = relu(0.21875 o - 0.6875): [0, 0, 0, 0, 0.1875, 0.40625, 0.625, 0.84375].
    let h = [0.0f32, 0.0, 0.0, 0.0, 0.1875, 0.40625, 0.625, 0.84375];
    for o in 0..3 {
        let z: f32 = h.iter().enumerate().map(|(i, &h)| h * (i as f32 - 2.0 * o as f32) / 32.0).sum::<f32>()
            + (o as f32 - 1.0) / 4.0;
        assert!((in_place[(0, o)] - z).abs() < 1e-6, "logit[0, {o}] = {} vs {z} by hand", in_place[(0, o)]);
    }
}

fn a_model_from_compiled_weights_trains_and_the_weights_stay() {
    let mut model = Compiled::from_weights(&Device::cpu(), Compiled::weights()).unwrap();
    let y = tensorbridge::nalgebra::SVector::<u32, 4>::from_column_slice(&[2, 0, 1, 2]);
    let first = model.train_step(&x(), &y, 0.5).unwrap();
    for _ in 0..50 {
        model.train_step(&x(), &y, 0.5).unwrap();
    }
    assert!(model.loss(&x(), &y).unwrap() < first / 2.0);
    assert_ne!(model.params().unwrap(), Compiled::weights().params());
    // The compiled-in weights are a constant: the same as before training.
    compiled_weights_are_the_formulas_of_the_fixture_script();
}

fn const_weights_from_the_flat_layout() {
    // A hand-written constant, in the flat layout (w0 column-major, then b0).
    tensorbridge::model! { struct Seed { batch: 2, features: 4, classes: 2 } }
    static SEED: Weights<Seed> =
        Weights::from_flat(match FlatParams::finite([10.0, 10.0, -8.0, 1.0, 2.0, 1.0, 9.0, 10.0, 0.0, 0.0]) {
            Some(flat) => flat,
            None => panic!("not finite"),
        });
    assert!(FlatParams::<2>::finite([1.0, f32::NAN]).is_none());
    assert!(FlatParams::<2>::finite([f32::INFINITY, 0.0]).is_none());
    let mut work = Work::<Seed>::new();
    let x = tensorbridge::matrix![0.9, 0.8, 0.1, 0.05; 0.1, 0.2, 0.8, 0.95];
    // The seed's logits by hand: [16.25, 4.0] and [-2.45, 17.1].
    let z = SEED.logits(&mut work, &x).unwrap();
    for (got, want) in z.as_flat().iter().zip([16.25f32, -2.45, 4.0, 17.1]) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    let bad = SMatrix::<f32, 2, 4>::from_element(f32::NAN);
    assert!(matches!(SEED.predict(&mut work, &bad), Err(tensorbridge::Error::NonFinite { .. })));
}

fn a_checkpoint_with_an_optimizers_state_compiles_its_parameters_alone() {
    // The same parameters as mlp.safetensors (the script writes both from one set).
    assert_eq!(CompiledAdam::weights().values(), Compiled::weights().values());
    // At run time, `load` reads the state too: the parameters are the same.
    let loaded =
        CompiledAdam::load(&Device::cpu(), crate::support::repo().join("tests/fixtures/weights/adam.safetensors"));
    assert_eq!(loaded.unwrap().params().unwrap(), CompiledAdam::weights().params());
}

fn constructors_take_a_device_in_every_build() {
    // `on`/`on_with_params` have the same signature without `std` (tests/nostd-check).
    let device = Device::cpu();
    let a = Compiled::on(&device).unwrap();
    let b = Compiled::new(&device).unwrap();
    assert_eq!(a.params().unwrap(), b.params().unwrap());
    let c = Compiled::on_with_params(&device, Compiled::weights().params()).unwrap();
    assert_eq!(c.params().unwrap(), Compiled::weights().params());
    assert_eq!(<Compiled as Model>::PARAM_BYTES, 4 * Compiled::weights().values().len());
}

crate::tests! {
    plain compiled_weights_are_the_formulas_of_the_fixture_script,
    plain compiled_weights_equal_the_file_loaded_at_run_time,
    plain inference_in_place_gives_the_bits_of_a_model_built_from_the_weights,
    plain a_model_from_compiled_weights_trains_and_the_weights_stay,
    plain const_weights_from_the_flat_layout,
    plain constructors_take_a_device_in_every_build,
    plain a_checkpoint_with_an_optimizers_state_compiles_its_parameters_alone,
}
