//! One model serves many threads: inference takes `&self`, a model is `Send + Sync`, and
//! predictions from 4 threads sharing one `Arc<Model>` equal the sequential ones bit for bit,
//! on the CPU and on OpenCL (both kernel paths). On PoCL, also on its `basic` driver, which
//! runs each command in the thread that submits it: before every command on a queue took
//! the queue's lock, two threads on one queue there gave wrong logits or hung (4 runs in 6).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{child_process, noise, paths};
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

crate::tests! {
    device shared_model_agrees_with_sequential,
    opencl shared_model_agrees_on_pocls_basic_driver,
    child(BASIC_CHILD) basic_child,
}
