//! A quiet firmware with the big model: construction, logits, predict, loss, gradients and a
//! train step, no printing (see `quiet.rs`).
#![no_std]
#![no_main]

#[allow(dead_code)] // each binary uses part of the models' helpers
#[path = "../models.rs"]
mod models;
#[path = "../quiet.rs"]
mod quiet;

use core::mem::MaybeUninit;

use tensorbridge::cpu::Cpu;

static mut SLOT: MaybeUninit<Cpu<models::Big>> = MaybeUninit::uninit();

#[cortex_m_rt::entry]
fn main() -> ! {
    // SAFETY: the only reference to the slot, in this single-threaded program.
    let slot = unsafe { &mut *core::ptr::addr_of_mut!(SLOT) };
    quiet::exercise::<models::Big>(slot, &models::big_batch(0))
}
