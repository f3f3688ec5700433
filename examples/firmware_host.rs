//! The firmware's program (`firmware/m4f/src/demo.rs`) on the host. `.ci/run` runs it and the
//! firmware under QEMU and compares the two outputs line by line: the same bits on both.
//!
//! Run: `cargo run --release --example firmware_host`.

#[path = "../firmware/m4f/src/demo.rs"]
mod demo;
#[path = "../firmware/m4f/src/models.rs"]
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
