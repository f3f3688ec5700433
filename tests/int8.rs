//! Int8 inference (issue 23): the integers against an independent NumPy implementation of
//! the scheme (`fixtures/int8_reference.py`), accuracy against `f32` on digits, iris and
//! the seed's data, the int8 checkpoint, and the errors.

use crate::support::accuracy::{quiet, split, Iris, IrisInt8};
use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::{Device, Engine, Error, Model, Params};

mod reference {
    include!("fixtures/int8_reference.rs");
}

tensorbridge::model! {
    /// The reference's MLP: 5 features, hidden [7, 6], 3 classes, batches of 4.
    pub struct RefMlp { batch: 4, features: 5, hidden: [7, 6], classes: 3 }
}

tensorbridge::model! {
    /// Digits through one hidden layer (as tests/mlp_digits.rs).
    pub struct DigitsMlp { batch: 32, features: 64, hidden: [32], classes: 10 }
}

tensorbridge::model! {
    /// The seed's cat-vs-dog head.
    pub struct CatDog { batch: 2, features: 4, classes: 2 }
}

fn batch<const R: usize, const C: usize>(rows: &[[f32; C]; R]) -> SMatrix<f32, R, C> {
    SMatrix::from_fn(|r, c| rows[r][c])
}

fn ref_params() -> RefMlpParams {
    use reference::*;
    RefMlpParams {
        w0: batch(&W0),
        b0: SVector::from_column_slice(&B0),
        w1: batch(&W1),
        b1: SVector::from_column_slice(&B1),
        w2: batch(&W2),
        b2: SVector::from_column_slice(&B2),
    }
}

fn ref_int8() -> RefMlpInt8 {
    let model = RefMlp::with_params(&Device::cpu(), ref_params()).unwrap();
    let calibration: Vec<_> = reference::CALIBRATION.iter().map(batch).collect();
    model.quantize(&calibration).unwrap()
}

/// `[in x out]` row-major codes -> our column-major `w[o * in + i]`.
fn column_major(codes: &[i8], fan_in: usize, fan_out: usize) -> Vec<i8> {
    (0..fan_in * fan_out).map(|k| codes[(k % fan_in) * fan_out + k / fan_in]).collect()
}

fn integers_equal_the_numpy_reference() {
    use reference::*;
    assert_eq!(RefMlp::LAYERS, &LAYERS);
    let q = ref_int8();
    let mut weights = column_major(&WQ0, 5, 7);
    weights.extend(column_major(&WQ1, 7, 6));
    weights.extend(column_major(&WQ2, 6, 3));
    assert_eq!(q.weights(), &weights[..]);
    assert_eq!(q.biases(), [&BQ0[..], &BQ1[..], &BQ2[..]].concat());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(q.weight_scales()), bits(&[&WSCALE0[..], &WSCALE1[..], &WSCALE2[..]].concat()));
    assert_eq!(q.multipliers(), [&MULT0[..], &MULT1[..], &MULT2[..]].concat());
    assert_eq!(q.shifts(), [&SHIFT0[..], &SHIFT1[..], &SHIFT2[..]].concat());
    assert_eq!(bits(q.act_scales()), bits(&ACT_SCALES));
    assert_eq!(q.act_zero_points(), &ACT_ZEROS);
    for (t, (x, expected)) in TESTS.iter().zip(&CODES).enumerate() {
        let mut codes = [0i16; 12];
        q.codes_into(&batch(x), &mut codes).unwrap();
        for r in 0..4 {
            for c in 0..3 {
                assert_eq!(codes[c * 4 + r], expected[r][c], "test batch {t}, row {r}, class {c}");
            }
        }
        // The logits are the codes dequantised; predict is their argmax.
        let logits = q.logits(&batch(x)).unwrap();
        let labels = q.predict(&batch(x)).unwrap();
        for r in 0..4 {
            let row = expected[r];
            let best = (0..3).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            assert_eq!(labels[r] as usize, best, "test batch {t}, row {r}");
            for c in 0..3 {
                let want = ACT_SCALES[3] * (row[c] as i32 - ACT_ZEROS[3] as i32) as f32;
                assert_eq!(logits[(r, c)].to_bits(), want.to_bits());
            }
        }
    }
}

fn param_bytes_are_the_codes_and_scales() {
    // RefMlp: 5*7 + 7*6 + 6*3 = 95 weights (1 byte), 16 channels (bias 4, scale 4,
    // multiplier 4, shift 1), 4 activation tensors (scale 4, zero point 1; the head's 2).
    assert_eq!(RefMlpInt8::PARAM_BYTES, 95 + 16 * 13 + 4 * 5 + 1);
    // DigitsMlp: f32 has 64*32 + 32 + 32*10 + 10 = 2410 parameters, 9640 bytes.
    assert_eq!(DigitsMlp::PARAM_BYTES, 9640);
    assert_eq!(DigitsMlpInt8::PARAM_BYTES, 64 * 32 + 32 * 10 + 42 * 13 + 3 * 5 + 1);
    crate::test_log!(
        "param bytes, digits mlp: f32 {}, int8 {} (ratio {:.3})",
        DigitsMlp::PARAM_BYTES,
        DigitsMlpInt8::PARAM_BYTES,
        DigitsMlpInt8::PARAM_BYTES as f64 / DigitsMlp::PARAM_BYTES as f64
    );
}

/// The batches of a dataset's rows, for calibration.
fn batches_of<M: Model>(data: &tensorbridge::Dataset) -> Vec<M::Input> {
    data.batches::<M>().unwrap().map(|b| b.x).collect()
}

fn digits_int8_accuracy_within_one_point_of_f32() {
    let (train, test) = split("digits");
    let mut engine = Engine::<DigitsMlp>::with_seed(&Device::cpu(), 0).unwrap();
    let rates: Vec<f32> = (0..50).map(|e| if e < 33 { 0.4 } else { 0.04 }).collect();
    engine.fit_with(&train, &rates, 1, quiet()).unwrap();
    let f32_accuracy = engine.evaluate(&test).unwrap().accuracy;
    let q = DigitsMlpInt8::from_engine(&engine, &batches_of::<DigitsMlp>(&train)).unwrap();
    let metrics = q.evaluate(&test).unwrap();
    crate::test_log!("digits mlp test accuracy: f32 {f32_accuracy:.4}, int8 {:.4}", metrics.accuracy);
    assert!(f32_accuracy >= 0.95, "{f32_accuracy}");
    assert!((metrics.accuracy - f32_accuracy).abs() <= 0.01, "f32 {f32_accuracy}, int8 {}", metrics.accuracy);
    assert_eq!(metrics.rows, test.len());
    assert_eq!(metrics.confusion.iter().sum::<usize>(), test.len());
}

/// The rows of `data` whose int8 prediction equals the `f32` one, and how many rows.
fn same_predictions<M: Model>(
    data: &tensorbridge::Dataset,
    f32_model: &Engine<M>,
    predict: impl Fn(&M::Input) -> M::Labels,
) -> (usize, usize)
where
    M::Labels: std::ops::Index<usize, Output = u32>,
{
    let (mut same, mut rows) = (0, 0);
    for b in data.batches::<M>().unwrap() {
        let (p32, p8) = (f32_model.predict(&b.x).unwrap(), predict(&b.x));
        for r in 0..b.rows {
            rows += 1;
            same += usize::from(p32[r] == p8[r]);
        }
    }
    (same, rows)
}

fn iris_int8_predictions_equal_f32() {
    let (train, test) = split("iris");
    let mut engine = Engine::<Iris>::new(&Device::cpu()).unwrap();
    let rates: Vec<f32> = (0..150).map(|e| if e < 100 { 0.5 } else { 0.1 }).collect();
    engine.fit_with(&train, &rates, 1, quiet()).unwrap();
    let q = IrisInt8::from_engine(&engine, &batches_of::<Iris>(&train)).unwrap();
    let test_same = same_predictions::<Iris>(&test, &engine, |x| q.predict(x).unwrap());
    let train_same = same_predictions::<Iris>(&train, &engine, |x| q.predict(x).unwrap());
    crate::test_log!("iris: int8 predicts as f32 on {test_same:?} test rows, {train_same:?} training rows");
    // Every held-out row keeps its class. Of the training rows, one lies on the boundary
    // (its f32 logits 3.027 and 3.056 differ by less than the inputs' quantisation moves
    // them) and may change.
    assert_eq!(test_same.0, test_same.1);
    assert!(train_same.0 + 1 >= train_same.1, "{train_same:?}");
}

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

fn seed_int8_predictions_equal_f32() {
    let batches: Vec<SMatrix<f32, 2, 4>> = (0..5).map(|k| SMatrix::from_fn(|r, c| SEED_ROWS[2 * k + r][c])).collect();
    let labels: Vec<SVector<u32, 2>> = (0..5).map(|_| SVector::from_column_slice(&[0, 1])).collect();
    // The seed example's trained head (same schedule), and its hand-set one.
    let mut trained = CatDog::new(&Device::cpu()).unwrap();
    for lr in [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.1, 0.1] {
        for (x, y) in batches.iter().zip(&labels) {
            trained.train_step(x, y, lr).unwrap();
        }
    }
    let hand = CatDogParams {
        w0: tensorbridge::matrix![10.0, 2.0; 10.0, 1.0; -8.0, 9.0; 1.0, 10.0],
        b0: tensorbridge::vector![0.0, 0.0],
    };
    let hand = CatDog::with_params(&Device::cpu(), hand).unwrap();
    for model in [&trained, &hand] {
        let q = model.quantize(&batches).unwrap();
        for (x, y) in batches.iter().zip(&labels) {
            assert_eq!(q.predict(x).unwrap(), model.predict(x).unwrap());
            assert_eq!(&q.predict(x).unwrap(), y);
        }
    }
}

fn int8_checkpoint_round_trips_and_refuses_bad_files() {
    let q = ref_int8();
    let dir = crate::support::scratch("int8_checkpoint");
    let path = dir.join("ref.int8.safetensors");
    q.save(&path).unwrap();
    let back = RefMlpInt8::load(&Device::cpu(), &path).unwrap();
    assert_eq!(back.weights(), q.weights());
    assert_eq!(back.biases(), q.biases());
    assert_eq!(back.multipliers(), q.multipliers());
    assert_eq!(back.shifts(), q.shifts());
    assert_eq!(back.act_zero_points(), q.act_zero_points());
    for x in &reference::TESTS {
        assert_eq!(back.logits(&batch(x)).unwrap(), q.logits(&batch(x)).unwrap());
    }
    // Another model's file: shapes differ.
    let catdog = CatDog::with_params(&Device::cpu(), CatDogParams::from_flat(&[0.5; 10])).unwrap();
    let other = dir.join("catdog.int8.safetensors");
    catdog.quantize(&[SMatrix::<f32, 2, 4>::from_element(1.0)]).unwrap().save(&other).unwrap();
    assert!(matches!(RefMlpInt8::load(&Device::cpu(), &other), Err(Error::Checkpoint { .. })));
    // The f32 checkpoint is not an int8 one.
    let f32_path = dir.join("ref.safetensors");
    RefMlp::with_params(&Device::cpu(), ref_params()).unwrap().save(&f32_path).unwrap();
    assert!(matches!(RefMlpInt8::load(&Device::cpu(), &f32_path), Err(Error::Checkpoint { .. })));
    // A multiplier that the scales do not give: one byte of `w0.multiplier` changed.
    let mut bytes = std::fs::read(&path).unwrap();
    let needle: Vec<u8> = reference::MULT0.iter().flat_map(|m| m.to_le_bytes()).collect();
    let at = bytes.windows(needle.len()).position(|w| w == &needle[..]).unwrap();
    bytes[at] ^= 1;
    let bad = dir.join("bad.int8.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    match RefMlpInt8::load(&Device::cpu(), &bad) {
        Err(Error::Quantize { reason }) => assert!(reason.contains("multipliers"), "{reason}"),
        other => panic!("expected Error::Quantize, got {other:?}"),
    }
}

fn quantize_refuses_what_it_cannot_hold() {
    let model = RefMlp::with_params(&Device::cpu(), ref_params()).unwrap();
    assert!(matches!(model.quantize(&[]), Err(Error::Quantize { .. })));
    let mut x = batch(&reference::CALIBRATION[0]);
    x[(2, 3)] = f32::NAN;
    assert!(matches!(model.quantize(&[x]), Err(Error::NonFinite { row: 2, column: 3, .. })));
    let q = ref_int8();
    assert!(matches!(q.logits(&x), Err(Error::NonFinite { .. })));
    assert!(matches!(q.predict(&x), Err(Error::NonFinite { .. })));
    // Codes in and out: too few input codes, or too little room, is an error, not a panic.
    assert!(matches!(q.forward_codes(&[0i8; 4], &mut [0i16; 3]), Err(Error::Quantize { .. })));
    assert!(matches!(q.forward_codes(&[0i8; 5], &mut [0i16; 2]), Err(Error::Quantize { .. })));
    assert!(q.forward_codes(&[0i8; 5], &mut [0i16; 3]).is_ok());
    assert!(matches!(q.codes_into(&batch(&reference::TESTS[0]), &mut [0i16; 11]), Err(Error::Quantize { .. })));
    // A bias far larger than its scale allows: its code would not fit i32.
    let mut p = ref_params();
    p.b0[0] = 1e30;
    let big = RefMlp::with_params(&Device::cpu(), p).unwrap();
    let calibration = [batch(&reference::CALIBRATION[0])];
    assert!(matches!(big.quantize(&calibration), Err(Error::Quantize { .. })));
    // A standardiser attached: refused rather than silently ignored.
    let mut with_scaler = RefMlp::with_params(&Device::cpu(), ref_params()).unwrap();
    let scaler = tensorbridge::Standardizer::from_mean_scale(vec![0.0; 5], vec![1.0; 5]).unwrap();
    with_scaler.set_standardizer(scaler).unwrap();
    assert!(matches!(with_scaler.quantize(&calibration), Err(Error::Quantize { .. })));
    // A tanh hidden layer: the integer pass has ReLU's clamp only, so it is refused.
    let tanh = TanhMlp::new(&Device::cpu()).unwrap();
    assert!(matches!(tanh.quantize(&calibration), Err(Error::Quantize { .. })));
}

tensorbridge::model! {
    /// `RefMlp`'s shape with tanh hidden layers.
    pub struct TanhMlp { batch: 4, features: 5, hidden: [7, 6], classes: 3, activation: tanh }
}

tensorbridge::model! {
    /// MNIST's shape (784 features, one hidden layer of 128, 10 classes, batches of 128).
    pub struct MnistMlp { batch: 128, features: 784, hidden: [128], classes: 10 }
}

/// The forms of the OpenCL int8 products (`TB_Q_MADD`) that `q`'s device runs: OpenCL C's
/// vectors alone everywhere, and each narrower form of the processor's own multiply-add
/// than the one the device picked (AVX-512's `vpmaddwd` implies AVX2's). None on the CPU
/// backend, or where the kernel takes the dot product.
fn product_forms<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize>(
    q: &tensorbridge::quant::Int8Model<M, NW, NC, NT, MAXW>,
) -> Vec<u32> {
    match q.__products() {
        Some(own) => [0, 256, 512].into_iter().filter(|&m| m <= own).collect(),
        None => Vec::new(),
    }
}

/// The head's codes of `x` on the model's device and on the CPU core: equal, bit for bit.
fn device_codes_equal_core<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize>(
    q: &tensorbridge::quant::Int8Model<M, NW, NC, NT, MAXW>,
    x: &M::Input,
) -> Vec<i16> {
    let mut on_device = vec![0i16; M::BATCH * M::CLASSES];
    let mut core = vec![0i16; M::BATCH * M::CLASSES];
    q.codes_into(x, &mut on_device).unwrap();
    q.cpu_codes_into(x, &mut core).unwrap();
    assert_eq!(on_device, core, "{} on {}", M::NAME, q.device());
    on_device
}

fn int8_codes_are_the_same_bits_on_every_device(device: &Device) {
    // The reference model: the device's codes are the core's and NumPy's.
    let model = RefMlp::with_params(device, ref_params()).unwrap();
    let calibration: Vec<_> = reference::CALIBRATION.iter().map(batch).collect();
    let q = model.quantize(&calibration).unwrap();
    assert_eq!(q.device().is_opencl(), device.is_opencl());
    for (x, expected) in reference::TESTS.iter().zip(&reference::CODES) {
        let codes = device_codes_equal_core(&q, &batch(x));
        for r in 0..4 {
            for c in 0..3 {
                assert_eq!(codes[c * 4 + r], expected[r][c]);
            }
        }
    }
    // MNIST's shape, seeded weights and noise: wide layers (the CPU backend splits the rows
    // over threads; OpenCL takes four products at a time where the device can).
    let mnist = MnistMlp::new(device).unwrap();
    let noise = |seed: u64| {
        let mut x = tensorbridge::boxed_zeros::<f32, 128, 784>();
        for (k, v) in x.iter_mut().enumerate() {
            *v = 2.0 * crate::support::noise(seed, k);
        }
        x
    };
    let q = mnist.quantize(&[noise(1), noise(2)]).unwrap();
    let x = noise(3);
    device_codes_equal_core(&q, &x);
    // The packed path (four products a `dot`), emulated where the device lacks
    // cl_khr_integer_dot_product: the same integers.
    let packed = q.clone().__on_emulating_dot_product(device).unwrap();
    device_codes_equal_core(&packed, &x);
    // The products in every form the device runs (OpenCL C's vectors alone; on a CPU
    // device, the processor's own multiply-add on 256 and 512 bits where it has them):
    // the same integers.
    for madd in product_forms(&q) {
        let form = q.clone().__on_with_products(device, madd).unwrap();
        device_codes_equal_core(&form, &x);
    }
    let mut codes = vec![0i16; 1280];
    q.codes_into(&x, &mut codes).unwrap();
    let mut packed_codes = vec![0i16; 1280];
    packed.codes_into(&x, &mut packed_codes).unwrap();
    assert_eq!(codes, packed_codes);
    let labels = q.predict(&x).unwrap();
    let logits = q.logits(&x).unwrap();
    assert_eq!(labels.as_slice(), &tensorbridge::host::argmax_rows(&logits)[..]);
}

tensorbridge::model! {
    /// `RefMlp` under `storage: f16`.
    pub struct RefMlp16 { batch: 4, features: 5, hidden: [7, 6], classes: 3, storage: f16 }
}

/// `rows` (float16 values, widened) as an f16 batch: exact, no rounding.
fn batch16<const R: usize, const C: usize>(rows: &[[f32; C]; R]) -> SMatrix<tensorbridge::half::f16, R, C> {
    SMatrix::from_fn(|r, c| {
        let v = tensorbridge::half::f16::from_f32(rows[r][c]);
        assert_eq!(v.to_f32(), rows[r][c], "the fixture's f16 values are exact");
        v
    })
}

fn f16_model_quantises_to_the_numpy_integers(device: &Device) {
    use reference::*;
    let params = RefMlp16Params {
        w0: batch16(&W0_F16),
        b0: batch16(&[B0_F16]).transpose(),
        w1: batch16(&W1_F16),
        b1: batch16(&[B1_F16]).transpose(),
        w2: batch16(&W2_F16),
        b2: batch16(&[B2_F16]).transpose(),
    };
    let model = RefMlp16::with_params(device, params).unwrap();
    let calibration: Vec<_> = CALIBRATION_F16.iter().map(batch16).collect();
    let q = model.quantize(&calibration).unwrap();
    let mut weights = column_major(&WQ0_F16, 5, 7);
    weights.extend(column_major(&WQ1_F16, 7, 6));
    weights.extend(column_major(&WQ2_F16, 6, 3));
    assert_eq!(q.weights(), &weights[..]);
    assert_eq!(q.biases(), [&BQ0_F16[..], &BQ1_F16[..], &BQ2_F16[..]].concat());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(q.weight_scales()), bits(&[&WSCALE0_F16[..], &WSCALE1_F16[..], &WSCALE2_F16[..]].concat()));
    assert_eq!(q.multipliers(), [&MULT0_F16[..], &MULT1_F16[..], &MULT2_F16[..]].concat());
    assert_eq!(q.shifts(), [&SHIFT0_F16[..], &SHIFT1_F16[..], &SHIFT2_F16[..]].concat());
    assert_eq!(bits(q.act_scales()), bits(&ACT_SCALES_F16));
    assert_eq!(q.act_zero_points(), &ACT_ZEROS_F16);
    // The packed path (four products a `dot`), emulated where the device lacks
    // cl_khr_integer_dot_product, on layers whose widths are not multiples of four.
    // The portable products likewise.
    let packed = q.clone().__on_emulating_dot_product(device).unwrap();
    let forms: Vec<_> =
        product_forms(&q).into_iter().map(|madd| q.clone().__on_with_products(device, madd).unwrap()).collect();
    for (t, (x, expected)) in TESTS_F16.iter().zip(&CODES_F16).enumerate() {
        assert_eq!(device_codes_equal_core(&packed, &batch16(x)), device_codes_equal_core(&q, &batch16(x)));
        for form in &forms {
            assert_eq!(device_codes_equal_core(form, &batch16(x)), device_codes_equal_core(&q, &batch16(x)));
        }
        let codes = device_codes_equal_core(&q, &batch16(x));
        for r in 0..4 {
            for c in 0..3 {
                assert_eq!(codes[c * 4 + r], expected[r][c], "test batch {t}, row {r}, class {c}");
            }
        }
    }
}

crate::tests! {
    device int8_codes_are_the_same_bits_on_every_device,
    device f16_model_quantises_to_the_numpy_integers,
    plain integers_equal_the_numpy_reference,
    plain param_bytes_are_the_codes_and_scales,
    plain digits_int8_accuracy_within_one_point_of_f32,
    plain iris_int8_predictions_equal_f32,
    plain seed_int8_predictions_equal_f32,
    plain int8_checkpoint_round_trips_and_refuses_bad_files,
    plain quantize_refuses_what_it_cannot_hold,
    plain forward_rows_in_blocks_equal_the_numpy_reference,
    plain batch_pass_equals_the_row_by_row_pass,
}

tensorbridge::model! {
    /// Widths that fill no vector: depths not a multiple of 4, layers not a multiple of
    /// 16 wide, a head wider than 16, two hidden layers, a batch not a multiple of 4.
    pub struct OddMlp { batch: 7, features: 37, hidden: [33, 17], classes: 18 }
}

/// The head's codes of a batch (`codes_into`: on the host, the vector pass where the
/// processor has AVX-512 VNNI, the rows split over threads for MNIST's shape) against the
/// scalar pass, row by row (`forward_codes`), on seeded weights and noise.
fn batch_pass_equals_the_row_by_row_pass() {
    fn check<M: Model<Storage = f32>, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize>(
        q: &tensorbridge::quant::Int8Model<M, NW, NC, NT, MAXW>,
        x: &M::Input,
    ) {
        let (b, f, c) = (M::BATCH, M::FEATURES, M::CLASSES);
        let mut batch = vec![0i16; b * c];
        q.codes_into(x, &mut batch).unwrap();
        let flat = tensorbridge::HostTensor::as_flat(x);
        for r in 0..b {
            let input: Vec<i8> = (0..f).map(|i| q.input_code(flat[i * b + r])).collect();
            let mut row = vec![0i16; c];
            q.forward_codes(&input, &mut row).unwrap();
            let from_batch: Vec<i16> = (0..c).map(|k| batch[k * b + r]).collect();
            assert_eq!(from_batch, row, "{}, row {r}", M::NAME);
        }
    }
    let device = Device::cpu();
    let odd = OddMlp::new(&device).unwrap();
    let noise = |seed: u64| SMatrix::<f32, 7, 37>::from_fn(|r, i| 3.0 * crate::support::noise(seed, r * 37 + i));
    let q = odd.quantize(&[noise(1), noise(2)]).unwrap();
    for seed in 3..6 {
        check(&q, &noise(seed));
    }
    let mnist = MnistMlp::new(&device).unwrap();
    let noise = |seed: u64| {
        let mut x = tensorbridge::boxed_zeros::<f32, 128, 784>();
        for (k, v) in x.iter_mut().enumerate() {
            *v = 2.0 * crate::support::noise(seed, k);
        }
        x
    };
    let q = mnist.quantize(&[noise(1), noise(2)]).unwrap();
    check(&q, &noise(3));
}

/// The core's integer pass on input codes, rows in blocks (`forward_rows`, any number of
/// rows at a time: whole blocks of rows and the rows left over) and row by row
/// (`forward_codes`): the NumPy reference's integers, for every row of its test batches.
fn forward_rows_in_blocks_equal_the_numpy_reference() {
    use reference::{CODES, TESTS};
    let q = ref_int8();
    let (f, c) = (5, 3);
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for (x, codes) in TESTS.iter().zip(&CODES) {
        for (row, want) in x.iter().zip(codes) {
            input.extend(row.iter().map(|&v| q.input_code(v)));
            expected.extend_from_slice(want);
        }
    }
    let rows = input.len() / f;
    assert_eq!(rows, 12);
    for group in 1..=rows {
        let mut out = vec![i16::MIN; rows * c];
        for (x, y) in input.chunks(group * f).zip(out.chunks_mut(group * c)) {
            q.forward_rows(x, y).unwrap();
        }
        assert_eq!(out, expected, "{group} rows at a time");
    }
    for (x, want) in input.chunks(f).zip(expected.chunks(c)) {
        let mut out = [0i16; 3];
        q.forward_codes(x, &mut out).unwrap();
        assert_eq!(&out[..], want);
    }
    // Not whole rows, or too little room: an error, not a panic; no rows: nothing to do.
    assert!(matches!(q.forward_rows(&input[..7], &mut [0i16; 6]), Err(Error::Quantize { .. })));
    assert!(matches!(q.forward_rows(&input[..10], &mut [0i16; 5]), Err(Error::Quantize { .. })));
    assert!(q.forward_rows(&[], &mut []).is_ok());
}
