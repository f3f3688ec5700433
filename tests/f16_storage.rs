//! `storage: f16` on the CPU backend: the declaration's types, logits against an `f32`
//! model and against an `f64` forward pass with a bound on the storage error, training,
//! validation of inputs and of data converted into `f16`, checkpoints, and `.npy` export.
//!
//! The storage error bound (per logit, first order in u = 2^-11, the unit roundoff of f16):
//! storing `x`, `W` and `b` in f16 perturbs each value by at most `u` relative, so for one
//! layer `|Δz_o| <= Σ_i (e_i + u·(|a_i| + e_i))·|w_io| + u·|b_o|`, with `e_i` the error of
//! the layer's input (`u·|x_i|` for the batch); ReLU is 1-Lipschitz, so the next layer's
//! input error is this `|Δz|`. The tests allow that bound plus `1e-5 + 1e-5 * |z|` for the
//! f32 arithmetic.

use crate::support;

use tensorbridge::checkpoint::CheckpointErrorKind;
use tensorbridge::half::f16;
use tensorbridge::nalgebra::{DMatrix, SMatrix, SVector};
use tensorbridge::rng::Rng;
use tensorbridge::{Dataset, Device, Engine, Error, HostTensor, Model, Params};

tensorbridge::model! {
    /// Linear, odd sizes, f16 storage.
    pub struct Lin16 { batch: 3, features: 5, classes: 4, storage: f16 }
}
tensorbridge::model! {
    /// The same shape in f32: the reference.
    pub struct Lin32 { batch: 3, features: 5, classes: 4 }
}
tensorbridge::model! {
    /// Two hidden layers, f16 storage.
    pub struct Mlp16 { batch: 3, features: 5, classes: 3, hidden: [6, 4], storage: f16 }
}
tensorbridge::model! {
    /// The same shape in f32.
    pub struct Mlp32 { batch: 3, features: 5, classes: 3, hidden: [6, 4] }
}
tensorbridge::model! {
    /// Blobs, f16.
    pub struct Blobs16 { batch: 8, features: 3, classes: 3, hidden: [16], storage: f16 }
}
tensorbridge::model! {
    /// Large enough that the f16 buffers are boxed.
    pub struct Big16 { batch: 200, features: 100, classes: 2, storage: f16 }
}

/// Unit roundoff of f16 (11 significant bits).
const U: f64 = 1.0 / 2048.0;

/// A deterministic value in [-1, 1) (not the crate's RNG: independent).
fn noise(seed: u64, k: usize) -> f32 {
    let mut z = seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn f16s(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn widen(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// `(logits, bound)`: the f64 forward pass of `x` (`[batch x features]`, column-major)
/// through `params` (the flat layout) with layer widths `dims`, and the first-order bound on
/// each logit's error when `x` and the parameters are stored in f16 (see the module docs).
fn forward_f64_with_bound(dims: &[usize], batch: usize, x: &[f32], params: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut a: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let mut e: Vec<f64> = a.iter().map(|v| v.abs() * U).collect();
    let mut off = 0;
    let layers = dims.len() - 1;
    for l in 0..layers {
        let (n_in, n_out) = (dims[l], dims[l + 1]);
        let w = &params[off..off + n_in * n_out];
        let b = &params[off + n_in * n_out..off + n_in * n_out + n_out];
        off += n_in * n_out + n_out;
        let mut z = vec![0.0; batch * n_out];
        let mut ez = vec![0.0; batch * n_out];
        for r in 0..batch {
            for o in 0..n_out {
                let mut acc = f64::from(b[o]);
                let mut err = f64::from(b[o]).abs() * U;
                for i in 0..n_in {
                    let wio = f64::from(w[o * n_in + i]);
                    let (ai, ei) = (a[i * batch + r], e[i * batch + r]);
                    acc += ai * wio;
                    err += (ei + U * (ai.abs() + ei)) * wio.abs();
                }
                let relu = l + 1 < layers;
                z[o * batch + r] = if relu { acc.max(0.0) } else { acc };
                ez[o * batch + r] = err;
            }
        }
        a = z;
        e = ez;
    }
    (a, e)
}

/// f16 model vs the f64 reference on the unrounded values (within the storage bound), and
/// vs the f32 model on the f16-rounded values (equal: the CPU backend widens f16 exactly and
/// runs the f32 arithmetic). Returns the largest error and its ratio to the bound.
fn logits_within_storage_error<M16, M32>(seed: u64) -> (f64, f64)
where
    M16: Model<Storage = f16>,
    M32: Model<Storage = f32>,
{
    let (b, f) = (M16::BATCH, M16::FEATURES);
    let x: Vec<f32> = (0..b * f).map(|k| noise(seed, k) * 3.0).collect();
    let p: Vec<f32> = (0..M16::Params::LEN).map(|k| noise(seed + 1, k)).collect();
    let (x16, p16) = (f16s(&x), f16s(&p));

    let m16 = Engine::<M16>::with_params(&Device::cpu(), M16::Params::from_flat(&p16)).unwrap();
    let z16 = m16.logits(&M16::Input::from_flat(&x16)).unwrap();

    // Against the f32 model on the f16-rounded values: the same arithmetic.
    let m32 = Engine::<M32>::with_params(&Device::cpu(), M32::Params::from_flat(&widen(&p16))).unwrap();
    let z32 = m32.logits(&M32::Input::from_flat(&widen(&x16))).unwrap();
    assert_eq!(z16.as_flat(), z32.as_flat(), "{}: f16 model vs f32 model on rounded values", M16::NAME);

    // Against f64 on the unrounded values: within the storage bound.
    let (exact, bound) = forward_f64_with_bound(M16::LAYERS, b, &x, &p);
    let (mut worst, mut worst_ratio) = (0.0f64, 0.0f64);
    for (k, ((&z, &e), &bd)) in z16.as_flat().iter().zip(&exact).zip(&bound).enumerate() {
        let err = (f64::from(z) - e).abs();
        let tol = bd + 1e-5 + 1e-5 * e.abs();
        assert!(err <= tol, "{}: logit {k}: f16 {z} vs exact {e}: error {err:e} > bound {tol:e}", M16::NAME);
        worst = worst.max(err);
        worst_ratio = worst_ratio.max(err / bd.max(1e-12));
    }
    (worst, worst_ratio)
}

fn declaration_gives_f16_buffers_and_f32_logits_and_gradients() {
    let x: <Lin16 as Model>::Input = SMatrix::<f16, 3, 5>::from_element(f16::ZERO);
    let _: <Lin16 as Model>::Logits = SMatrix::<f32, 3, 4>::zeros();
    let p = Lin16Params {
        w0: SMatrix::<f16, 5, 4>::from_element(f16::ZERO),
        b0: SVector::<f16, 4>::from_element(f16::ZERO),
    };
    let model = Lin16::with_params(&Device::cpu(), p).unwrap();
    let y = SVector::<u32, 3>::new(0, 1, 3);
    let (loss, g): (f32, Lin16Grads) = model.gradients(&x, &y).unwrap();
    // All-zero logits: loss ln(4), dL/db = softmax - onehot averaged = 1/4 - count/3.
    assert!((loss - 4f32.ln()).abs() < 1e-6);
    let expected_gb = [0.25 - 1.0 / 3.0, 0.25 - 1.0 / 3.0, 0.25, 0.25 - 1.0 / 3.0];
    for (g, e) in g.b0.iter().zip(expected_gb) {
        assert!((g - e).abs() < 1e-6, "{g} vs {e}");
    }
    assert!(Lin16::kernel_source().contains("#define TB_STORAGE_F16 1"));
    assert!(!Lin32::kernel_source().contains("TB_STORAGE_F16 1"));
    // Boxed above 16384 elements, as f32 buffers.
    let big: <Big16 as Model>::Input = tensorbridge::boxed_zeros::<f16, 200, 100>();
    assert_eq!(big.as_flat().len(), 20_000);
}

fn linear_logits_are_within_the_f16_storage_error() {
    let (worst, ratio) = logits_within_storage_error::<Lin16, Lin32>(11);
    crate::test_log!("linear: largest logit error vs f64 on unrounded values {worst:e} ({ratio:.2} of the bound)");
}

fn mlp_logits_are_within_the_f16_storage_error() {
    let (worst, ratio) = logits_within_storage_error::<Mlp16, Mlp32>(12);
    crate::test_log!("mlp: largest logit error vs f64 on unrounded values {worst:e} ({ratio:.2} of the bound)");
}

fn every_step_rounds_the_parameters_to_f16_like_the_f32_model_rounded_by_hand() {
    // Independent reference: the f32 model, its parameters rounded to f16 after each step.
    let x: Vec<f32> = widen(&f16s(&(0..15).map(|k| noise(3, k) * 2.0).collect::<Vec<_>>()));
    let y = SVector::<u32, 3>::new(2, 0, 1);
    let p: Vec<f32> = widen(&f16s(&(0..Mlp16Params::LEN).map(|k| noise(4, k)).collect::<Vec<_>>()));
    let mut m16 = Engine::<Mlp16>::with_params(&Device::cpu(), Mlp16Params::from_flat(&f16s(&p))).unwrap();
    let mut m32 = Engine::<Mlp32>::with_params(&Device::cpu(), Mlp32Params::from_flat(&p)).unwrap();
    let x16 = <Mlp16 as Model>::Input::from_flat(&f16s(&x));
    let x32 = <Mlp32 as Model>::Input::from_flat(&x);
    for step in 0..50 {
        let l16 = m16.train_step(&x16, &y, 0.1).unwrap();
        let l32 = m32.train_step(&x32, &y, 0.1).unwrap();
        assert_eq!(l16, l32, "loss of step {step}");
        let mut q = vec![0.0f32; Mlp32Params::LEN];
        m32.params().unwrap().write_flat(&mut q);
        let rounded = widen(&f16s(&q));
        m32.set_params(&Mlp32Params::from_flat(&rounded)).unwrap();
        let mut got = vec![f16::ZERO; Mlp16Params::LEN];
        m16.params().unwrap().write_flat(&mut got);
        assert_eq!(widen(&got), rounded, "parameters after step {step}");
    }
}

/// Three separable blobs, as `tests/training.rs`.
fn blobs(n: usize, seed: u64) -> Dataset {
    let centres = [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]];
    let mut rng = Rng::new(seed);
    let y: Vec<u32> = (0..n).map(|_| rng.below(3) as u32).collect();
    let x = DMatrix::from_fn(n, 3, |r, c| centres[y[r] as usize][c] + 0.25 * rng.normal() as f32);
    Dataset::new(x, y).unwrap()
}

/// On every device (on OpenCL, through the fused and the tiled kernels).
fn f16_mlp_fits_blobs_to_perfect_accuracy(device: &Device) {
    let (train, test) = (blobs(256, 1), blobs(64, 2));
    for d in crate::support::paths(device) {
        let mut model = Blobs16::new(&d).unwrap();
        let before = model.evaluate(&test).unwrap();
        let history = model.fit(&train, &[0.5, 0.5, 0.2, 0.1], 3).unwrap();
        let after = model.evaluate(&test).unwrap();
        crate::test_log!("f16 blobs on {d}: loss {} -> {}, accuracy {}", before.loss, after.loss, after.accuracy);
        assert!(history.losses().iter().all(|l| l.is_finite()), "on {d}");
        assert!(after.loss < before.loss * 0.1, "on {d}: loss did not fall: {} -> {}", before.loss, after.loss);
        assert_eq!(after.accuracy, 1.0, "on {d}: {after:?}");
    }
}

fn non_finite_f16_input_is_an_error_naming_the_position() {
    let mut model = Lin16::new(&Device::cpu()).unwrap();
    let y = SVector::<u32, 3>::new(0, 1, 2);
    for bad in [f16::NAN, f16::INFINITY, f16::NEG_INFINITY] {
        let mut x = SMatrix::<f16, 3, 5>::from_element(f16::ZERO);
        x[(2, 3)] = bad;
        for err in [
            model.logits(&x).unwrap_err(),
            model.train_step(&x, &y, 0.1).unwrap_err(),
            model.to_device(&x).unwrap_err(),
        ] {
            match err {
                Error::NonFinite { what, row, column, value } => {
                    assert_eq!((what.as_str(), row, column), ("input", 2, 3));
                    assert_eq!(value.is_nan(), bad.is_nan());
                }
                other => panic!("expected NonFinite, got {other:?}"),
            }
        }
    }
    let mut p = Lin16::new(&Device::cpu()).unwrap().params().unwrap();
    p.w0[(4, 1)] = f16::INFINITY;
    match Lin16::with_params(&Device::cpu(), p).unwrap_err() {
        Error::NonFinite { what, row, column, .. } => assert_eq!((what.as_str(), row, column), ("w0", 4, 1)),
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

fn dataset_value_beyond_f16_range_is_a_clear_error() {
    let mut x = DMatrix::from_fn(10, 5, |r, c| (r + c) as f32);
    x[(7, 2)] = 70_000.0;
    let data = Dataset::new(x.clone(), vec![0; 10]).unwrap();
    let mut model = Lin16::new(&Device::cpu()).unwrap();
    let err = data.batches::<Lin16>().err().expect("an error");
    match &err {
        Error::StorageOverflow { what, row, column, value, max } => {
            assert_eq!((what.as_str(), *row, *column, *value, *max), ("features", 7, 2, 70_000.0, 65504.0));
        }
        other => panic!("expected StorageOverflow, got {other:?}"),
    }
    assert!(err.to_string().contains("row 7, column 2"), "{err}");
    assert!(matches!(model.fit(&data, &[0.1], 1), Err(Error::StorageOverflow { row: 7, column: 2, .. })));
    assert!(matches!(model.evaluate(&data), Err(Error::StorageOverflow { .. })));
    // The largest finite f16 and values that round to it are fine; the f32 model takes anything.
    x[(7, 2)] = 65519.0;
    let data = Dataset::new(x.clone(), vec![0; 10]).unwrap();
    assert!(data.batches::<Lin16>().is_ok());
    x[(7, 2)] = 1e30;
    assert!(Dataset::new(x, vec![0; 10]).unwrap().batches::<Lin32>().is_ok());
}

fn f16_checkpoint_round_trips_bit_for_bit_and_dtypes_are_checked() {
    let dir = support::scratch("f16-checkpoint");
    let (p16, p32) = (dir.join("mlp16.safetensors"), dir.join("mlp32.safetensors"));
    let m16 = Engine::<Mlp16>::with_seed(&Device::cpu(), 5).unwrap();
    m16.save(&p16).unwrap();
    let back = Mlp16::load(&Device::cpu(), &p16).unwrap();
    assert_eq!(back.params().unwrap(), m16.params().unwrap());
    // The file holds F16 tensors of 2 bytes a value, w0 as [in, out] row-major.
    let bytes = std::fs::read(&p16).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w0 = file.tensor("w0").unwrap();
    assert_eq!((w0.dtype(), w0.shape()), (safetensors::tensor::Dtype::F16, &[5usize, 6][..]));
    let p = m16.params().unwrap();
    let first_row: Vec<f16> = w0.data()[..12].chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(first_row, (0..6).map(|o| p.w0[(0, o)]).collect::<Vec<_>>());

    Mlp32::new(&Device::cpu()).unwrap().save(&p32).unwrap();
    for (result, found, expected) in [
        (Mlp16::load(&Device::cpu(), &p32).map(drop), "F32", "F16"),
        (Mlp32::load(&Device::cpu(), &p16).map(drop), "F16", "F32"),
    ] {
        match result {
            Err(Error::Checkpoint {
                kind: CheckpointErrorKind::WrongDtype { name, found: f, expected: e, .. },
                ..
            }) => {
                assert_eq!((name.as_str(), f.as_str(), e), ("w0", found, expected));
            }
            other => panic!("expected WrongDtype, got {other:?}"),
        }
    }
    let message = Mlp16::load(&Device::cpu(), &p32).unwrap_err().to_string();
    assert!(message.contains("storage: f16"), "{message}");
}

fn f16_matrices_export_as_float16_npy() {
    let dir = support::scratch("f16-npy");
    let path = dir.join("w0.npy");
    // Values exact in f16, one of them the largest finite, one subnormal.
    let m = SMatrix::<f16, 2, 3>::from_row_slice(&[
        f16::from_f32(1.5),
        f16::from_f32(-0.125),
        f16::MAX,
        f16::from_f32(3.0e-5),
        f16::ZERO,
        f16::from_f32(-2.0),
    ]);
    tensorbridge::npy::write_matrix(&path, &m).unwrap();
    let out = support::python(
        "import sys, numpy as np\na = np.load(sys.argv[1])\nprint(a.dtype, a.shape)\nprint(' '.join(repr(float(v)) for v in a.ravel()))",
        &[path.to_str().unwrap()],
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("float16 (2, 3)"));
    let values: Vec<f64> = lines.next().unwrap().split(' ').map(|v| v.parse().unwrap()).collect();
    let expected: Vec<f64> =
        (0..2).flat_map(|r| (0..3).map(move |c| (r, c))).map(|(r, c)| m[(r, c)].to_f64()).collect();
    assert_eq!(values, expected);
    // And our own reader takes it back (widened to f32).
    let back = tensorbridge::npy::read_matrix(&path).unwrap();
    assert_eq!(back.as_slice(), SMatrix::<f32, 2, 3>::from_fn(|r, c| m[(r, c)].to_f32()).as_slice());
}

crate::tests! {
    plain declaration_gives_f16_buffers_and_f32_logits_and_gradients,
    plain linear_logits_are_within_the_f16_storage_error,
    plain mlp_logits_are_within_the_f16_storage_error,
    plain every_step_rounds_the_parameters_to_f16_like_the_f32_model_rounded_by_hand,
    device f16_mlp_fits_blobs_to_perfect_accuracy,
    plain non_finite_f16_input_is_an_error_naming_the_position,
    plain dataset_value_beyond_f16_range_is_a_clear_error,
    plain f16_checkpoint_round_trips_bit_for_bit_and_dtypes_are_checked,
    numpy f16_matrices_export_as_float16_npy,
}
