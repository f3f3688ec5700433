//! Start-up reports, warm-up and `prebuild` on OpenCL: where the program came from is
//! reported truthfully, and warming up changes neither the parameters nor the losses.
//! The checks run in a child process with its own, empty `TENSORBRIDGE_CACHE_DIR`, so the
//! first build is a real compile whatever else this suite has built.

use crate::support::{child_process, noise, opencl_device, scratch, tagged};
use tensorbridge::{prebuild, Device, Engine, HostTensor, Model, Params, ProgramOrigin};

tensorbridge::model! {
    /// Tiled path (too large for the fused kernel).
    pub struct Tiled { batch: 13, features: 300, classes: 5, hidden: [21] }
}

fn flat<P: Params<Elem = f32>>(p: &P) -> Vec<u32> {
    let mut out = vec![0.0; P::LEN];
    p.write_flat(&mut out);
    out.iter().map(|v| v.to_bits()).collect()
}

const CHILD: &str = "TENSORBRIDGE_STARTUP_CHILD";

/// (The device is opened by the child process, after its cache directory is set.)
fn prebuild_fills_the_cache_and_warm_up_changes_nothing(_device: &Device) {
    let dir = scratch("startup-cache");
    // PoCL's own cache empty too, so that the first build is slow enough for the notice.
    let out = child_process(module_path!(), "startup_child")
        .env(CHILD, "1")
        .env(tensorbridge::CACHE_DIR_ENV, dir.join("kernels"))
        .env("POCL_CACHE_DIR", dir.join("pocl"))
        .env(tensorbridge::BUILD_NOTICE_ENV, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
    // The notice of a slow build: once, naming the model, when the cold build took over a
    // second (PoCL: seconds), never when it took well under one (a driver that compiles at
    // the first launch instead, as Mesa's rusticl does).
    let notices = String::from_utf8_lossy(&out.stderr).matches("building OpenCL kernels for `Tiled`").count();
    let ms: f64 = tagged(&text, "PROGRAM_MS ").and_then(|v| v.trim().parse().ok()).expect("the child's build time");
    assert!(notices <= 1, "at most one notice:\n{text}");
    if ms > 1200.0 {
        assert_eq!(notices, 1, "a cold build of {ms} ms gives one notice:\n{text}");
    } else if ms < 800.0 {
        assert_eq!(notices, 0, "a build of {ms} ms gives no notice:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// In the child, its cache directory empty: prebuild compiles, a second device loads the
/// disk cache, warm-up changes nothing.
fn startup_child() {
    assert!(
        std::env::var_os(tensorbridge::CACHE_DIR_ENV)
            .is_some_and(|d| std::fs::read_dir(d).map_or(true, |mut e| e.next().is_none())),
        "the child starts with an empty cache directory of its own"
    );
    let device = opencl_device();

    let report = prebuild::<Tiled>(&device).unwrap().expect("an OpenCL report");
    assert_eq!(report.origin, ProgramOrigin::Compiled);
    println!("PROGRAM_MS {}", report.program.as_secs_f64() * 1e3);
    assert!(report.first_launch.is_some() && report.model == "Tiled");
    assert!(report.to_json().contains("\"origin\":\"compiled\""));

    // The same device: reused in memory. A new device (context): the disk cache.
    let same = Engine::<Tiled>::new(&device).unwrap();
    assert_eq!(same.startup_report().unwrap().origin, ProgramOrigin::Memory);
    let other = Device::opencl().unwrap();
    let mut model = Engine::<Tiled>::with_seed(&other, 3).unwrap();
    let report = model.startup_report().unwrap();
    assert_eq!(report.origin, ProgramOrigin::DiskCache);
    assert!(report.first_launch.is_none());

    // Warm-up: parameters bit for bit, no deferred loss, and the next step as on the CPU.
    let x: Vec<f32> = (0..Tiled::BATCH * Tiled::FEATURES).map(|k| noise(9, k)).collect();
    let y: Vec<u32> = (0..Tiled::BATCH).map(|r| (r % Tiled::CLASSES) as u32).collect();
    let (x, y) = (<Tiled as Model>::Input::from_flat(&x), <Tiled as Model>::Labels::from_flat(&y));
    let before = flat(&model.params().unwrap());
    model.train_step_deferred(&x, &y, 0.1).unwrap();
    let after_step = model.params().unwrap();
    model
        .set_params(&<Tiled as Model>::Params::from_flat(
            &before.iter().map(|b| f32::from_bits(*b)).collect::<Vec<_>>(),
        ))
        .unwrap();
    let warmed = model.warm_up().unwrap().unwrap();
    assert!(warmed.first_launch.is_some());
    assert_eq!(flat(&model.params().unwrap()), before, "warm_up changed the parameters");
    assert_eq!(model.take_losses().unwrap().len(), 1, "warm_up added a deferred loss");
    model.train_step_deferred(&x, &y, 0.1).unwrap();
    assert_eq!(flat(&model.params().unwrap()), flat(&after_step), "a step after warm_up differs");
    assert!(Engine::<Tiled>::new(&Device::cpu()).unwrap().startup_report().is_none());
}

crate::tests! {
    child(CHILD) startup_child,
    opencl prebuild_fills_the_cache_and_warm_up_changes_nothing,
}
