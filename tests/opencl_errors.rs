//! Errors of the OpenCL backend itself: build failures carry the log, tensors stay on their
//! device. (Bad labels and diverged steps, on every device: tests/errors.rs.)

use crate::support::{child_process, child_stdout, opencl_device};
use tensorbridge::matrix;
use tensorbridge::{Device, Error, KernelPath};

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}

fn x() -> tensorbridge::nalgebra::SMatrix<f32, 2, 4> {
    matrix![0.9, 0.8, 0.1, 0.05; 0.1, 0.2, 0.8, 0.95]
}

const CHILD: &str = "TENSORBRIDGE_BROKEN_BUILD_CHILD";

/// In a child process, whose standard error is captured: the device's compiler writes its
/// diagnostics ("1 error generated.") straight to the process's stderr, which would read
/// as a failure in a passing run.
fn a_broken_kernel_reports_the_device_build_log(_device: &Device) {
    let mut child = child_process(module_path!(), "broken_build_child");
    let out = child_stdout(child.env(CHILD, "1"), "the broken build's child");
    assert!(out.contains("1 passed"), "the child ran the test:\n{out}");
}

/// The child's half: the build fails with the device's log.
fn broken_build_child() {
    let device = opencl_device();
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
    let on_a = Seed::new(a).unwrap();
    let on_b = Seed::new(&b).unwrap();
    let t = on_b.to_device(&x()).unwrap();
    assert!(matches!(on_a.forward(&t), Err(Error::DeviceMismatch { .. })));
    // The CPU and OpenCL never exchange tensors either.
    let cpu = Seed::new(&Device::cpu()).unwrap();
    assert!(matches!(cpu.forward(&t), Err(Error::DeviceMismatch { .. })));
    let host = cpu.to_device(&x()).unwrap();
    assert!(matches!(on_a.forward(&host), Err(Error::DeviceMismatch { .. })));
    // Clones, and a clone with another kernel path, share the context.
    let tiled = Seed::new(&a.with_kernel_path(KernelPath::Tiled)).unwrap();
    let t = on_a.to_device(&x()).unwrap();
    assert!(tiled.forward(&t).is_ok());
}

crate::tests! {
    opencl a_broken_kernel_reports_the_device_build_log,
    opencl a_tensor_from_another_context_is_a_device_mismatch,
    child(CHILD) broken_build_child,
}
