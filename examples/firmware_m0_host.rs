//! The Cortex-M0 firmware's program (`firmware/m0/src/demo.rs`) on the host. `.ci/run` runs it
//! and the firmware under QEMU's micro:bit and compares the two outputs line by line: the
//! same integers on both.
//!
//! Run: `cargo run --release --example firmware_m0_host`.

#[path = "../firmware/m0/src/demo.rs"]
mod demo;
#[path = "../firmware/m0/src/models.rs"]
mod models;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut out = String::new();
    let result = demo::run(&mut out);
    print!("{out}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(demo::Failure::Model(e)) => {
            println!("failed: {e}");
            ExitCode::FAILURE
        }
        Err(demo::Failure::Print) => ExitCode::FAILURE,
    }
}
