//! The `no_std` core ([`tensorbridge::cpu::Cpu`], what `default-features = false` offers)
//! and the full crate's CPU backend compute the same numbers, bit for bit: the seed-shape
//! train step, and predict, loss and gradients, at the seed and iris shapes and an MLP,
//! and at the digits shape (`f32` and `f16`, full and partial batches) and a narrow model
//! with a wide first layer, where the backend's
//! step runs compiled for the CPU's vector extension (AVX-512 or AVX2, chosen at run time)
//! with the model's fixed-size products while the core runs as built with the `gemm`
//! crate's, and both take the vectorised softmax and (`f32`) the fused first-layer update.
//! Every variant this CPU can run is checked, each in a child process started with
//! `TENSORBRIDGE_SIMD`.
//! (`.ci/nostd-check` builds the core alone, for a microcontroller, and checks its numbers
//! against the seed's hand arithmetic.)

use crate::support::{child_process, child_stdout, param_bits, tagged};
use tensorbridge::cpu::Cpu;
use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::{Device, Engine, HostTensor, Model};

tensorbridge::model! {
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    pub struct Iris { batch: 16, features: 4, classes: 3 }
}
tensorbridge::model! {
    pub struct Mlp { batch: 8, features: 5, classes: 3, hidden: [7, 6], storage: f16 }
}

tensorbridge::model! {
    pub struct Digits { batch: 32, features: 64, hidden: [32], classes: 10 }
}
tensorbridge::model! {
    pub struct DigitsF16 { batch: 32, features: 64, hidden: [32], classes: 10, storage: f16 }
}
// 16 logits a batch, but a first layer of fixed-size products: the vector variants run too.
tensorbridge::model! {
    pub struct Narrow { batch: 8, features: 256, hidden: [64], classes: 2 }
}

fn same<M: Model>(x: &M::Input, y: &M::Labels, steps: usize) {
    let device = Device::cpu();
    let mut engine = Engine::<M>::new(&device).unwrap();
    let mut core = Cpu::<M>::with_seed(tensorbridge::DEFAULT_SEED);
    assert_eq!(param_bits(&engine.params().unwrap()), param_bits(&core.params()), "{}: initial parameters", M::NAME);
    for step in 0..steps {
        // Every third step a partial batch: the weight gradients sum fewer rows.
        let rows = if step % 3 == 2 { (M::BATCH - 1).max(1) } else { M::BATCH };
        let a = engine.train_step_rows(x, y, rows, 0.3).unwrap();
        let b = core.train_step_rows(x, y, rows, 0.3).unwrap();
        assert_eq!(a.to_bits(), b.to_bits(), "{}: loss of step {step}", M::NAME);
        assert_eq!(
            param_bits(&engine.params().unwrap()),
            param_bits(&core.params()),
            "{}: parameters after step {step}",
            M::NAME
        );
    }
    assert_eq!(engine.predict(x).unwrap().as_flat(), core.predict(x).unwrap().as_flat());
    assert_eq!(engine.loss(x, y).unwrap().to_bits(), core.loss(x, y).unwrap().to_bits());
    let (la, ga) = engine.gradients(x, y).unwrap();
    let (lb, gb) = core.gradients(x, y).unwrap();
    assert_eq!((la.to_bits(), param_bits(&ga)), (lb.to_bits(), param_bits(&gb)), "{}: gradients", M::NAME);
    // With parameters set by hand, too.
    let p = engine.params().unwrap();
    let mut again = Cpu::<M>::with_params(&p).unwrap();
    assert_eq!(again.logits(x).unwrap().as_flat(), engine.logits(x).unwrap().as_flat());
}

fn seed_shape_train_step_is_bit_identical() {
    let x = SMatrix::<f32, 2, 4>::new(0.9, 0.8, 0.1, 0.05, 0.1, 0.2, 0.8, 0.95);
    let y = SVector::<u32, 2>::new(0, 1);
    same::<Seed>(&x, &y, 50);
}

fn iris_shape_and_f16_mlp_are_bit_identical() {
    let x = SMatrix::<f32, 16, 4>::from_fn(|r, c| ((r * 5 + c * 3) % 7) as f32 / 3.0 - 1.0);
    let y = SVector::<u32, 16>::from_fn(|r, _| (r % 3) as u32);
    same::<Iris>(&x, &y, 30);
    let x = SMatrix::<tensorbridge::half::f16, 8, 5>::from_fn(|r, c| {
        tensorbridge::half::f16::from_f32(((r * 3 + c) % 5) as f32 / 2.0 - 1.0)
    });
    let y = SVector::<u32, 8>::from_fn(|r, _| (r % 3) as u32);
    same::<Mlp>(&x, &y, 20);
}

fn digits_shape_is_bit_identical_across_vector_extensions() {
    let x = SMatrix::<f32, 32, 64>::from_fn(|r, c| ((r * 7 + c * 13) % 17) as f32 / 4.0 - 2.0);
    let y = SVector::<u32, 32>::from_fn(|r, _| (r % 10) as u32);
    same::<Digits>(&x, &y, 20);
    let x = x.map(tensorbridge::half::f16::from_f32);
    same::<DigitsF16>(&x, &y, 20);
    let x = SMatrix::<f32, 8, 256>::from_fn(|r, c| ((r * 5 + c * 11) % 13) as f32 / 6.0 - 1.0);
    let y = SVector::<u32, 8>::from_fn(|r, _| (r % 2) as u32);
    same::<Narrow>(&x, &y, 10);
}

const SIMD_CHILD: &str = "TENSORBRIDGE_SIMD_CHILD";

/// In the child: the digits check under the variant `TENSORBRIDGE_SIMD` names, and which
/// variant ran.
fn simd_child() {
    digits_shape_is_bit_identical_across_vector_extensions();
    println!("DEVICE {}", Device::cpu().name());
}

/// Each variant, lowered to by `TENSORBRIDGE_SIMD` in a child process: the same bits as the
/// core's. The child reports the variant it ran; one the CPU lacks falls back to one it
/// has, never to one it lacks.
fn every_vector_extension_gives_the_same_bits() {
    let best = Device::cpu().name();
    for (level, rank) in [("baseline", 0), ("avx2", 1), ("avx512", 2)] {
        let mut child = child_process(module_path!(), "simd_child");
        let text = child_stdout(child.env(SIMD_CHILD, "1").env("TENSORBRIDGE_SIMD", level), level);
        let ran = tagged(&text, "DEVICE ").map(|v| v.trim().to_string());
        let ran = ran.unwrap_or_else(|| panic!("{level}: the child did not say: {text}"));
        let ran_rank = ["baseline", "avx2", "avx512"].iter().position(|n| ran.contains(&format!(", {n})"))).unwrap();
        let best_rank = ["baseline", "avx2", "avx512"].iter().position(|n| best.contains(&format!(", {n})"))).unwrap();
        assert_eq!(ran_rank, rank.min(best_rank), "{level}: ran as {ran} on a CPU whose best is {best}");
    }
}

fn core_checks_its_inputs() {
    let mut core = Cpu::<Seed>::with_seed(1);
    let x = SMatrix::<f32, 2, 4>::from_element(f32::NAN);
    assert!(matches!(core.predict(&x), Err(tensorbridge::Error::NonFinite { .. })));
    let x = SMatrix::<f32, 2, 4>::zeros();
    let before = core.params();
    let bad = SVector::<u32, 2>::new(0, 7);
    assert!(matches!(
        core.train_step(&x, &bad, 0.1),
        Err(tensorbridge::Error::LabelOutOfRange { row: 1, label: 7, .. })
    ));
    assert!(matches!(
        core.train_step(&x, &SVector::zeros(), -1.0),
        Err(tensorbridge::Error::InvalidLearningRate { .. })
    ));
    assert_eq!(core.params(), before);
}

crate::tests! {
    plain seed_shape_train_step_is_bit_identical,
    plain iris_shape_and_f16_mlp_are_bit_identical,
    plain digits_shape_is_bit_identical_across_vector_extensions,
    plain every_vector_extension_gives_the_same_bits,
    child(SIMD_CHILD) simd_child,
    plain core_checks_its_inputs,
}
