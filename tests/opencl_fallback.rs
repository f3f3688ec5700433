//! Fallback where the ICD loader finds no platform (`OCL_ICD_VENDORS` = an empty
//! directory): `Device::auto()` gives the CPU backend and `Device::opencl()` a clear
//! error. Runs in a child process, so the variable is set before the loader starts.
//! `Device::auto_explained` says why it chose what it chose, in each of these cases.

use std::process::Command;

use tensorbridge::{Device, DeviceType, Error};

const CHILD: &str = "TENSORBRIDGE_FALLBACK_CHILD";

fn run_child(test: &str, device_env: Option<&str>) -> String {
    run_child_with(test, device_env, true, &[])
}

/// Runs `test` in a child process (the variable `CHILD` set), with `TENSORBRIDGE_DEVICE` as
/// given, the ICD loader's platforms hidden or not, and `extra` variables; returns its
/// standard error.
fn run_child_with(test: &str, device_env: Option<&str>, hide_platforms: bool, extra: &[(&str, &str)]) -> String {
    let empty = crate::support::scratch("no-vendors");
    let mut cmd = crate::support::child_process(module_path!(), test);
    cmd.env(CHILD, "1").env_remove(tensorbridge::TRACE_DEVICE_ENV);
    if hide_platforms {
        cmd.env("OCL_ICD_VENDORS", &empty);
    }
    match device_env {
        Some(v) => cmd.env("TENSORBRIDGE_DEVICE", v),
        None => cmd.env_remove("TENSORBRIDGE_DEVICE"),
    };
    cmd.envs(extra.iter().copied());
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn no_platform_falls_back_to_the_cpu() {
    if std::env::var_os(CHILD).is_none() {
        run_child("no_platform_falls_back_to_the_cpu", None);
        return;
    }
    assert!(Device::auto().is_cpu());
    let (device, why) = Device::auto_explained();
    assert!(device.is_cpu());
    assert!(why.starts_with("no OpenCL device (") && why.contains("no platform"), "{why}");
    assert!(why.ends_with(": the CPU backend"), "{why}");
    match Device::opencl() {
        Err(Error::NoOpenClDevice { reason }) => assert!(reason.contains("no platform"), "{reason}"),
        other => panic!("expected NoOpenClDevice, got {other:?}"),
    }
    assert!(Device::list().is_err());
}

fn asking_for_opencl_without_a_platform_warns_and_uses_the_cpu() {
    if std::env::var_os(CHILD).is_none() {
        let stderr = run_child("asking_for_opencl_without_a_platform_warns_and_uses_the_cpu", Some("opencl"));
        assert!(stderr.contains("tensorbridge: warning: no OpenCL device"), "{stderr}");
        return;
    }
    assert!(matches!(Device::try_auto(), Err(Error::NoOpenClDevice { .. })));
    assert!(Device::auto().is_cpu());
    let (device, why) = Device::auto_explained();
    assert!(device.is_cpu());
    assert!(why.starts_with("TENSORBRIDGE_DEVICE=opencl asks for it, which failed (no OpenCL device"), "{why}");
    assert!(why.ends_with(": the CPU backend"), "{why}");
}

/// The variable is the reason, and `TENSORBRIDGE_TRACE_DEVICE=1` prints the choice.
fn the_variable_is_the_reason_and_the_trace_prints_it() {
    if std::env::var_os(CHILD).is_none() {
        let stderr = run_child_with(
            "the_variable_is_the_reason_and_the_trace_prints_it",
            Some(" cpu "),
            true,
            &[(tensorbridge::TRACE_DEVICE_ENV, "1")],
        );
        let traced: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tensorbridge: device ")).collect();
        assert_eq!(traced.len(), 2, "one line per choice (auto, explain):\n{stderr}");
        assert!(traced[0].starts_with("tensorbridge: device cpu ("), "{stderr}");
        assert!(traced[0].ends_with(": TENSORBRIDGE_DEVICE=cpu asks for it"), "{stderr}");
        return;
    }
    assert!(Device::auto().is_cpu());
    assert_eq!(Device::explain(), "TENSORBRIDGE_DEVICE=cpu asks for it");
}

/// With no variable: a GPU or accelerator is chosen and named; CPU-type devices (PoCL) are
/// passed over, by name, for the CPU backend; without OpenCL, the reason says why.
fn the_reason_names_the_devices_found() {
    if std::env::var_os(CHILD).is_none() {
        run_child_with("the_reason_names_the_devices_found", None, false, &[]);
        return;
    }
    let (device, why) = Device::auto_explained();
    let Ok(found) = Device::list() else {
        assert!(device.is_cpu() && why.starts_with("no OpenCL device ("), "{why}");
        return;
    };
    match found.iter().find(|i| matches!(i.device_type, DeviceType::Gpu | DeviceType::Accelerator)) {
        Some(gpu) => {
            assert!(device.is_opencl(), "{why}");
            assert!(why.starts_with("the first OpenCL GPU or accelerator, `") && why.contains(&gpu.name), "{why}");
        }
        None => {
            assert!(device.is_cpu(), "{why}");
            assert!(why.starts_with("the OpenCL devices here are CPU-type only ("), "{why}");
            for info in &found {
                assert!(why.contains(&format!("`{}` ({}, CPU)", info.name, info.platform)), "{why}");
            }
            assert!(why.contains("passed over") && why.contains("TENSORBRIDGE_DEVICE=opencl"), "{why}");
            assert!(why.ends_with(": the CPU backend"), "{why}");
        }
    }
}

fn a_bad_device_name_is_refused() {
    assert!(matches!(Device::from_name("vulkan"), Err(Error::InvalidDevice { .. })));
    assert!(matches!(Device::from_name("opencl:x"), Err(Error::InvalidDevice { .. })));
    assert!(Device::from_name(" CPU ").unwrap().is_cpu());
}

/// A machine with no libOpenCL at all: the child runs in a mount namespace where every
/// `libOpenCL.so*` the dynamic linker knows is hidden behind `/dev/null`, so loading the
/// library fails. Needs root, `unshare` and `ldconfig` (CI has them); listed as skipped
/// (ignored) where they are missing.
fn no_opencl_library_falls_back_to_the_cpu() {
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().unwrap();
        let hide = r#"for f in $(ldconfig -p | awk '/libOpenCL\.so/ {print $NF}'); do mount --bind /dev/null "$(readlink -f "$f")" || exit 97; done; exec "$0" "$@""#;
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", hide])
            .arg(exe)
            .args([
                crate::support::trial_name(module_path!(), "no_opencl_library_falls_back_to_the_cpu").as_str(),
                "--exact",
            ])
            .env(CHILD, "1")
            .env_remove("TENSORBRIDGE_DEVICE")
            .output();
        // The harness checked `unshare -m` and `ldconfig` before listing this test.
        let out = out.expect("run unshare");
        assert_ne!(out.status.code(), Some(97), "cannot bind-mount over libOpenCL: {out:?}");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
        return;
    }
    assert!(Device::auto().is_cpu());
    let why = Device::explain();
    assert!(why.starts_with("no OpenCL device (the OpenCL library") && why.contains("could not be loaded"), "{why}");
    match Device::opencl() {
        Err(Error::NoOpenClDevice { reason }) => crate::test_log!("Device::opencl(): {reason}"),
        other => panic!("expected NoOpenClDevice, got {other:?}"),
    }
    assert!(Device::list().is_err());
    // The CPU backend works as ever in the same process.
    tensorbridge::model! { struct Tiny { batch: 2, features: 2, classes: 2 } }
    let mut model = Tiny::new(&Device::auto()).unwrap();
    let x = tensorbridge::matrix![1.0, 0.0; 0.0, 1.0];
    let y = tensorbridge::vector![0u32, 1];
    let first = model.train_step(&x, &y, 0.5).unwrap();
    for _ in 0..20 {
        model.train_step(&x, &y, 0.5).unwrap();
    }
    assert!(model.loss(&x, &y).unwrap() < first);
}

crate::tests! {
    plain no_platform_falls_back_to_the_cpu,
    plain asking_for_opencl_without_a_platform_warns_and_uses_the_cpu,
    plain a_bad_device_name_is_refused,
    plain the_variable_is_the_reason_and_the_trace_prints_it,
    plain the_reason_names_the_devices_found,
    unshare no_opencl_library_falls_back_to_the_cpu,
}
