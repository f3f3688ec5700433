//! A firmware with a model whose weights are compiled in (`weights: "path"`, relative to this
//! crate's Cargo.toml): prints its logits, read from flash, and a few training steps of a copy
//! in RAM (see `compiled.rs`); `.ci/run` compares the output with the host's
//! (`examples/firmware_weights_host.rs`).
#![no_std]
#![no_main]

#[path = "../compiled.rs"]
mod compiled;

use cortex_m_semihosting::{debug, hio};

tensorbridge::model! {
    /// 4 -> 8 -> 3, the weights of tests/fixtures/weights.py.
    pub struct Compiled { batch: 4, features: 4, hidden: [8], classes: 3, weights: "../../tests/fixtures/weights/mlp.safetensors" }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let ok = match hio::hstdout() {
        Ok(mut out) => matches!(compiled::run(Compiled::weights(), &mut out), Ok(true)),
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
