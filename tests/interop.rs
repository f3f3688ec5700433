//! Models trained elsewhere: PyTorch state dicts (`from_pytorch`, `save_pytorch`), ONNX
//! files written by `torch.onnx.export` and by skl2onnx (`from_onnx`), our ONNX export run
//! by onnxruntime (`save_onnx`), the standardiser a model carries, and `predict_proba`.
//!
//! The fixtures in tests/fixtures/interop/ were written by PyTorch, scikit-learn, skl2onnx
//! and onnxruntime themselves, with the expected values computed by NumPy (float64) or
//! onnxruntime, by tests/fixtures/interop.py; no Python is needed here except for the
//! onnxruntime test, skipped without it.

use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tensorbridge::checkpoint::CheckpointErrorKind;
use tensorbridge::data::Dataset;
use tensorbridge::nalgebra::{DMatrix, SMatrix};
use tensorbridge::onnx::OnnxErrorKind;
use tensorbridge::{npy, Device, Engine, Error, Standardizer};

tensorbridge::model! {
    /// nn.Sequential(Linear(4, 8), ReLU, Linear(8, 3)) over the 24 test rows.
    pub struct Seq { batch: 24, features: 4, hidden: [8], classes: 3 }
}
tensorbridge::model! {
    /// fc1, fc2, fc3: 4 -> 8 -> 6 -> 3.
    pub struct Named3 { batch: 24, features: 4, hidden: [8, 6], classes: 3 }
}
tensorbridge::model! {
    /// Seq with f16 storage.
    pub struct SeqF16 { batch: 24, features: 4, hidden: [8], classes: 3, storage: f16 }
}
tensorbridge::model! {
    /// Two square layers: names without numbers cannot order them.
    pub struct Square { batch: 2, features: 8, hidden: [8], classes: 8 }
}

fn fixture(name: &str) -> PathBuf {
    support::repo().join("tests").join("fixtures").join("interop").join(name)
}

/// A fixture's `[24 x C]` matrix (float64 in the file, read as f32) as f64, column-major.
fn reference(name: &str) -> Vec<f64> {
    npy::read_matrix(fixture(name)).unwrap().iter().map(|&v| f64::from(v)).collect()
}

fn rows(name: &str) -> SMatrix<f32, 24, 4> {
    let m = npy::read_matrix(fixture(name)).unwrap();
    SMatrix::from_fn(|r, c| m[(r, c)])
}

/// Max absolute and relative (to the largest |expected| of the matrix) differences, printed
/// for the record, then checked elementwise.
#[track_caller]
fn check(what: &str, actual: &[f32], expected: &[f64], atol: f64, rtol: f64) {
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let max_abs = actual.iter().zip(expected).fold(0.0f64, |m, (&a, &e)| m.max((f64::from(a) - e).abs()));
    crate::test_log!("{what}: max abs diff {max_abs:.2e}, relative to max |value| {:.2e}", max_abs / scale);
    support::assert_close(what, actual, expected, atol, rtol);
}

fn checkpoint_error(result: tensorbridge::Result<impl std::fmt::Debug>) -> CheckpointErrorKind {
    match result {
        Err(Error::Checkpoint { kind, .. }) => kind,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

fn onnx_error(result: tensorbridge::Result<impl std::fmt::Debug>) -> (PathBuf, OnnxErrorKind) {
    match result {
        Err(Error::Onnx { path, kind }) => (path, kind),
        other => panic!("expected an ONNX error, got {other:?}"),
    }
}

fn write_tensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()).unwrap();
}

fn f32s(n: usize, value: f32) -> Vec<u8> {
    (0..n).flat_map(|_| value.to_le_bytes()).collect()
}

/// The rows of a column-major `[24 x C]` probability matrix each sum to 1.
#[track_caller]
fn rows_sum_to_one<const C: usize>(p: &SMatrix<f32, 24, C>) {
    for r in 0..24 {
        let sum: f32 = p.row(r).iter().sum();
        assert!((sum - 1.0).abs() < 1e-6 && p.row(r).iter().all(|&v| v >= 0.0), "row {r}: {}", p.row(r));
    }
}

fn pytorch_state_dicts_load(device: &Device) {
    let x = rows("x_test_std.npy");
    for tag in ["", "_f16", "_bf16", "_f64"] {
        let model = Engine::<Seq>::from_pytorch(device, fixture(&format!("torch_seq{tag}.safetensors"))).unwrap();
        let expected = reference(&format!("torch_seq{tag}_logits.npy"));
        check(&format!("torch_seq{tag}.safetensors"), model.logits(&x).unwrap().as_slice(), &expected, 2e-5, 1e-5);
    }
    // Named attributes: fc1..fc3 ordered by their numbers; `hidden`/`out` by their shapes.
    // (The generated struct's constructor, as a user writes it.)
    let named = Named3::from_pytorch(device, fixture("torch_named.safetensors")).unwrap();
    check("torch_named", named.logits(&x).unwrap().as_slice(), &reference("torch_named_logits.npy"), 2e-5, 1e-5);
    let hidden_out = Engine::<Seq>::from_pytorch(device, fixture("torch_hidden_out.safetensors")).unwrap();
    let expected = reference("torch_hidden_out_logits.npy");
    check("torch_hidden_out", hidden_out.logits(&x).unwrap().as_slice(), &expected, 2e-5, 1e-5);
    // f16 storage: every value of the file rounded once; logits within f16's precision.
    let half = Engine::<SeqF16>::from_pytorch(device, fixture("torch_seq.safetensors")).unwrap();
    let xh = x.map(tensorbridge::half::f16::from_f32);
    support::assert_close("f16", half.logits(&xh).unwrap().as_slice(), &reference("torch_seq_logits.npy"), 2e-2, 1e-2);
}

fn pytorch_export_is_what_torch_writes(device: &Device) {
    let dir = support::scratch("interop-pt-export");
    let model = Engine::<Seq>::from_pytorch(device, fixture("torch_seq.safetensors")).unwrap();
    let path = dir.join("out.safetensors");
    model.save_pytorch(&path).unwrap();
    // The same names, shapes and bytes as the file torch wrote.
    let (ours, theirs) = (std::fs::read(&path).unwrap(), std::fs::read(fixture("torch_seq.safetensors")).unwrap());
    let (ours, theirs) = (SafeTensors::deserialize(&ours).unwrap(), SafeTensors::deserialize(&theirs).unwrap());
    let mut names = ours.names();
    names.sort();
    assert_eq!(names, vec!["0.bias", "0.weight", "2.bias", "2.weight"]);
    for name in names {
        let (a, b) = (ours.tensor(name).unwrap(), theirs.tensor(name).unwrap());
        assert_eq!((a.dtype(), a.shape(), a.data()), (b.dtype(), b.shape(), b.data()), "{name}");
    }
    let again = Engine::<Seq>::from_pytorch(device, &path).unwrap();
    assert_eq!(support::param_bits(&again.params().unwrap()), support::param_bits(&model.params().unwrap()));
}

fn onnx_torch_exports_load(device: &Device) {
    let x = rows("x_test_std.npy");
    for name in ["torch_seq", "torch_seq_dynamo"] {
        let model = Engine::<Seq>::from_onnx(device, fixture(&format!("{name}.onnx"))).unwrap();
        assert!(model.standardizer().is_none());
        let logits = model.logits(&x).unwrap();
        check(&format!("{name}.onnx vs NumPy"), logits.as_slice(), &reference("torch_seq_logits.npy"), 2e-5, 1e-5);
        check(
            &format!("{name}.onnx vs onnxruntime"),
            logits.as_slice(),
            &reference(&format!("{name}_ort.npy")),
            2e-5,
            1e-5,
        );
    }
    // Flatten in front, Softmax at the end: the logits are the values before the softmax.
    let model = Seq::from_onnx(device, fixture("torch_flatten_softmax.onnx")).unwrap();
    let expected = reference("torch_seq_logits.npy");
    check("torch_flatten_softmax.onnx logits", model.logits(&x).unwrap().as_slice(), &expected, 2e-5, 1e-5);
    let proba = model.predict_proba(&x).unwrap();
    let expected = reference("torch_flatten_softmax_ort.npy");
    check("torch_flatten_softmax.onnx predict_proba vs onnxruntime", proba.as_slice(), &expected, 1e-6, 1e-5);
    // (x - mean) / std in the module: the standardiser comes along, and takes raw rows.
    let model = Engine::<Seq>::from_onnx(device, fixture("torch_std.onnx")).unwrap();
    let s = model.standardizer().expect("the Sub and Div become the standardiser");
    assert_eq!(s.len(), 4);
    let raw = rows("x_test.npy");
    let logits = model.logits(&raw).unwrap();
    check("torch_std.onnx vs NumPy", logits.as_slice(), &reference("torch_std_logits.npy"), 2e-5, 1e-5);
    check("torch_std.onnx vs onnxruntime", logits.as_slice(), &reference("torch_std_ort.npy"), 2e-5, 1e-5);
    rows_sum_to_one(&model.predict_proba(&raw).unwrap());
}

fn onnx_sklearn_exports_load(device: &Device) {
    let raw = rows("x_test.npy");
    // MatMul + Add, Softmax, ZipMap and the ArgMax label branch.
    let model = Engine::<Seq>::from_onnx(device, fixture("sklearn_mlp.onnx")).unwrap();
    check(
        "sklearn_mlp.onnx logits",
        model.logits(&raw).unwrap().as_slice(),
        &reference("sklearn_mlp_logits.npy"),
        2e-5,
        1e-5,
    );
    let proba = model.predict_proba(&raw).unwrap();
    rows_sum_to_one(&proba);
    check(
        "sklearn_mlp.onnx predict_proba vs scikit-learn",
        proba.as_slice(),
        &reference("sklearn_mlp_proba.npy"),
        1e-6,
        1e-5,
    );
    let labels = npy::read_labels(fixture("sklearn_mlp_labels.npy")).unwrap();
    assert_eq!(model.predict(&raw).unwrap().as_slice(), labels.as_slice());
    // ai.onnx.ml's Scaler in front: the standardiser.
    let model = Engine::<Seq>::from_onnx(device, fixture("sklearn_pipeline.onnx")).unwrap();
    assert!(model.standardizer().is_some());
    let logits = model.logits(&raw).unwrap();
    check("sklearn_pipeline.onnx logits", logits.as_slice(), &reference("sklearn_pipeline_logits.npy"), 2e-5, 1e-5);
    let proba = model.predict_proba(&raw).unwrap();
    check(
        "sklearn_pipeline.onnx predict_proba vs onnxruntime",
        proba.as_slice(),
        &reference("sklearn_pipeline_ort.npy"),
        1e-6,
        1e-5,
    );
}

fn onnx_export_reads_back(device: &Device) {
    let dir = support::scratch("interop-onnx-roundtrip");
    let model = Engine::<Seq>::from_onnx(device, fixture("torch_std.onnx")).unwrap();
    let path = dir.join("model.onnx");
    model.save_onnx(&path).unwrap();
    let again = Engine::<Seq>::from_onnx(device, &path).unwrap();
    assert_eq!(support::param_bits(&again.params().unwrap()), support::param_bits(&model.params().unwrap()));
    assert_eq!(again.standardizer(), model.standardizer());
    let raw = rows("x_test.npy");
    assert_eq!(again.logits(&raw).unwrap(), model.logits(&raw).unwrap());
    // f16 storage: the graph rounds the input to f16 as the model does, and reads back.
    let half = Engine::<SeqF16>::from_pytorch(device, fixture("torch_seq.safetensors")).unwrap();
    half.save_onnx(&path).unwrap();
    let again = Engine::<SeqF16>::from_onnx(device, &path).unwrap();
    assert_eq!(support::param_bits(&again.params().unwrap()), support::param_bits(&half.params().unwrap()));
}

tensorbridge::model! {
    /// nn.Sequential(Linear(4, 8), Tanh, Linear(8, 3)).
    pub struct SeqTanh { batch: 24, features: 4, hidden: [8], classes: 3, activation: tanh }
}

/// A model declared `activation: tanh` reads torch's Tanh export (which `Seq`, ReLU, refuses),
/// writes a Tanh node between its layers (read back by a tanh model, refused by a ReLU one,
/// naming both), and reads its own export back.
fn onnx_tanh_models_read_and_write_tanh() {
    let device = Device::cpu();
    let model = Engine::<SeqTanh>::from_onnx(&device, fixture("torch_tanh.onnx")).unwrap();
    let path = support::scratch("interop-onnx-tanh").join("tanh.onnx");
    model.save_onnx(&path).unwrap();
    let again = Engine::<SeqTanh>::from_onnx(&device, &path).unwrap();
    assert_eq!(support::param_bits(&again.params().unwrap()), support::param_bits(&model.params().unwrap()));
    let (_, kind) = onnx_error(Engine::<Seq>::from_onnx(&device, &path));
    assert_eq!(kind, OnnxErrorKind::Activation { node: "tanh0".into(), found: "Tanh".into(), expected: "Relu" });
    let (_, kind) = onnx_error(Engine::<SeqTanh>::from_onnx(&device, fixture("torch_seq.onnx")));
    assert!(matches!(&kind, OnnxErrorKind::Activation { found, expected: "Tanh", .. } if found == "Relu"), "{kind:?}");
}

fn standardizer_is_saved_and_applied(device: &Device) {
    let dir = support::scratch("interop-standardizer");
    let mut model = Engine::<Seq>::from_pytorch(device, fixture("torch_seq.safetensors")).unwrap();
    let (raw, standardized) = (rows("x_test.npy"), rows("x_test_std.npy"));
    let plain = model.logits(&standardized).unwrap();
    let data = Dataset::from_npy(support::data("iris_features.npy"), support::data("iris_labels.npy")).unwrap();
    let fitted = tensorbridge::data::Standardizer::fit(&data).unwrap();
    let s = Standardizer::from_mean_scale(fitted.mean().to_vec(), fitted.scale().to_vec()).unwrap();
    model.set_standardizer(s.clone()).unwrap();
    // The same statistics as the fixture's (x - mean) / std in NumPy: the same logits on raw rows.
    support::assert_agree(
        "raw rows, standardised inside",
        model.logits(&raw).unwrap().as_slice(),
        plain.as_slice(),
        1e-5,
        1e-5,
    );
    let path = dir.join("with-scaler.safetensors");
    model.save(&path).unwrap();
    let loaded = Seq::load(device, &path).unwrap();
    assert_eq!(loaded.standardizer(), Some(&s));
    assert_eq!(loaded.logits(&raw).unwrap(), model.logits(&raw).unwrap());
    assert_eq!(loaded.predict(&raw).unwrap(), model.predict(&raw).unwrap());
    // One of another width is refused; taking it off gives the plain model back.
    let wrong = Standardizer::from_mean_scale(vec![0.0; 3], vec![1.0; 3]).unwrap();
    assert!(matches!(model.set_standardizer(wrong), Err(Error::InvalidStandardizer { .. })));
    assert_eq!(model.take_standardizer(), Some(s));
    assert_eq!(model.logits(&standardized).unwrap(), plain);
}

fn predict_proba_is_the_softmax_of_the_logits(device: &Device) {
    let model = Engine::<Seq>::from_pytorch(device, fixture("torch_seq.safetensors")).unwrap();
    let p = model.predict_proba(&rows("x_test_std.npy")).unwrap();
    rows_sum_to_one(&p);
    // The softmax of NumPy's logits, in f64 here.
    let z = reference("torch_seq_logits.npy");
    let mut expected = vec![0.0; 72];
    for r in 0..24 {
        let row: Vec<f64> = (0..3).map(|c| z[c * 24 + r]).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for c in 0..3 {
            expected[c * 24 + r] = (row[c] - max).exp() / sum;
        }
    }
    support::assert_close("predict_proba", p.as_slice(), &expected, 1e-6, 1e-5);
    let classes = model.predict(&rows("x_test_std.npy")).unwrap();
    assert_eq!(classes.as_slice(), tensorbridge::host::argmax_rows(&p).as_slice());
}

fn pytorch_bad_files_are_refused() {
    let dir = support::scratch("interop-pt-bad");
    let device = Device::cpu();
    let path = dir.join("bad.safetensors");
    let good = |w0: Vec<usize>| {
        vec![
            ("0.weight", Dtype::F32, w0.clone(), f32s(32, 0.5)),
            ("0.bias", Dtype::F32, vec![8], f32s(8, 0.0)),
            ("2.weight", Dtype::F32, vec![3, 8], f32s(24, 0.5)),
            ("2.bias", Dtype::F32, vec![3], f32s(3, 0.0)),
        ]
    };
    // [in, out] where nn.Linear stores [out, in]: refused, saying so.
    write_tensors(&path, &good(vec![4, 8]));
    let kind = checkpoint_error(Engine::<Seq>::from_pytorch(&device, &path));
    let text = kind.to_string();
    assert!(matches!(&kind, CheckpointErrorKind::WrongShape { name, .. } if name == "0.weight"), "{kind:?}");
    assert!(text.contains("transposed layout") && text.contains("[out, in]"), "{text}");
    // A bias missing, a BatchNorm's statistics, an integer dtype, garbage.
    let mut tensors = good(vec![8, 4]);
    tensors.remove(1);
    write_tensors(&path, &tensors);
    assert!(
        matches!(checkpoint_error(Engine::<Seq>::from_pytorch(&device, &path)), CheckpointErrorKind::MissingTensor { name, .. } if name == "0.bias")
    );
    let mut tensors = good(vec![8, 4]);
    tensors.push(("1.running_mean", Dtype::F32, vec![8], f32s(8, 0.0)));
    write_tensors(&path, &tensors);
    assert!(
        matches!(checkpoint_error(Engine::<Seq>::from_pytorch(&device, &path)), CheckpointErrorKind::NotLinear { name, .. } if name == "1.running_mean")
    );
    let mut tensors = good(vec![8, 4]);
    tensors[1] = ("0.bias", Dtype::I32, vec![8], f32s(8, 0.0));
    write_tensors(&path, &tensors);
    assert!(
        matches!(checkpoint_error(Engine::<Seq>::from_pytorch(&device, &path)), CheckpointErrorKind::WrongDtype { name, .. } if name == "0.bias")
    );
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(matches!(
        checkpoint_error(Engine::<Seq>::from_pytorch(&device, &path)),
        CheckpointErrorKind::Format { .. }
    ));
    // Values the storage cannot hold: an f64 beyond f32, and 1e5 for f16 storage.
    let mut tensors = good(vec![8, 4]);
    tensors[1] = (
        "0.bias",
        Dtype::F64,
        vec![8],
        (0..8).flat_map(|k| if k == 5 { 1e300f64 } else { 0.0 }.to_le_bytes()).collect(),
    );
    write_tensors(&path, &tensors);
    assert!(
        matches!(checkpoint_error(Engine::<Seq>::from_pytorch(&device, &path)), CheckpointErrorKind::OutOfRange { name, index: 5, .. } if name == "0.bias")
    );
    let mut tensors = good(vec![8, 4]);
    tensors[3] = ("2.bias", Dtype::F32, vec![3], f32s(3, 1e5));
    write_tensors(&path, &tensors);
    assert!(matches!(
        checkpoint_error(Engine::<SeqF16>::from_pytorch(&device, &path)),
        CheckpointErrorKind::OutOfRange { storage: "f16", .. }
    ));
    // NaN: the parameters' own check names the place.
    let mut tensors = good(vec![8, 4]);
    tensors[3] = ("2.bias", Dtype::F32, vec![3], f32s(3, f32::NAN));
    write_tensors(&path, &tensors);
    assert!(matches!(Engine::<Seq>::from_pytorch(&device, &path), Err(Error::NonFinite { .. })));
    // Another depth; and two square layers whose names say nothing of their order.
    assert!(matches!(
        checkpoint_error(Engine::<Seq>::from_pytorch(&device, fixture("torch_named.safetensors"))),
        CheckpointErrorKind::Layers { .. }
    ));
    write_tensors(
        &path,
        &[
            ("encoder.weight", Dtype::F32, vec![8, 8], f32s(64, 0.5)),
            ("encoder.bias", Dtype::F32, vec![8], f32s(8, 0.0)),
            ("head.weight", Dtype::F32, vec![8, 8], f32s(64, 0.5)),
            ("head.bias", Dtype::F32, vec![8], f32s(8, 0.0)),
        ],
    );
    let kind = checkpoint_error(Engine::<Square>::from_pytorch(&device, &path));
    assert!(matches!(&kind, CheckpointErrorKind::Layers { reason, .. } if reason.contains("cannot settle")), "{kind}");
    // Our own checkpoint's names are not a state dict's; a state dict is not our checkpoint.
    let ours = dir.join("ours.safetensors");
    Seq::new(&device).unwrap().save(&ours).unwrap();
    assert!(
        matches!(checkpoint_error(Engine::<Seq>::from_pytorch(&device, &ours)), CheckpointErrorKind::NotLinear { name, .. } if name == "b0" || name == "w0")
    );
    assert!(matches!(
        checkpoint_error(Seq::load(&device, fixture("torch_seq.safetensors"))),
        CheckpointErrorKind::UnexpectedTensor { .. }
    ));
}

fn checkpoint_shape_errors_hint_at_the_transpose() {
    let dir = support::scratch("interop-ckpt-hint");
    let path = dir.join("transposed.safetensors");
    write_tensors(
        &path,
        &[
            ("w0", Dtype::F32, vec![8, 4], f32s(32, 0.5)),
            ("b0", Dtype::F32, vec![8], f32s(8, 0.0)),
            ("w1", Dtype::F32, vec![3, 8], f32s(24, 0.5)),
            ("b1", Dtype::F32, vec![3], f32s(3, 0.0)),
        ],
    );
    let kind = checkpoint_error(Seq::load(&Device::cpu(), &path));
    let text = kind.to_string();
    assert!(matches!(&kind, CheckpointErrorKind::WrongShape { name, .. } if name == "w0"));
    assert!(text.contains("transposed layout") && text.contains("from_pytorch"), "{text}");
    // A shape that is not the transpose gets no such hint.
    write_tensors(&path, &[("w0", Dtype::F32, vec![4, 7], f32s(28, 0.5)), ("b0", Dtype::F32, vec![8], f32s(8, 0.0))]);
    assert!(!checkpoint_error(Seq::load(&Device::cpu(), &path)).to_string().contains("transposed"));
}

fn onnx_bad_files_are_refused() {
    let device = Device::cpu();
    let node = |file: &str| onnx_error(Engine::<Seq>::from_onnx(&device, fixture(file)));
    let (path, kind) = node("torch_tanh.onnx");
    assert!(path.ends_with("torch_tanh.onnx"));
    assert_eq!(kind, OnnxErrorKind::Activation { node: "/1/Tanh".into(), found: "Tanh".into(), expected: "Relu" });
    let cases = [
        ("bad_transa.onnx", "/0/Gemm", "transA"),
        ("bad_op.onnx", "/1/Relu", "Sin"),
        ("bad_no_activation.onnx", "/2/Gemm", "no activation"),
        ("bad_attr_type.onnx", "/0/Gemm", "transB' has type 1"),
    ];
    for (file, at, says) in cases {
        let (_, kind) = node(file);
        let text = kind.to_string();
        assert!(
            matches!(&kind, OnnxErrorKind::Node { node, .. } if node == at) && text.contains(says),
            "{file}: {text}"
        );
    }
    // transB = 0 on torch's [out, in] weight: the bias shows the layout is the other one.
    let (_, kind) = node("bad_transposed.onnx");
    let text = kind.to_string();
    assert!(
        matches!(&kind, OnnxErrorKind::Node { node, .. } if node == "/0/Gemm") && text.contains("transpose"),
        "{text}"
    );
    for (file, says) in [("bad_external.onnx", "external"), ("bad_short_tensor.onnx", "holds 32 values")] {
        let (_, kind) = node(file);
        assert!(matches!(&kind, OnnxErrorKind::Tensor { reason, .. } if reason.contains(says)), "{file}: {kind}");
    }
    // Another depth than the declaration's.
    assert!(matches!(
        onnx_error(Engine::<Named3>::from_onnx(&device, fixture("torch_seq.onnx"))).1,
        OnnxErrorKind::Layers { .. }
    ));
    // Not ONNX at all: a safetensors file, and an empty one.
    assert!(matches!(node("torch_seq.safetensors").1, OnnxErrorKind::Decode { .. }));
    let dir = support::scratch("interop-onnx-bad");
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(onnx_error(Engine::<Seq>::from_onnx(&device, &empty)).1, OnnxErrorKind::Graph { .. }));
    assert!(matches!(Engine::<Seq>::from_onnx(&device, dir.join("absent.onnx")), Err(Error::Io { .. })));
}

/// Every fixture, corrupted at random (bytes flipped, cut short, lengths made huge) many
/// times over with a fixed seed: an error or a model, never a panic (a bounded stand-in for
/// the fuzz target fuzz/fuzz_targets/onnx_read.rs, which needs cargo-fuzz and nightly).
fn onnx_reader_survives_corruption() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    let (mut accepted, mut refused) = (0, 0);
    for (f, file) in files.iter().enumerate() {
        let original = std::fs::read(file).unwrap();
        for trial in 0..400usize {
            let mut bytes = original.clone();
            let seed = (f * 1000 + trial) as u64;
            let pick = |k: usize, n: usize| ((support::noise(seed, k) + 1.0) / 2.0 * n as f32) as usize % n.max(1);
            match trial % 4 {
                0 => bytes.truncate(pick(0, original.len())),
                1 => {
                    for k in 0..1 + trial % 8 {
                        let at = pick(2 * k, bytes.len());
                        bytes[at] ^= 1 << pick(2 * k + 1, 8);
                    }
                }
                2 => {
                    // A varint length of 2^62 at a random place.
                    let at = pick(0, bytes.len());
                    bytes.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
                }
                _ => {
                    let at = pick(0, bytes.len());
                    bytes[at] = (pick(1, 256)) as u8;
                }
            }
            match tensorbridge::onnx::__read_onnx::<Seq>(&bytes) {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
    }
    crate::test_log!("corrupted files: {accepted} read, {refused} refused");
    assert!(refused > accepted);
}

fn onnxruntime_runs_our_export() {
    let dir = support::scratch("interop-ort");
    let device = Device::cpu();
    let mut model = Engine::<Seq>::from_pytorch(&device, fixture("torch_seq.safetensors")).unwrap();
    let data = Dataset::from_npy(support::data("iris_features.npy"), support::data("iris_labels.npy")).unwrap();
    let fitted = tensorbridge::data::Standardizer::fit(&data).unwrap();
    model
        .set_standardizer(Standardizer::from_mean_scale(fitted.mean().to_vec(), fitted.scale().to_vec()).unwrap())
        .unwrap();
    let half = Engine::<SeqF16>::from_pytorch(&device, fixture("torch_seq.safetensors")).unwrap();
    let raw = rows("x_test.npy");
    for (name, ours, proba) in [
        ("f32", model.logits(&raw).unwrap(), model.predict_proba(&raw).unwrap()),
        (
            "f16",
            half.logits(&raw.map(tensorbridge::half::f16::from_f32)).unwrap(),
            half.predict_proba(&raw.map(tensorbridge::half::f16::from_f32)).unwrap(),
        ),
    ] {
        let path = dir.join(format!("{name}.onnx"));
        if name == "f32" {
            model.save_onnx(&path).unwrap();
        } else {
            half.save_onnx(&path).unwrap();
        }
        let out = dir.join(format!("{name}-ort"));
        support::python(
            "import sys, numpy as np, onnxruntime as ort\n\
             s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
             logits, proba = s.run(['logits', 'probabilities'], {'input': np.load(sys.argv[2])})\n\
             np.save(sys.argv[3] + '-logits.npy', logits); np.save(sys.argv[3] + '-proba.npy', proba)",
            &[path.to_str().unwrap(), fixture("x_test.npy").to_str().unwrap(), out.to_str().unwrap()],
        );
        let read =
            |suffix: &str| -> DMatrix<f32> { npy::read_matrix(format!("{}-{suffix}.npy", out.display())).unwrap() };
        let theirs: Vec<f64> = read("logits").iter().map(|&v| f64::from(v)).collect();
        let scale = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let max_abs = ours.iter().zip(&theirs).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - b).abs()));
        let max_rel =
            ours.iter().zip(&theirs).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - b).abs() / b.abs().max(1e-3)));
        crate::test_log!("{name}: ours vs onnxruntime, max abs {max_abs:.2e}, relative to max |logit| {:.2e}, elementwise {max_rel:.2e}", max_abs / scale);
        assert!(max_abs <= 1e-6 * scale, "{name}: logits differ by {max_abs:e} (max |logit| {scale})");
        let theirs: Vec<f32> = read("proba").iter().copied().collect();
        support::assert_agree("probabilities", proba.as_slice(), &theirs, 1e-6, 1e-6);
    }
}

fn integer_labels_write_for_numpy() {
    let dir = support::scratch("interop-labels");
    let path = dir.join("labels.npy");
    npy::write_labels(&path, &[2, 0, 1, 4_000_000_000]).unwrap();
    assert_eq!(npy::read_labels(&path).unwrap(), vec![2, 0, 1, 4_000_000_000]);
}

fn integer_labels_read_by_numpy() {
    let dir = support::scratch("interop-labels-numpy");
    let path = dir.join("labels.npy");
    npy::write_labels(&path, &[2, 0, 1, 4_000_000_000]).unwrap();
    let out = support::python(
        "import sys, numpy as np; a = np.load(sys.argv[1]); print(a.dtype, a.shape, a.tolist())",
        &[path.to_str().unwrap()],
    );
    assert_eq!(out.trim(), "int64 (4,) [2, 0, 1, 4000000000]");
}

crate::tests! {
    device pytorch_state_dicts_load,
    device pytorch_export_is_what_torch_writes,
    device onnx_torch_exports_load,
    device onnx_sklearn_exports_load,
    device onnx_export_reads_back,
    device standardizer_is_saved_and_applied,
    device predict_proba_is_the_softmax_of_the_logits,
    plain pytorch_bad_files_are_refused,
    plain checkpoint_shape_errors_hint_at_the_transpose,
    plain onnx_bad_files_are_refused,
    plain onnx_tanh_models_read_and_write_tanh,
    plain onnx_reader_survives_corruption,
    plain integer_labels_write_for_numpy,
    numpy integer_labels_read_by_numpy,
    onnxruntime onnxruntime_runs_our_export,
}
