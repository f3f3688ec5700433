//! The `weights` firmware's program (`firmware/m4f/src/compiled.rs`) on the host, with the
//! same compiled-in weights (`weights: "path"`, relative to this crate's Cargo.toml).
//! `.ci/run` runs it and the firmware under QEMU and compares the two outputs line by line.
//!
//! Run: `cargo run --release --example firmware_weights_host`.

#[path = "../firmware/m4f/src/compiled.rs"]
mod compiled;

use std::process::ExitCode;

tensorbridge::model! {
    /// 4 -> 8 -> 3, the weights of tests/fixtures/weights.py.
    pub struct Compiled { batch: 4, features: 4, hidden: [8], classes: 3, weights: "tests/fixtures/weights/mlp.safetensors" }
}

fn main() -> ExitCode {
    let mut out = String::new();
    let result = compiled::run(Compiled::weights(), &mut out);
    print!("{out}");
    if matches!(result, Ok(true)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
