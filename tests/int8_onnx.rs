//! The int8 model in ONNX's QDQ form (`Int8Model::save_onnx`, issue 23): onnxruntime runs
//! the file, and its logits are compared with the independent NumPy reference's integers
//! (`fixtures/int8_reference.py`), dequantised, and with ours on the digits and iris test
//! sets.
//!
//! onnxruntime runs the file twice: with its graph optimisations, which fuse QDQ pairs into
//! integer operators with their own requantisation (in `float`), and with none, computing
//! node by node in `float`. Either rounds half to even, and requantises by the real
//! multiplier, where the integer pass rounds half away from zero and requantises by a
//! 31-bit fixed-point multiplier: a code can therefore differ by one step where a value
//! lies within a rounding error of a half step. The tolerance: every prediction equal; at
//! least 99% of the logits equal (a wrong scale, zero point or layout moves most of them);
//! every logit within the bound of each code moving by one step (one head step, plus what
//! one step of every input and hidden code moves the logit by through the weights). On the
//! reference's batches, the logits must equal the NumPy reference's codes, dequantised,
//! exactly. (Measured: every logit equal on all three test sets, both ways.)

use std::path::Path;

use crate::support::accuracy::{quiet, split, Iris, IrisInt8};
use tensorbridge::nalgebra::{DMatrix, SMatrix, SVector};
use tensorbridge::quant::Int8Model;
use tensorbridge::{npy, Device, Engine, HostTensor, Model, StorageElement};

mod reference {
    // The fixture's f16 tables are tests/int8.rs's.
    #![allow(dead_code)]
    include!("fixtures/int8_reference.rs");
}

tensorbridge::model! {
    /// The reference's MLP (as tests/int8.rs).
    pub struct QdqRef { batch: 4, features: 5, hidden: [7, 6], classes: 3 }
}

tensorbridge::model! {
    /// Digits through one hidden layer.
    pub struct QdqDigits { batch: 32, features: 64, hidden: [32], classes: 10 }
}

fn batch<const R: usize, const C: usize>(rows: &[[f32; C]; R]) -> SMatrix<f32, R, C> {
    SMatrix::from_fn(|r, c| rows[r][c])
}

fn ref_int8() -> QdqRefInt8 {
    use reference::*;
    let params = QdqRefParams {
        w0: batch(&W0),
        b0: SVector::from_column_slice(&B0),
        w1: batch(&W1),
        b1: SVector::from_column_slice(&B1),
        w2: batch(&W2),
        b2: SVector::from_column_slice(&B2),
    };
    let model = QdqRef::with_params(&Device::cpu(), params).unwrap();
    let calibration: Vec<_> = CALIBRATION.iter().map(batch).collect();
    model.quantize(&calibration).unwrap()
}

/// onnxruntime's logits of the QDQ file `model` for each batch of `inputs` (`[batch x
/// features]`), each `[batch x classes]`: with its graph optimisations (which fuse the
/// QDQ pairs into integer operators where it can), then with none (the graph computed
/// node by node, in `float`). Also the operators of the optimised graph that are
/// quantised ones (`QGemm`, `QLinear...`), as onnxruntime wrote it out.
fn onnxruntime_logits(dir: &Path, model: &Path, inputs: &[DMatrix<f32>]) -> (Vec<[DMatrix<f32>; 2]>, Vec<String>) {
    let optimised = dir.join("optimised.onnx");
    let mut args = vec![model.to_str().unwrap().to_string(), optimised.to_str().unwrap().to_string()];
    for (k, x) in inputs.iter().enumerate() {
        let path = dir.join(format!("x{k}.npy"));
        npy::write_matrix(&path, x).unwrap();
        args.push(path.to_str().unwrap().to_string());
    }
    crate::support::python(
        "import sys, numpy as np, onnxruntime as ort\n\
         fused = ort.SessionOptions()\n\
         fused.optimized_model_filepath = sys.argv[2]\n\
         plain = ort.SessionOptions()\n\
         plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL\n\
         for tag, o in (('fused', fused), ('plain', plain)):\n\
         \x20   s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n\
         \x20   for p in sys.argv[3:]:\n\
         \x20       (logits,) = s.run(['logits'], {'input': np.load(p)})\n\
         \x20       np.save(p[:-4] + '-' + tag + '.npy', logits.astype(np.float32))",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let read = |k: usize, tag: &str| npy::read_matrix(dir.join(format!("x{k}-{tag}.npy"))).unwrap();
    let logits = (0..inputs.len()).map(|k| [read(k, "fused"), read(k, "plain")]).collect();
    let graph = String::from_utf8_lossy(&std::fs::read(&optimised).unwrap()).into_owned();
    let mut ops: Vec<String> =
        ["QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLinear", "QuantizeLinear"]
            .iter()
            .filter(|op| graph.contains(*op))
            .map(|op| op.to_string())
            .collect();
    ops.dedup();
    (logits, ops)
}

/// The bound of the module docs: one head step, and one step of every hidden unit times
/// the largest weight leaving it (dequantised), summed over the units.
fn tolerance<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize>(
    q: &Int8Model<M, NW, NC, NT, MAXW>,
) -> f32 {
    let dims = M::LAYERS;
    let (mut bound, mut w, mut c) = (0.0f32, 0, 0);
    // The input's codes may move one step too.
    let mut unit_error = vec![q.act_scales()[0]; dims[0]];
    for l in 0..dims.len() - 1 {
        let (fan_in, fan_out) = (dims[l], dims[l + 1]);
        let mut out_error = vec![0.0f32; fan_out];
        for (o, e) in out_error.iter_mut().enumerate() {
            let s = q.weight_scales()[c + o];
            let moved: f32 =
                (0..fan_in).map(|i| unit_error[i] * s * f32::from(q.weights()[w + o * fan_in + i]).abs()).sum();
            // The code may move one step of its own, and by what its inputs moved.
            *e = q.act_scales()[l + 1] + moved;
            bound = bound.max(*e);
        }
        unit_error = out_error;
        w += fan_in * fan_out;
        c += fan_out;
    }
    bound
}

/// Compares onnxruntime's logits of `q`'s QDQ file with ours on `inputs`: every prediction
/// equal, every logit within [`tolerance`]; returns (the largest difference in head steps,
/// the share of logits equal, the tolerance in head steps).
fn agree<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize>(
    name: &str,
    q: &Int8Model<M, NW, NC, NT, MAXW>,
    inputs: &[M::Input],
    rows: &[usize],
) -> (f32, f64, f32) {
    let dir = crate::support::scratch(&format!("int8-onnx-{name}"));
    let path = dir.join(format!("{name}.int8.onnx"));
    q.save_onnx(&path).unwrap();
    let (b, f, c) = (M::BATCH, M::FEATURES, M::CLASSES);
    let matrices: Vec<DMatrix<f32>> =
        inputs.iter().map(|x| DMatrix::from_fn(b, f, |r, i| x.as_flat()[i * b + r].to_f32())).collect();
    let (theirs, ops) = onnxruntime_logits(&dir, &path, &matrices);
    let step = q.act_scales()[M::LAYERS.len() - 1];
    let bound = tolerance(q);
    let (mut worst, mut equal, mut total) = (0.0f32, [0usize; 2], 0usize);
    for ((x, both), &n) in inputs.iter().zip(&theirs).zip(rows) {
        let ours = q.logits(x).unwrap();
        let labels = q.predict(x).unwrap();
        let ours = ours.as_flat();
        total += n * c;
        for (t, equal) in both.iter().zip(&mut equal) {
            for r in 0..n {
                let mut best = 0;
                for k in 0..c {
                    let (a, e) = (ours[k * b + r], t[(r, k)]);
                    worst = worst.max((a - e).abs());
                    *equal += usize::from(a == e);
                    if t[(r, k)] > t[(r, best)] {
                        best = k;
                    }
                }
                assert_eq!(labels.as_flat()[r] as usize, best, "{name}: row {r}: onnxruntime predicts another class");
            }
        }
    }
    let share = equal[0].min(equal[1]) as f64 / total as f64;
    crate::test_log!(
        "{name}: onnxruntime vs ours, {total} logits: {} equal optimised (its quantised operators: {ops:?}), {} \
         unoptimised; largest difference {:.2} head steps (bound {:.1})",
        equal[0],
        equal[1],
        worst / step,
        bound / step
    );
    // A code moves only where a value lies within rounding of a half step: rarely. A
    // systematic error (a scale, a zero point, a transposed weight) moves most logits.
    assert!(worst <= bound, "{name}: logits differ by {worst} (bound {bound})");
    assert!(share >= 0.99, "{name}: only {:.2}% of the logits are equal", 100.0 * share);
    (worst / step, share, bound / step)
}

fn onnxruntime_runs_the_int8_qdq_export() {
    use reference::*;
    // The reference model: onnxruntime's logits are the NumPy reference's codes,
    // dequantised, exactly.
    let q = ref_int8();
    let inputs: Vec<_> = TESTS.iter().map(batch).collect();
    let (worst, share, _) = agree("reference", &q, &inputs, &[4; 3]);
    assert_eq!((worst, share), (0.0, 1.0));
    let dir = crate::support::scratch("int8-onnx-numpy");
    let path = dir.join("reference.int8.onnx");
    q.save_onnx(&path).unwrap();
    let matrices: Vec<DMatrix<f32>> = TESTS.iter().map(|t| DMatrix::from_fn(4, 5, |r, i| t[r][i])).collect();
    for (t, (both, codes)) in onnxruntime_logits(&dir, &path, &matrices).0.iter().zip(&CODES).enumerate() {
        for theirs in both {
            for r in 0..4 {
                for c in 0..3 {
                    let numpy = ACT_SCALES[3] * (i32::from(codes[r][c]) - i32::from(ACT_ZEROS[3])) as f32;
                    assert_eq!(theirs[(r, c)], numpy, "batch {t}, row {r}, class {c}");
                }
            }
        }
    }

    // Digits and iris, trained: the test sets' predictions agree exactly.
    let (train, test) = split("digits");
    let mut engine = Engine::<QdqDigits>::with_seed(&Device::cpu(), 0).unwrap();
    engine.fit_with(&train, &[0.4; 20], 1, quiet()).unwrap();
    let calibration: Vec<_> = train.batches::<QdqDigits>().unwrap().map(|b| b.x).collect();
    let q = QdqDigitsInt8::from_engine(&engine, &calibration).unwrap();
    let (inputs, rows): (Vec<_>, Vec<_>) = test.batches::<QdqDigits>().unwrap().map(|b| (b.x, b.rows)).unzip();
    agree("digits", &q, &inputs, &rows);

    let (train, test) = split("iris");
    let mut engine = Engine::<Iris>::new(&Device::cpu()).unwrap();
    engine.fit_with(&train, &[0.5; 100], 1, quiet()).unwrap();
    let calibration: Vec<_> = train.batches::<Iris>().unwrap().map(|b| b.x).collect();
    let q = IrisInt8::from_engine(&engine, &calibration).unwrap();
    let (inputs, rows): (Vec<_>, Vec<_>) = test.batches::<Iris>().unwrap().map(|b| (b.x, b.rows)).unzip();
    agree("iris", &q, &inputs, &rows);
}

fn int8_qdq_file_reads_back_and_refuses_bad_files(device: &Device) {
    use tensorbridge::onnx::OnnxErrorKind as Kind;
    use tensorbridge::Error;
    let q = ref_int8();
    let dir = crate::support::scratch("int8-onnx-read");
    let path = dir.join("reference.int8.onnx");
    q.save_onnx(&path).unwrap();
    // The same integers and scales, and the same codes on the device.
    let back = QdqRefInt8::from_onnx(device, &path).unwrap();
    assert_eq!(back.weights(), q.weights());
    assert_eq!(back.biases(), q.biases());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(back.weight_scales()), bits(q.weight_scales()));
    assert_eq!(bits(back.act_scales()), bits(q.act_scales()));
    assert_eq!(back.act_zero_points(), q.act_zero_points());
    assert_eq!(back.multipliers(), q.multipliers());
    assert_eq!(back.shifts(), q.shifts());
    for x in &reference::TESTS {
        assert_eq!(back.logits(&batch(x)).unwrap(), q.logits(&batch(x)).unwrap());
    }
    let bytes = std::fs::read(&path).unwrap();
    let read = |name: &str, bytes: &[u8]| {
        let bad = dir.join(name);
        std::fs::write(&bad, bytes).unwrap();
        QdqRefInt8::from_onnx(device, &bad)
    };
    // Truncated: not a protobuf message.
    assert!(matches!(
        read("truncated.onnx", &bytes[..bytes.len() / 2]),
        Err(Error::Onnx { kind: Kind::Decode { .. }, .. })
    ));
    // The f32 model's export is not the int8 form.
    let f32_path = dir.join("f32.onnx");
    QdqRef::new(&Device::cpu()).unwrap().save_onnx(&f32_path).unwrap();
    match QdqRefInt8::from_onnx(device, &f32_path) {
        Err(Error::Onnx { kind: Kind::Graph { reason }, .. }) => assert!(reason.contains("a0.scale"), "{reason}"),
        other => panic!("expected a missing tensor, got {other:?}"),
    }
    // Another declaration's int8 file: the shapes differ.
    let digits = QdqDigits::new(&Device::cpu()).unwrap();
    let x = <<QdqDigits as Model>::Input as HostTensor>::from_fn(|k| (k % 7) as f32);
    let other = dir.join("digits.int8.onnx");
    digits.quantize(std::slice::from_ref(&x)).unwrap().save_onnx(&other).unwrap();
    assert!(matches!(QdqRefInt8::from_onnx(device, &other), Err(Error::Onnx { .. })));
    // A hidden activation other than the form's: `Relu` made `Relv`.
    let mut edited = bytes.clone();
    let at = edited.windows(4).position(|w| w == b"Relu").unwrap();
    edited[at + 3] = b'v';
    match read("relv.onnx", &edited) {
        Err(Error::Onnx { kind: Kind::Node { op, .. }, .. }) => assert_eq!(op, "Relv"),
        other => panic!("expected a node error, got {other:?}"),
    }
    // A weight code of -128 (outside the symmetric range): refused by the model's checks.
    let mut edited = bytes.clone();
    let codes: Vec<u8> = reference::WQ0.iter().map(|&v| v as u8).collect();
    let at = edited.windows(codes.len()).position(|w| w == &codes[..]).unwrap();
    edited[at] = 0x80;
    assert!(matches!(read("minus128.onnx", &edited), Err(Error::Quantize { .. })));
    // A bias scale that is not s_x * s_w: one byte of `b0.scale` changed.
    let mut edited = bytes.clone();
    let scales: Vec<u8> = q.weight_scales()[..7].iter().flat_map(|&s| (q.act_scales()[0] * s).to_le_bytes()).collect();
    let at = edited.windows(scales.len()).position(|w| w == &scales[..]).unwrap();
    edited[at] ^= 1;
    match read("bias-scale.onnx", &edited) {
        Err(Error::Onnx { kind: Kind::Tensor { name, .. }, .. }) => assert_eq!(name, "b0.scale"),
        other => panic!("expected a tensor error, got {other:?}"),
    }
}

crate::tests! {
    device int8_qdq_file_reads_back_and_refuses_bad_files,
    onnxruntime onnxruntime_runs_the_int8_qdq_export,
}
