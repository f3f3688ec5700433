//! Regressions on the OpenCL backend, each named after what once went wrong.

use crate::support::assert_agree as assert_close;
use tensorbridge::{Device, Engine, HostTensor, KernelPath, Model, Params};

tensorbridge::model! { struct Iris { batch: 16, features: 4, classes: 3 } }
tensorbridge::model! { struct Narrow { batch: 8, features: 3, classes: 2 } }
tensorbridge::model! { struct TallMlp { batch: 32, features: 2, hidden: [3], classes: 5 } }

/// Thousands of fused steps on a model with far fewer parameters than work-items: PoCL 3.1
/// compiled the kernel's `for (k = lid; k < TB_PARAMS; k += WG)` update so that it wrote
/// past the parameter buffer, corrupting the heap (an abort after a few hundred steps at
/// iris's shape). The parameters must also still match the CPU backend's.
fn many_fused_steps<M: Model<Storage = f32>>(device: &Device) {
    let x: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|k| ((k * 29 % 53) as f32 / 53.0) - 0.5).collect();
    let y: Vec<u32> = (0..M::BATCH).map(|r| (r * 7 % M::CLASSES) as u32).collect();
    let (x, y) = (M::Input::from_flat(&x), M::Labels::from_flat(&y));
    let mut gpu = Engine::<M>::new(&device.with_kernel_path(KernelPath::Fused)).unwrap();
    let mut cpu = Engine::<M>::new(&Device::cpu()).unwrap();
    for step in 0..3000 {
        if step % 2 == 0 {
            gpu.train_step_deferred(&x, &y, 0.01).unwrap();
        } else {
            gpu.train_step(&x, &y, 0.01).unwrap();
        }
        cpu.train_step(&x, &y, 0.01).unwrap();
    }
    assert_eq!(gpu.take_losses().unwrap().len(), 1500);
    let (mut a, mut b) = (vec![0.0; M::Params::LEN], vec![0.0; M::Params::LEN]);
    gpu.params().unwrap().write_flat(&mut a);
    cpu.params().unwrap().write_flat(&mut b);
    assert_close(M::NAME, &a, &b, 1e-4, 1e-3);
}

fn fused_steps_never_write_past_the_parameters(device: &Device) {
    many_fused_steps::<Iris>(device);
    many_fused_steps::<Narrow>(device);
    many_fused_steps::<TallMlp>(device);
}

crate::tests! {
    opencl fused_steps_never_write_past_the_parameters,
}
