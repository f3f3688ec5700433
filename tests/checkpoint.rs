//! Checkpoints: save/load round trips, the on-disk layout (checked by NumPy reading the
//! safetensors file by hand), validation errors, atomicity under a kill mid-write, and the
//! optimizer's hyperparameters saved and restored (resume equals the uninterrupted run).

use crate::support;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use safetensors::tensor::{Dtype, TensorView};
use tensorbridge::checkpoint::CheckpointErrorKind;
use tensorbridge::optim::{Adam, AdamW, Momentum, Sgd};
use tensorbridge::{matrix, vector};
use tensorbridge::{Device, Engine, Error, HostTensor, Model, Params};

tensorbridge::model! {
    /// Linear, 4 -> 3.
    pub struct Lin { batch: 2, features: 4, classes: 3 }
}
tensorbridge::model! {
    /// Linear, 4 -> 2.
    pub struct Lin2 { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// 4 -> 5 -> 3.
    pub struct Mlp { batch: 2, features: 4, classes: 3, hidden: [5] }
}
tensorbridge::model! {
    /// 4 -> 5 -> 3 with Adam.
    pub struct AdamMlp { batch: 2, features: 4, classes: 3, hidden: [5], optimizer: adam }
}
tensorbridge::model! {
    /// 4 -> 5 -> 3 with AdamW.
    pub struct AdamWMlp { batch: 2, features: 4, classes: 3, hidden: [5], optimizer: adamw }
}
tensorbridge::model! {
    /// 4 -> 5 -> 3 with momentum.
    pub struct MomentumMlp { batch: 2, features: 4, classes: 3, hidden: [5], optimizer: momentum }
}
tensorbridge::model! {
    /// Large enough (about 1 MiB of parameters) that a save takes a while.
    pub struct Big { batch: 1, features: 512, classes: 8, hidden: [512] }
}

fn lin_params() -> LinParams {
    LinParams {
        w0: matrix![1.0, 2.0, 3.0; 4.0, 5.0, 6.0; 7.0, 8.0, 9.0; 10.0, 11.0, 12.0],
        b0: vector![-1.0, 0.5, 0.25],
    }
}

fn checkpoint_error(result: tensorbridge::Result<impl std::fmt::Debug>) -> CheckpointErrorKind {
    match result {
        Err(Error::Checkpoint { kind, .. }) => kind,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// Writes a safetensors file with the given `(name, dtype, shape, bytes)` tensors.
fn write_tensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()).unwrap();
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|k| (k as f32).to_le_bytes()).collect()
}

fn save_then_load_restores_exactly() {
    let dir = support::scratch("ckpt-roundtrip");
    let device = Device::cpu();
    let model = Mlp::new(&device).unwrap();
    let path = dir.join("mlp.safetensors");
    model.save(&path).unwrap();
    let loaded = Mlp::load(&device, &path).unwrap();
    assert_eq!(loaded.params().unwrap(), model.params().unwrap());
    // Saving again replaces the file.
    let other = Lin::with_params(&device, lin_params()).unwrap();
    let path = dir.join("lin.safetensors");
    Lin::new(&device).unwrap().save(&path).unwrap();
    other.save(&path).unwrap();
    assert_eq!(Lin::load(&device, &path).unwrap().params().unwrap(), lin_params());
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

fn the_file_holds_row_major_in_out_tensors_numpy_can_read() {
    let dir = support::scratch("ckpt-numpy");
    let path = dir.join("lin.safetensors");
    Lin::with_params(&Device::cpu(), lin_params()).unwrap().save(&path).unwrap();
    // The safetensors layout read by hand: u64 header length, JSON header, raw data.
    let script = r#"
import sys, json, struct, numpy as np
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
for name in sorted(k for k in header if k != '__metadata__'):
    t = header[name]
    a, b = t['data_offsets']
    arr = np.frombuffer(data[a:b], dtype='<f4').reshape(t['shape'])
    print(name, t['dtype'], arr.shape, arr.ravel().tolist())
print(header['__metadata__']['tensorbridge'])
"#;
    let out = support::python(script, &[path.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    // w0 is [in, out] = [4, 3] in C order: row i holds the weights of input i.
    assert_eq!(lines[0], "b0 F32 (3,) [-1.0, 0.5, 0.25]");
    assert_eq!(lines[1], "w0 F32 (4, 3) [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]");
    assert_eq!(lines[2], "Lin: 4 -> 3; optimizer: sgd(lr=0.001, weight_decay=0.0)");
}

fn shape_mismatches_name_the_tensor_and_both_shapes() {
    let dir = support::scratch("ckpt-shapes");
    let device = Device::cpu();
    let path = dir.join("lin.safetensors");
    Lin::with_params(&device, lin_params()).unwrap().save(&path).unwrap();
    let kind = checkpoint_error(Lin2::load(&device, &path));
    assert_eq!(
        kind,
        CheckpointErrorKind::WrongShape {
            name: "w0".into(),
            model: "Lin2",
            expected: vec![4, 2],
            found: vec![4, 3],
            hint: tensorbridge::checkpoint::ShapeHint::None
        }
    );
    let message = Error::Checkpoint { path: path.clone(), kind }.to_string();
    assert!(message.contains("lin.safetensors") && message.contains("w0") && message.contains("[4, 2]"), "{message}");

    // A deeper checkpoint into a linear model: its extra tensors are named.
    let mlp_path = dir.join("mlp.safetensors");
    Mlp::new(&device).unwrap().save(&mlp_path).unwrap();
    assert!(
        matches!(checkpoint_error(Lin::load(&device, &mlp_path)), CheckpointErrorKind::UnexpectedTensor { name, .. } if name == "b1")
    );
    // A linear checkpoint into a deeper model: w0 is [4, 3], not [4, 5].
    assert!(matches!(
        checkpoint_error(Mlp::load(&device, &path)),
        CheckpointErrorKind::WrongShape { name, expected, found, .. } if name == "w0" && expected == vec![4, 5] && found == vec![4, 3]
    ));
}

fn missing_wrong_dtype_and_garbage_are_errors() {
    let dir = support::scratch("ckpt-bad");
    let device = Device::cpu();
    let path = dir.join("bad.safetensors");

    write_tensors(&path, &[("w0", Dtype::F32, vec![4, 3], f32_bytes(12))]);
    assert!(
        matches!(checkpoint_error(Lin::load(&device, &path)), CheckpointErrorKind::MissingTensor { name, .. } if name == "b0")
    );

    let f64_bytes: Vec<u8> = (0..12).flat_map(|k| (k as f64).to_le_bytes()).collect();
    write_tensors(&path, &[("w0", Dtype::F64, vec![4, 3], f64_bytes), ("b0", Dtype::F32, vec![3], f32_bytes(3))]);
    assert!(
        matches!(checkpoint_error(Lin::load(&device, &path)), CheckpointErrorKind::WrongDtype { name, .. } if name == "w0")
    );

    write_tensors(&path, &[("w0", Dtype::F32, vec![12], f32_bytes(12)), ("b0", Dtype::F32, vec![3], f32_bytes(3))]);
    assert!(matches!(checkpoint_error(Lin::load(&device, &path)), CheckpointErrorKind::WrongShape { .. }));

    let mut nan = f32_bytes(3);
    nan[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    write_tensors(&path, &[("w0", Dtype::F32, vec![4, 3], f32_bytes(12)), ("b0", Dtype::F32, vec![3], nan)]);
    assert!(matches!(Lin::load(&device, &path), Err(Error::NonFinite { .. })));

    std::fs::write(&path, b"definitely not a safetensors file").unwrap();
    assert!(matches!(checkpoint_error(Lin::load(&device, &path)), CheckpointErrorKind::Format { .. }));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(checkpoint_error(Lin::load(&device, &path)), CheckpointErrorKind::Format { .. }));
    assert!(matches!(Lin::load(&device, dir.join("absent.safetensors")), Err(Error::Io { .. })));
}

fn a_save_that_cannot_start_leaves_nothing() {
    let dir = support::scratch("ckpt-nodir");
    let model = Lin::new(&Device::cpu()).unwrap();
    let result = model.save(dir.join("missing-subdir").join("x.safetensors"));
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

const CHILD_ENV: &str = "TENSORBRIDGE_TEST_CHECKPOINT_CHILD";

/// Run by `killing_a_save_mid_write_leaves_a_whole_checkpoint` as a child process: saves
/// two parameter sets to the same path, alternately, until it is killed. Listed only in
/// that child.
fn checkpoint_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let device = Device::cpu();
    let a = tensorbridge::Engine::<Big>::with_seed(&device, 1).unwrap();
    let b = tensorbridge::Engine::<Big>::with_seed(&device, 2).unwrap();
    for k in 0..u64::MAX {
        let model = if k % 2 == 0 { &a } else { &b };
        model.save(&path).unwrap();
        eprintln!("saved {k}");
    }
}

fn killing_a_save_mid_write_leaves_a_whole_checkpoint() {
    let dir = support::scratch("ckpt-kill");
    let path = dir.join("big.safetensors");
    let device = Device::cpu();
    let a = tensorbridge::Engine::<Big>::with_seed(&device, 1).unwrap().params().unwrap();
    let b = tensorbridge::Engine::<Big>::with_seed(&device, 2).unwrap().params().unwrap();
    // (Not `with_params(a.clone())`: cloning a boxed 1 MiB matrix goes through the stack
    // in debug builds.)
    tensorbridge::Engine::<Big>::with_seed(&device, 1).unwrap().save(&path).unwrap();
    let mut rng = tensorbridge::rng::Rng::new(11);
    let mut saves = 0;
    for round in 0..8 {
        let mut child = support::child_process(module_path!(), "checkpoint_writer_child")
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + rng.below(250)));
        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs
        child.wait().unwrap();
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        saves += log.lines().filter(|l| l.starts_with("saved ")).count();
        let loaded = Big::load(&device, &path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let p = loaded.params().unwrap();
        assert!(p == a || p == b, "round {round}: the checkpoint is neither of the two saved");
    }
    // The kills interrupted a running save loop, not a child still starting up.
    assert!(saves > 0, "no save completed before the kills");
    // A later save removes the temporary files the killed saves left (issue 12): those of
    // dead processes, once a minute old (their times are moved back to say so).
    let then = std::time::SystemTime::now() - Duration::from_secs(120);
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::File::options().write(true).open(entry.unwrap().path()).unwrap().set_modified(then).unwrap();
    }
    tensorbridge::Engine::<Big>::with_seed(&device, 1).unwrap().save(&path).unwrap();
    if Path::new("/proc/self").exists() {
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("big.safetensors")], "stale temporaries remain");
    }
    crate::test_log!("{saves} saves completed across 8 kills");
}

fn checkpoints_move_between_cpu_and_opencl(device: &Device) {
    // One folder per device: the CPU and OpenCL trials run at the same time.
    let dir = support::scratch(if device.is_cpu() { "ckpt-devices-cpu" } else { "ckpt-devices-opencl" });
    let path = dir.join("mlp.safetensors");
    let cpu = Mlp::new(&Device::cpu()).unwrap();
    cpu.save(&path).unwrap();
    let on_device = Mlp::load(device, &path).unwrap();
    assert_eq!(on_device.params().unwrap(), cpu.params().unwrap());
    let again = dir.join("again.safetensors");
    on_device.save(&again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&path).unwrap(), "byte-identical files");
}

/// Replaces the metadata entry of the checkpoint at `path`, its tensors kept; `None` leaves
/// none, as a file written by an older version or another program.
fn with_entry(path: &Path, entry: Option<&str>) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file.tensors();
    let metadata = entry.map(|e| HashMap::from([("tensorbridge".to_string(), e.to_string())]));
    let views = tensors.iter().map(|(name, view)| (name.as_str(), view));
    std::fs::write(path, safetensors::serialize(views, metadata).unwrap()).unwrap();
}

/// Steps `from..to` of a run: batch `t` and its learning rate are functions of `t` alone.
fn steps<M: Model<Storage = f32>>(model: &mut Engine<M>, from: usize, to: usize) {
    for t in from..to {
        let x: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|k| ((t * 7 + k * 5) % 11) as f32 / 5.0 - 1.0).collect();
        let y: Vec<u32> = (0..M::BATCH).map(|r| ((t + r) % M::CLASSES) as u32).collect();
        let lr = 0.05 / (1 + t % 4) as f32;
        model.train_step(&M::Input::from_flat(&x), &M::Labels::from_flat(&y), lr).unwrap();
    }
}

fn param_bits<M: Model<Storage = f32>>(model: &Engine<M>) -> Vec<u32> {
    let mut flat = vec![0.0f32; M::Params::LEN];
    model.params().unwrap().write_flat(&mut flat);
    flat.iter().map(|v| v.to_bits()).collect()
}

/// Save after 6 steps with `hyperparameters` set, load, 6 more steps: the parameters are
/// those of 12 steps without a break, bit for bit. The same file without the record (as an
/// older version wrote it) loads with the model's default hyperparameters, and its run
/// differs: the comparison could fail.
fn resume_equals_the_uninterrupted_run<M: Model<Storage = f32>>(hyperparameters: M::Optimizer, name: &str) {
    let device = Device::cpu();
    let path = support::scratch(name).join("checkpoint.safetensors");
    let mut whole = Engine::<M>::new(&device).unwrap();
    whole.set_optimizer(hyperparameters).unwrap();
    steps(&mut whole, 0, 12);
    let mut first = Engine::<M>::new(&device).unwrap();
    first.set_optimizer(hyperparameters).unwrap();
    steps(&mut first, 0, 6);
    first.save(&path).unwrap();
    let mut second = Engine::<M>::load(&device, &path).unwrap();
    assert_eq!(second.optimizer(), hyperparameters, "{name}: the hyperparameters are restored");
    steps(&mut second, 6, 12);
    assert_eq!(param_bits(&second), param_bits(&whole), "{name}: save at step 6, load, 6 more steps");

    with_entry(&path, None);
    let mut older = Engine::<M>::load(&device, &path).unwrap();
    assert_eq!(older.optimizer(), M::Optimizer::default(), "{name}: a file without the record");
    steps(&mut older, 6, 12);
    assert_ne!(param_bits(&older), param_bits(&whole), "{name}: the defaults give another run");
}

fn resume_with_non_default_hyperparameters_equals_the_uninterrupted_run() {
    // Every field away from its default, with values that need all of an f32's digits.
    let adam = Adam { lr: 0.0123, beta1: 0.8, beta2: 0.95, eps: 1.234_567_9e-5, weight_decay: 0.01 };
    resume_equals_the_uninterrupted_run::<AdamMlp>(adam, "ckpt-resume-adam");
    let adamw = AdamW { lr: 0.02, beta1: 0.85, beta2: 0.99, eps: 3e-7, weight_decay: 0.3 };
    resume_equals_the_uninterrupted_run::<AdamWMlp>(adamw, "ckpt-resume-adamw");
    let momentum = Momentum { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 1.0 / 3.0 };
    resume_equals_the_uninterrupted_run::<MomentumMlp>(momentum, "ckpt-resume-momentum");
    resume_equals_the_uninterrupted_run::<Mlp>(Sgd { lr: 0.2, weight_decay: 0.25 }, "ckpt-resume-sgd");
}

/// The record as written, read by hand: names, values, and the order of the records.
fn the_hyperparameters_are_written_in_the_header() {
    let path = support::scratch("ckpt-record").join("momentum.safetensors");
    let mut model = MomentumMlp::new(&Device::cpu()).unwrap();
    model.set_optimizer(Momentum { lr: 0.5, momentum: 0.75, nesterov: true, weight_decay: 1e-8 }).unwrap();
    model.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..]);
    let entry = "MomentumMlp: 4 -> 5 -> 3; activations: relu; \
                 optimizer: momentum(lr=0.5, momentum=0.75, nesterov=true, weight_decay=1e-8)";
    assert!(header.contains(entry), "{header}");
}

fn malformed_hyperparameter_records_are_typed_errors() {
    let device = Device::cpu();
    let path = support::scratch("ckpt-bad-record").join("adam.safetensors");
    let mut model = AdamMlp::new(&device).unwrap();
    steps(&mut model, 0, 2);
    model.save(&path).unwrap();
    let entry = |record: &str| format!("AdamMlp: 4 -> 5 -> 3; activations: relu; optimizer: {record}");
    let all = "lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0";
    for record in [
        "adam".to_string(),
        format!("adam({all}"),
        format!("adam[{all}]"),
        "adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8)".to_string(),
        format!("adam({all}, momentum=0.9)"),
        format!("adam({all}, lr=0.1)"),
        format!("adam({all}, amsgrad)"),
        "adam(lr=fast, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)".to_string(),
        "adam(lr=0.001, beta1=1.5, beta2=0.999, eps=1e-8, weight_decay=0.0)".to_string(),
        "adam(lr=NaN, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)".to_string(),
        "adam(lr=0.001, beta1=0.9, beta2=0.999, eps=-1e-8, weight_decay=0.0)".to_string(),
        "adam(lr=1e99, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)".to_string(),
    ] {
        with_entry(&path, Some(&entry(&record)));
        match checkpoint_error(AdamMlp::load(&device, &path)) {
            CheckpointErrorKind::Hyperparameters { record: found, reason } => {
                assert_eq!(found, record, "{reason}");
                let message = Error::Checkpoint {
                    path: path.clone(),
                    kind: CheckpointErrorKind::Hyperparameters { record: found, reason },
                }
                .to_string();
                assert!(message.contains("adam.safetensors") && message.contains(&record), "{message}");
            }
            other => panic!("{record}: {other:?}"),
        }
    }
    // A well-formed record loads.
    with_entry(&path, Some(&entry(&format!("adam({all})"))));
    assert_eq!(AdamMlp::load(&device, &path).unwrap().optimizer(), Adam { lr: 0.001, ..Adam::default() });

    // Momentum's flag is `true` or `false`.
    let path = support::scratch("ckpt-bad-record").join("momentum.safetensors");
    MomentumMlp::new(&device).unwrap().save(&path).unwrap();
    let record = "momentum(lr=0.1, momentum=0.9, nesterov=yes, weight_decay=0.0)";
    with_entry(&path, Some(&format!("MomentumMlp: 4 -> 5 -> 3; activations: relu; optimizer: {record}")));
    assert!(matches!(
        checkpoint_error(MomentumMlp::load(&device, &path)),
        CheckpointErrorKind::Hyperparameters { reason, .. } if reason.contains("nesterov=yes")
    ));
}

/// Adam's state (`optim.exp_avg.*`, the names AdamW's state has too) under an AdamW model is
/// refused; an SGD model's checkpoint, which holds no state, loads into an Adam model with
/// the Adam model's defaults.
fn another_optimizers_record() {
    let device = Device::cpu();
    let dir = support::scratch("ckpt-other-optimizer");
    let adam_path = dir.join("adam.safetensors");
    let mut adam = AdamMlp::new(&device).unwrap();
    adam.set_optimizer(Adam { beta1: 0.5, ..Adam::default() }).unwrap();
    steps(&mut adam, 0, 2);
    adam.save(&adam_path).unwrap();
    match checkpoint_error(AdamWMlp::load(&device, &adam_path)) {
        CheckpointErrorKind::WrongOptimizer { model, expected, found } => {
            assert_eq!((model, expected), ("AdamWMlp", "adamw"));
            assert!(found.starts_with("adam(lr=0.001, beta1=0.5,"), "{found}");
        }
        other => panic!("{other:?}"),
    }

    let sgd_path = dir.join("sgd.safetensors");
    let mut sgd = Mlp::new(&device).unwrap();
    sgd.set_optimizer(Sgd { lr: 0.5, weight_decay: 0.5 }).unwrap();
    sgd.save(&sgd_path).unwrap();
    let loaded = AdamMlp::load(&device, &sgd_path).unwrap();
    assert_eq!(loaded.optimizer(), Adam::default());
    let mut want = vec![0.0f32; <MlpParams as Params>::LEN];
    sgd.params().unwrap().write_flat(&mut want);
    let mut got = vec![0.0f32; <AdamMlpParams as Params>::LEN];
    loaded.params().unwrap().write_flat(&mut got);
    assert_eq!(got, want);
}

/// An SGD checkpoint with weight decay, saved on the CPU, loads on OpenCL with its
/// hyperparameters, and its next step there takes the decay as the CPU's does (to rounding:
/// the kernels' arithmetic is OpenCL's).
fn hyperparameters_saved_on_the_cpu_step_alike_on_opencl(device: &Device) {
    let path = support::scratch("ckpt-decay-opencl").join("mlp.safetensors");
    let mut cpu = Mlp::new(&Device::cpu()).unwrap();
    let sgd = Sgd { lr: 0.1, weight_decay: 0.5 };
    cpu.set_optimizer(sgd).unwrap();
    cpu.save(&path).unwrap();
    let mut on_device = Mlp::load(device, &path).unwrap();
    assert_eq!(on_device.optimizer(), sgd);
    assert_eq!(on_device.params().unwrap(), cpu.params().unwrap());
    let (x, y) = (matrix![1.0, 2.0, 3.0, 4.0; -1.0, 0.5, 0.0, 2.0], vector![2, 0]);
    assert_eq!(on_device.predict(&x).unwrap(), cpu.predict(&x).unwrap());
    let mut plain = Mlp::load(&Device::cpu(), &path).unwrap();
    plain.set_optimizer(Sgd { lr: 0.1, weight_decay: 0.0 }).unwrap();
    cpu.train_step(&x, &y, 0.1).unwrap();
    on_device.train_step(&x, &y, 0.1).unwrap();
    plain.train_step(&x, &y, 0.1).unwrap();
    let mut want = vec![0.0f32; <MlpParams as Params>::LEN];
    cpu.params().unwrap().write_flat(&mut want);
    let mut got = vec![0.0f32; <MlpParams as Params>::LEN];
    on_device.params().unwrap().write_flat(&mut got);
    let mut undecayed = vec![0.0f32; <MlpParams as Params>::LEN];
    plain.params().unwrap().write_flat(&mut undecayed);
    let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(gap(&got, &want) <= 1e-5, "OpenCL's decayed step is {} from the CPU's", gap(&got, &want));
    assert!(gap(&undecayed, &want) > 1e-3, "the decay changes the step");
}

crate::tests! {
    plain resume_with_non_default_hyperparameters_equals_the_uninterrupted_run,
    plain the_hyperparameters_are_written_in_the_header,
    plain malformed_hyperparameter_records_are_typed_errors,
    plain another_optimizers_record,
    plain save_then_load_restores_exactly,
    numpy the_file_holds_row_major_in_out_tensors_numpy_can_read,
    plain shape_mismatches_name_the_tensor_and_both_shapes,
    plain missing_wrong_dtype_and_garbage_are_errors,
    plain a_save_that_cannot_start_leaves_nothing,
    child(CHILD_ENV) checkpoint_writer_child,
    plain killing_a_save_mid_write_leaves_a_whole_checkpoint,
    opencl checkpoints_move_between_cpu_and_opencl,
    opencl hyperparameters_saved_on_the_cpu_step_alike_on_opencl,
}
