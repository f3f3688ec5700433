//! Measures, on QEMU's Cortex-M4F board, the instructions of the int8 forward pass of
//! `{batch 8, features 16, hidden [32], classes 4}` (8 rows of 16 * 32 + 32 * 4 = 640
//! multiply-adds each), and prints `measure m4f int8 forward instructions N macs M`. The
//! model and data are the Cortex-M0 firmware's (`firmware/m0/src/models.rs`), so that
//! `footprint.py` compares the two boards on the same integer pass.
//!
//! Under `qemu-system-arm -icount shift=0` the virtual clock advances one nanosecond per
//! instruction, and SysTick counts the board's 25 MHz clock: one tick is 40 instructions.
//! The pass is repeated [`REPEAT`] times and the same loop around an empty call is
//! subtracted.
#![no_std]
#![no_main]

#[allow(dead_code)]
#[path = "../../../m0/src/models.rs"]
mod models;

use core::fmt::Write;
use core::hint::black_box;

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use tensorbridge::Model;

use models::{batch, params, Big, BigInt8};

/// Runs the measured pass this many times.
const REPEAT: u32 = 32;

/// The integer forward pass of a batch of input codes, a block of rows at a time
/// (`forward_rows`): no floating point.
#[inline(never)]
fn forward_batch(q: &BigInt8, input: &[[i8; 16]; 8], out: &mut [[i16; 4]; 8]) {
    // Cannot fail: whole rows of 16 codes, room for 4 a row.
    let _ = q.forward_rows(input.as_flattened(), out.as_flattened_mut());
}

/// SysTick ticks of `REPEAT` calls of `f`.
#[inline(never)]
fn ticks(f: &mut dyn FnMut()) -> u32 {
    let start = SYST::get_current();
    for _ in 0..REPEAT {
        f();
    }
    start.wrapping_sub(SYST::get_current()) & 0x00FF_FFFF
}

fn measure(out: &mut dyn Write) -> Option<()> {
    let q = BigInt8::quantize_flat(&params(), &[batch(0), batch(1), batch(2), batch(3)]).ok()?;
    let x = batch(100);
    let mut input = [[0i8; 16]; 8];
    for (r, row) in input.iter_mut().enumerate() {
        for (i, code) in row.iter_mut().enumerate() {
            *code = q.input_code(x[(r, i)]);
        }
    }
    let mut codes = [[0i16; 4]; 8];
    let empty = ticks(&mut || black_box(()));
    let total = ticks(&mut || forward_batch(black_box(&q), black_box(&input), black_box(&mut codes)));
    // 40 instructions a tick.
    let instructions = (total.saturating_sub(empty) as u64 * 40 + REPEAT as u64 / 2) / REPEAT as u64;
    let macs: usize = Big::BATCH * Big::LAYERS.windows(2).map(|w| w[0] * w[1]).sum::<usize>();
    writeln!(out, "measure m4f int8 forward instructions {instructions} macs {macs}").ok()
}

#[entry]
fn main() -> ! {
    let ok = match cortex_m::Peripherals::take() {
        Some(mut p) => {
            p.SYST.set_clock_source(SystClkSource::Core);
            p.SYST.set_reload(0x00FF_FFFF);
            p.SYST.clear_current();
            p.SYST.enable_counter();
            hio::hstdout().ok().and_then(|mut out| measure(&mut out)).is_some()
        }
        None => false,
    };
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    cortex_m::asm::udf()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    cortex_m::asm::udf()
}
