//! Forward, loss, gradients and one SGD step against NumPy (float64), computed by
//! `fixtures/numpy_reference.py` independently of tensorbridge: on the CPU backend, and on
//! OpenCL through both the fused and the tiled kernels when a device is present (skipped
//! with a notice otherwise; a failure under `TENSORBRIDGE_REQUIRE_OPENCL=1`). Linear and MLP
//! models, full and masked (padded) batches, at odd sizes and at sizes that take the CPU's
//! GEMM paths.

mod reference {
    include!("fixtures/numpy_reference.rs");
}

use crate::support::{assert_close, col, f64s, mat};
use tensorbridge::{Device, KernelPath};

/// The CPU as is; OpenCL through each kernel path. A path a model does not fit (the fused
/// kernel for a large one) fails with `Unsupported`, and `check_case!` skips it with a notice.
fn devices(device: &Device) -> Vec<Device> {
    if device.is_cpu() {
        vec![device.clone()]
    } else {
        vec![device.with_kernel_path(KernelPath::Fused), device.with_kernel_path(KernelPath::Tiled)]
    }
}

tensorbridge::model! { struct Linear { batch: 3, features: 5, classes: 7 } }
tensorbridge::model! { struct LinearMasked { batch: 4, features: 5, classes: 3 } }
tensorbridge::model! { struct Mlp { batch: 3, features: 5, hidden: [6, 4], classes: 3 } }
tensorbridge::model! { struct MlpMasked { batch: 5, features: 4, hidden: [8], classes: 3 } }
tensorbridge::model! { struct MlpGemm { batch: 24, features: 24, hidden: [16], classes: 10 } }
tensorbridge::model! { struct MlpGemmThreads { batch: 32, features: 40, hidden: [56], classes: 8 } }

// f32 arithmetic against a float64 reference: relative 1e-5 plus a small absolute floor
// (OpenCL sums in other orders than the CPU; both stay inside this).
const ATOL: f64 = 2e-6;
const RTOL: f64 = 1e-5;

/// Runs one fixture case through every API call that computes something.
macro_rules! check_case {
    ($device:expr, $model:ident, $params:ident, $case:ident, [$(($w:ident, $b:ident, $gw:ident, $gb:ident, $sw:ident, $sb:ident, $W:ident, $B:ident, $GW:ident, $GB:ident, $SW:ident, $SB:ident)),+]) => {{
        use reference::$case as r;
        for device in devices($device) {
        let params = $params { $($w: mat(&r::$W), $b: col(&r::$B)),+ };
        let mut model = match $model::with_params(&device, params) {
            Ok(model) => model,
            Err(tensorbridge::Error::Unsupported { reason, .. }) => {
                crate::test_log!("{}: {device} skipped: {reason}", stringify!($case));
                continue;
            }
            Err(err) => panic!("{device}: {err}"),
        };
        let x = mat(&r::X);
        let y = tensorbridge::nalgebra::SVector::<u32, { r::Y.len() }>::from_column_slice(&r::Y);

        let logits = model.logits(&x).unwrap();
        let expected_logits = mat(&r::LOGITS);
        // Masked cases: only the valid rows' logits are defined by the reference's loss, but
        // the forward pass runs on every row, so all of them are compared.
        assert_close(&format!("{device}: logits"), logits.as_slice(), &f64s(&expected_logits), 1e-5, RTOL);

        let loss = model.loss_rows(&x, &y, r::ROWS).unwrap();
        assert_close(&format!("{device}: loss"), &[loss], &[r::LOSS], ATOL, RTOL);

        let (loss_g, grads) = model.gradients_rows(&x, &y, r::ROWS).unwrap();
        assert_eq!(loss_g, loss, "{device}");
        $(
            assert_close(&format!("{device}: {}", stringify!($gw)), grads.$gw.as_slice(), &f64s(&mat(&r::$GW)), ATOL, RTOL);
            assert_close(&format!("{device}: {}", stringify!($gb)), grads.$gb.as_slice(), &f64s(&col(&r::$GB)), ATOL, RTOL);
        )+

        let before = model.train_step_rows(&x, &y, r::ROWS, r::LR).unwrap();
        assert_eq!(before, loss, "{device}: train_step returns the loss before the step");
        let stepped = model.params().unwrap();
        $(
            assert_close(&format!("{device}: {}", stringify!($sw)), stepped.$w.as_slice(), &f64s(&mat(&r::$SW)), ATOL, RTOL);
            assert_close(&format!("{device}: {}", stringify!($sb)), stepped.$b.as_slice(), &f64s(&col(&r::$SB)), ATOL, RTOL);
        )+
        }
    }};
}

fn linear_matches_numpy(device: &Device) {
    check_case!(device, Linear, LinearParams, linear, [(w0, b0, w0, b0, w0, b0, W0, B0, GW0, GB0, STEP_W0, STEP_B0)]);
}

fn masked_linear_counts_only_valid_rows_like_numpy(device: &Device) {
    check_case!(
        device,
        LinearMasked,
        LinearMaskedParams,
        linear_masked,
        [(w0, b0, w0, b0, w0, b0, W0, B0, GW0, GB0, STEP_W0, STEP_B0)]
    );
}

fn two_hidden_layer_mlp_matches_numpy(device: &Device) {
    check_case!(
        device,
        Mlp,
        MlpParams,
        mlp,
        [
            (w0, b0, w0, b0, w0, b0, W0, B0, GW0, GB0, STEP_W0, STEP_B0),
            (w1, b1, w1, b1, w1, b1, W1, B1, GW1, GB1, STEP_W1, STEP_B1),
            (w2, b2, w2, b2, w2, b2, W2, B2, GW2, GB2, STEP_W2, STEP_B2)
        ]
    );
}

fn masked_mlp_matches_numpy(device: &Device) {
    check_case!(
        device,
        MlpMasked,
        MlpMaskedParams,
        mlp_masked,
        [
            (w0, b0, w0, b0, w0, b0, W0, B0, GW0, GB0, STEP_W0, STEP_B0),
            (w1, b1, w1, b1, w1, b1, W1, B1, GW1, GB1, STEP_W1, STEP_B1)
        ]
    );
}

fn mlp_through_the_packed_gemm_matches_numpy(device: &Device) {
    check_case!(
        device,
        MlpGemm,
        MlpGemmParams,
        mlp_gemm,
        [
            (w0, b0, w0, b0, w0, b0, W0, B0, GW0, GB0, STEP_W0, STEP_B0),
            (w1, b1, w1, b1, w1, b1, W1, B1, GW1, GB1, STEP_W1, STEP_B1)
        ]
    );
}

fn mlp_through_the_threaded_gemm_matches_numpy(device: &Device) {
    check_case!(
        device,
        MlpGemmThreads,
        MlpGemmThreadsParams,
        mlp_gemm_threads,
        [
            (w0, b0, w0, b0, w0, b0, W0, B0, GW0, GB0, STEP_W0, STEP_B0),
            (w1, b1, w1, b1, w1, b1, W1, B1, GW1, GB1, STEP_W1, STEP_B1)
        ]
    );
}

/// The GEMM cases again in a child process with `TENSORBRIDGE_PAR_MIN_MACS=0`, so that every
/// GEMM splits its columns over rayon's threads (the threshold is read once per process,
/// and real models of these sizes stay on one thread).
fn gemm_cases_match_numpy_with_every_gemm_threaded() {
    if std::env::var_os("TENSORBRIDGE_PAR_MIN_MACS").is_some() {
        return; // the child runs only the two cases below
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("TENSORBRIDGE_PAR_MIN_MACS", "0")
        .env("RAYON_NUM_THREADS", "2")
        // The filter selects the two GEMM cases on the CPU (the harness takes one filter).
        .arg(format!(
            "cpu::{}::mlp_through_the_",
            crate::support::trial_name(module_path!(), "x").trim_end_matches("::x")
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 passed"), "the child ran other tests than the two GEMM cases: {stdout}");
}

crate::tests! {
    device linear_matches_numpy,
    device masked_linear_counts_only_valid_rows_like_numpy,
    device two_hidden_layer_mlp_matches_numpy,
    device masked_mlp_matches_numpy,
    device mlp_through_the_packed_gemm_matches_numpy,
    device mlp_through_the_threaded_gemm_matches_numpy,
    plain gemm_cases_match_numpy_with_every_gemm_threaded,
}
