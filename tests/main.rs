//! The integration tests: one binary, run by the harness of `support` (see there), so
//! that a test which cannot run here (no OpenCL device, no NumPy) shows as ignored in the
//! summary, with the reason in its name, instead of passing silently.

mod support;

mod activations;
mod checkpoint;
mod core_equals_backend;
mod data_split;
mod errors;
mod expansion;
mod f16_accuracy;
mod f16_storage;
mod files_and_inputs;
mod gradcheck;
mod harness;
mod int8;
mod int8_onnx;
mod interop;
mod layers;
mod mlp_digits;
mod npy_malformed;
mod npy_numpy;
mod numpy_reference;
mod opencl_cache;
mod opencl_differential;
mod opencl_errors;
mod opencl_f16;
mod opencl_fallback;
mod opencl_issue11b;
mod opencl_regressions;
mod opencl_snapshot;
mod opencl_startup;
mod opencl_tiny;
mod optimizers;
mod seed;
mod soak;
mod threads;
mod train_accuracy;
mod train_masked;
mod train_plot;
mod training;
mod update_overflow;
mod weights;

fn main() -> std::process::ExitCode {
    support::harness(&[
        activations::TESTS,
        checkpoint::TESTS,
        core_equals_backend::TESTS,
        data_split::TESTS,
        errors::TESTS,
        expansion::TESTS,
        f16_accuracy::TESTS,
        f16_storage::TESTS,
        files_and_inputs::TESTS,
        gradcheck::TESTS,
        harness::TESTS,
        int8::TESTS,
        int8_onnx::TESTS,
        interop::TESTS,
        layers::TESTS,
        mlp_digits::TESTS,
        npy_malformed::TESTS,
        npy_numpy::TESTS,
        numpy_reference::TESTS,
        opencl_cache::TESTS,
        opencl_differential::TESTS,
        opencl_errors::TESTS,
        opencl_f16::TESTS,
        opencl_fallback::TESTS,
        opencl_issue11b::TESTS,
        opencl_regressions::TESTS,
        opencl_snapshot::TESTS,
        opencl_startup::TESTS,
        opencl_tiny::TESTS,
        optimizers::TESTS,
        seed::TESTS,
        soak::TESTS,
        threads::TESTS,
        train_accuracy::TESTS,
        train_masked::TESTS,
        train_plot::TESTS,
        training::TESTS,
        update_overflow::TESTS,
        weights::TESTS,
    ])
}
