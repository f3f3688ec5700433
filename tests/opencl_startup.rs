//! Start-up reports, warm-up and `prebuild` on OpenCL: where the program came from is
//! reported truthfully, and warming up changes neither the parameters nor the losses.

mod opencl_common;

use opencl_common::{noise, opencl};
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

#[test]
fn prebuild_fills_the_cache_and_warm_up_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("tensorbridge-startup-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Before any OpenCL use in this binary (one test only).
    std::env::set_var(tensorbridge::CACHE_DIR_ENV, &dir);
    let Some(device) = opencl() else { return };

    let report = prebuild::<Tiled>(&device).unwrap().expect("an OpenCL report");
    assert_eq!(report.origin, ProgramOrigin::Compiled);
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
    let _ = std::fs::remove_dir_all(&dir);
}
