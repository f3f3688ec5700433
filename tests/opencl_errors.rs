//! Errors on the OpenCL backend: build failures carry the log, tensors stay on their
//! device, bad labels never reach a kernel, and a diverged step changes nothing.

use tensorbridge::{matrix, vector};
use tensorbridge::{Device, Error, KernelPath};

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}

fn x() -> tensorbridge::nalgebra::SMatrix<f32, 2, 4> {
    matrix![0.9, 0.8, 0.1, 0.05; 0.1, 0.2, 0.8, 0.95]
}

fn a_broken_kernel_reports_the_device_build_log(device: &Device) {
    let broken = "__kernel void broken(__global float *p) { p[0] = undeclared_name; }";
    match device.__build_source(broken) {
        Err(Error::KernelBuild { log, device: name }) => {
            assert!(log.contains("undeclared_name"), "the log names the culprit: {log}");
            assert!(name.contains("OpenCL"), "{name}");
        }
        other => panic!("expected KernelBuild, got {other:?}"),
    }
}

fn a_tensor_from_another_context_is_a_device_mismatch(a: &Device) {
    let b = Device::opencl().unwrap();
    let mut on_a = Seed::new(a).unwrap();
    let on_b = Seed::new(&b).unwrap();
    let t = on_b.to_device(&x()).unwrap();
    assert!(matches!(on_a.forward(&t), Err(Error::DeviceMismatch { .. })));
    // The CPU and OpenCL never exchange tensors either.
    let mut cpu = Seed::new(&Device::cpu()).unwrap();
    assert!(matches!(cpu.forward(&t), Err(Error::DeviceMismatch { .. })));
    let host = cpu.to_device(&x()).unwrap();
    assert!(matches!(on_a.forward(&host), Err(Error::DeviceMismatch { .. })));
    // Clones, and a clone with another kernel path, share the context.
    let mut tiled = Seed::new(&a.with_kernel_path(KernelPath::Tiled)).unwrap();
    let t = on_a.to_device(&x()).unwrap();
    assert!(tiled.forward(&t).is_ok());
}

fn a_label_out_of_range_is_an_error_before_any_kernel(device: &Device) {
    let mut model = Seed::new(device).unwrap();
    let before = model.params().unwrap();
    let err = model.train_step(&x(), &vector![0, 2], 0.1).unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { row: 1, label: 2, classes: 2 }), "{err:?}");
    assert!(model.train_step_deferred(&x(), &vector![7, 0], 0.1).is_err());
    assert_eq!(model.params().unwrap(), before);
}

fn a_non_finite_loss_leaves_the_parameters_unchanged(device: &Device) {
    for d in [device.clone(), device.with_kernel_path(KernelPath::Tiled)] {
        // Logits of +-3e38 * 4 overflow to +-inf: the loss is NaN or inf.
        let huge =
            SeedParams { w0: matrix![3e38, -3e38; 3e38, -3e38; 3e38, -3e38; 3e38, -3e38], b0: vector![0.0, 0.0] };
        let mut model = Seed::with_params(&d, huge.clone()).unwrap();
        let err = model.train_step(&x(), &vector![1, 0], 0.1).unwrap_err();
        assert!(matches!(err, Error::NonFiniteLoss { .. }), "{err:?}");
        assert_eq!(model.params().unwrap(), huge);
        model.train_step_deferred(&x(), &vector![1, 0], 0.1).unwrap();
        model.train_step_deferred(&x(), &vector![1, 0], 0.1).unwrap();
        assert!(matches!(model.take_losses(), Err(Error::NonFiniteLoss { .. })));
        assert_eq!(model.params().unwrap(), huge);
        assert!(model.take_losses().unwrap().is_empty());
    }
}

crate::tests! {
    opencl a_broken_kernel_reports_the_device_build_log,
    opencl a_tensor_from_another_context_is_a_device_mismatch,
    opencl a_label_out_of_range_is_an_error_before_any_kernel,
    opencl a_non_finite_loss_leaves_the_parameters_unchanged,
}
