//! Int8 inference against `f32` inference, in the same run: the time of `predict` for one
//! batch at digits' shape (`{batch 32, features 64, hidden [32], classes 10}`) and MNIST's
//! (`{batch 128, features 784, hidden [128], classes 10}`), on the CPU backend and, where
//! one is present, on OpenCL. Prints one line a shape and device, with the ratio
//! `f32 / int8` (above 1: int8 is faster). The two are timed alternately, trial by trial, so
//! that a load on the machine weighs on both.
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench int8`

use std::time::Instant;

use tensorbridge::{Device, HostTensor, Model};

tensorbridge::model! { struct Digits { batch: 32, features: 64, hidden: [32], classes: 10 } }
tensorbridge::model! { struct Mnist { batch: 128, features: 784, hidden: [128], classes: 10 } }

/// Microseconds of one call of `f`: the mean over a trial of about 20 ms.
fn trial(f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 0.02 {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Medians of 15 alternating trials of `a` and `b`.
fn compare(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        ta.push(trial(a));
        tb.push(trial(b));
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    (ta[7], tb[7])
}

macro_rules! shape {
    ($name:literal, $model:ident, $int8:ident, $device:expr) => {{
        let device: &Device = $device;
        let x = <<$model as Model>::Input as HostTensor>::from_fn(|k| ((k * 7919) % 23) as f32 / 11.0 - 1.0);
        let model = $model::new(device).expect("model");
        let q: $int8 = model.quantize(std::slice::from_ref(&x)).expect("quantize");
        let (t32, t8) = compare(
            &mut || {
                std::hint::black_box(model.predict(&x).expect("f32"));
            },
            &mut || {
                std::hint::black_box(q.predict(&x).expect("int8"));
            },
        );
        println!("{:<7} {:<40} f32 {t32:>9.1} us  int8 {t8:>9.1} us  f32/int8 {:.2}", $name, device.name(), t32 / t8);
    }};
}

fn main() {
    let mut devices = vec![Device::cpu()];
    match Device::opencl() {
        Ok(d) => devices.push(d),
        Err(e) => println!("no OpenCL device ({e}): the CPU backend only"),
    }
    for device in &devices {
        shape!("digits", Digits, DigitsInt8, device);
        shape!("mnist", Mnist, MnistInt8, device);
    }
}
