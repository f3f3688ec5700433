//! The Cortex-M0 firmware: runs [`demo::run`] on the board, printing through semihosting, and
//! ends QEMU with exit code 0, or 1 if anything failed.
#![no_std]
#![no_main]

mod demo;
mod models;

use core::fmt::Write;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};

#[entry]
fn main() -> ! {
    let ok = match hio::hstdout() {
        Ok(mut out) => match demo::run(&mut out) {
            Ok(()) => true,
            Err(demo::Failure::Model(e)) => {
                let _ = writeln!(out, "failed: {e}");
                false
            }
            Err(demo::Failure::Print) => false,
        },
        Err(()) => false,
    };
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Not reached under QEMU; on a board without a debugger, a permanent fault.
    cortex_m::asm::udf()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    cortex_m::asm::udf()
}
