//! The Cortex-M0 firmware's int8 program (`firmware/m0/src/demo.rs`) on QEMU's Cortex-M4F
//! board: quantisation and the head's integer codes, computed here with the DSP
//! extension's `SMLAD`. `.ci/run` compares its output with the host's
//! (`examples/firmware_m0_host.rs`) line by line: the same integers.
#![no_std]
#![no_main]

#[allow(dead_code)]
#[path = "../../../m0/src/demo.rs"]
mod demo;
#[allow(dead_code)]
#[path = "../../../m0/src/models.rs"]
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
    cortex_m::asm::udf()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    cortex_m::asm::udf()
}
