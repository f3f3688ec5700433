//! One model serves many threads: inference takes `&self`, a model is `Send + Sync`, and
//! predictions from 4 threads sharing one `Arc<Model>` equal the sequential ones bit for bit,
//! on the CPU and on OpenCL (both kernel paths). On PoCL, also on its `basic` driver, which
//! runs each command in the thread that submits it: before every command on a queue took
//! the queue's lock, two threads on one queue there gave wrong logits or hung (4 runs in 6).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{child_process, child_stdout, noise, param_bits, paths, tagged};
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

const BASIC_CHILD: &str = "TENSORBRIDGE_BASIC_CHILD";

/// In the child (`POCL_DEVICES=basic`): the check, three times, on both kernel paths.
fn basic_child() {
    let device = Device::opencl().unwrap();
    assert!(device.name().contains("basic"), "not PoCL's basic driver: {}", device.name());
    for _ in 0..3 {
        shared_model_agrees_with_sequential(&device);
    }
    println!("CHECKED ON {}", device.name());
}

/// PoCL's `basic` driver, in a child process (the driver is chosen when PoCL starts).
fn shared_model_agrees_on_pocls_basic_driver(device: &Device) {
    let info = device.info().unwrap();
    if !info.platform.contains("Portable Computing Language") {
        crate::test_log!("not PoCL ({}): nothing to check", info.platform);
        return;
    }
    let mut child = child_process(module_path!(), "basic_child")
        .env(BASIC_CHILD, "1")
        .env("POCL_DEVICES", "basic")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The failure this guards against was a hang, half of the time: the child gets two
    // minutes (it takes seconds).
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child hung on PoCL's basic driver");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("CHECKED ON"), "the child ran no check: {text}");
}

// A hidden layer wide enough to split (96 outputs: up to 6 parts of 16 columns). Its
// forward product (32 x 600 -> 96) is one the `gemm` crate sums otherwise in parts of at
// most 64 columns (depth blocks of 512), so it must stay whole; the others split.
tensorbridge::model! {
    pub struct Split { batch: 32, features: 600, hidden: [96], classes: 10 }
}

const SPLIT_CHILD: &str = "TENSORBRIDGE_SPLIT_CHILD";

/// In the child: six train steps (the third on a partial batch) of `Split` on the CPU
/// backend and on the core, the losses and parameters compared and printed as one hash, and
/// the device's name (which says the thread count in force).
fn split_child() {
    use tensorbridge::HostTensor;
    let flat: Vec<f32> = (0..32 * 600).map(|k| noise(7, k)).collect();
    let x = <Split as Model>::Input::from_flat(&flat);
    let y = <Split as Model>::Labels::from_flat(&(0..32).map(|r| r % 10).collect::<Vec<u32>>());
    let mut engine = tensorbridge::Engine::<Split>::new(&Device::cpu()).unwrap();
    let mut core = tensorbridge::cpu::Cpu::<Split>::with_seed(tensorbridge::DEFAULT_SEED);
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut mix = |v: u32| hash = (hash ^ u64::from(v)).wrapping_mul(0x0000_0100_0000_01b3);
    for step in 0..6 {
        let rows = if step == 2 { 29 } else { 32 };
        let loss = engine.train_step_rows(&x, &y, rows, 0.05).unwrap();
        assert_eq!(loss.to_bits(), core.train_step_rows(&x, &y, rows, 0.05).unwrap().to_bits(), "step {step}");
        mix(loss.to_bits());
    }
    let params = param_bits(&engine.params().unwrap());
    assert_eq!(params, param_bits(&core.params()), "the core's parameters");
    params.into_iter().for_each(&mut mix);
    engine.logits(&x).unwrap().iter().for_each(|v| mix(v.to_bits()));
    println!("BITS {hash:016x}");
    println!("DEVICE {}", Device::cpu().name());
}

/// Products split over 1, 2 and 3 threads (every product of at least 4,096 multiply-adds
/// split, `TENSORBRIDGE_PAR_MIN_MACS=0`), each in a child process: the same losses,
/// parameters and logits, bit for bit; and each child ran with the threads asked for.
fn cpu_results_do_not_depend_on_the_thread_count() {
    let mut seen = Vec::new();
    for threads in ["1", "2", "3"] {
        let mut child = child_process(module_path!(), "split_child");
        child.env(SPLIT_CHILD, "1").env("TENSORBRIDGE_THREADS", threads).env("TENSORBRIDGE_PAR_MIN_MACS", "0");
        let text = child_stdout(&mut child, threads);
        let device = tagged(&text, "DEVICE ").unwrap_or_else(|| panic!("no device line: {text}"));
        assert!(device.contains(&format!("cpu ({threads} threads")), "{threads} threads asked, ran {device}");
        let bits = tagged(&text, "BITS ").unwrap_or_else(|| panic!("no bits line: {text}"));
        seen.push(bits.trim().to_string());
    }
    assert!(seen.iter().all(|b| *b == seen[0]), "results differ by thread count: {seen:?}");
}

crate::tests! {
    device shared_model_agrees_with_sequential,
    opencl shared_model_agrees_on_pocls_basic_driver,
    child(BASIC_CHILD) basic_child,
    plain cpu_results_do_not_depend_on_the_thread_count,
    child(SPLIT_CHILD) split_child,
}
