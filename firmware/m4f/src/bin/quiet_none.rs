//! The quiet firmwares' baseline: the same start-up and exit, no model (see `quiet.rs`).
#![no_std]
#![no_main]

#[path = "../quiet.rs"]
#[allow(dead_code)] // `exercise` is what the other quiet firmwares add
mod quiet;

#[cortex_m_rt::entry]
fn main() -> ! {
    quiet::exit(core::hint::black_box(true))
}
