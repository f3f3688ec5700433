//! Shared by the `opencl_*` tests: finding the OpenCL device, and comparing numbers.
#![allow(dead_code)]

use std::sync::Once;

use tensorbridge::Device;

static SETUP: Once = Once::new();

/// PoCL shows no device when it cannot create its cache directory: give it one before
/// the OpenCL library is first used (if the caller did not).
pub fn setup_env() {
    SETUP.call_once(|| {
        if std::env::var_os("POCL_CACHE_DIR").is_none() {
            let dir = std::env::temp_dir().join(format!("tensorbridge-pocl-cache-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            // Set once, before any test of this binary touches OpenCL.
            std::env::set_var("POCL_CACHE_DIR", dir);
        }
    });
}

/// The OpenCL device, or `None` with a printed notice (a failure instead when
/// `TENSORBRIDGE_REQUIRE_OPENCL=1`).
pub fn opencl() -> Option<Device> {
    setup_env();
    match Device::opencl() {
        Ok(device) => Some(device),
        Err(err) => {
            if std::env::var("TENSORBRIDGE_REQUIRE_OPENCL").is_ok_and(|v| v.trim() == "1") {
                panic!("TENSORBRIDGE_REQUIRE_OPENCL=1 but no OpenCL device: {err}");
            }
            eprintln!("notice: skipping an OpenCL test: {err}");
            None
        }
    }
}

/// The device as found (the automatic kernel choice) and forced onto the tiled kernels.
pub fn paths(device: &Device) -> Vec<Device> {
    vec![device.clone(), device.with_kernel_path(tensorbridge::KernelPath::Tiled)]
}

/// `|a - b| <= abs + rel * max(|a|, |b|)` for every pair, else a panic naming the first
/// that differs.
#[track_caller]
pub fn assert_close(what: &str, a: &[f32], b: &[f32], abs: f32, rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        let tol = abs + rel * x.abs().max(y.abs());
        assert!((x - y).abs() <= tol, "{what}[{k}]: {x} vs {y} (tolerance {tol})");
    }
}

/// A deterministic pseudo-random value in [-1, 1) (not the crate's RNG: independent).
pub fn noise(seed: u64, k: usize) -> f32 {
    let mut z = seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}
