//! Measures, on the board, the instructions of the int8 forward pass of
//! `{batch 8, features 16, hidden [32], classes 4}` (8 rows of 16 * 32 + 32 * 4 = 640
//! multiply-adds each), and prints `measure m0 int8 forward instructions N macs M`, then the
//! parameter bytes of the int8 model and of the `f32` one.
//!
//! Under `qemu-system-arm -icount shift=0` the virtual clock advances one nanosecond per
//! instruction, and the micro:bit's SysTick counts its 16 MHz processor clock: one tick is
//! 62.5 instructions. The pass is repeated [`REPEAT`] times and the same loop around an
//! empty call is subtracted. The integer pass is [`forward_batch`], which `.ci/run` checks
//! in the disassembly for calls of the software floating point (`__aeabi_f*`, `__aeabi_d*`).
#![no_std]
#![no_main]

#[allow(dead_code)]
#[path = "../models.rs"]
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
    // 62.5 instructions a tick.
    let instructions = (total.saturating_sub(empty) as u64 * 125 / 2 + REPEAT as u64 / 2) / REPEAT as u64;
    let macs: usize = Big::BATCH * Big::LAYERS.windows(2).map(|w| w[0] * w[1]).sum::<usize>();
    writeln!(out, "measure m0 int8 forward instructions {instructions} macs {macs}").ok()?;
    writeln!(out, "footprint int8 big params {} f32 {}", BigInt8::PARAM_BYTES, Big::PARAM_BYTES).ok()
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
