//! Measures, on the board, the instructions and the stack of every call of the CPU core for
//! the seed model and `{batch 8, features 16, hidden [32], classes 4}`, and prints one line a
//! call: `measure MODEL CALL instructions N stack BYTES`. `firmware/m4f/footprint.py` runs it
//! and writes the README's footprint table.
//!
//! - **Instructions.** Under `qemu-system-arm -icount shift=0` the virtual clock advances one
//!   nanosecond per instruction and SysTick counts the board's 25 MHz clock: one tick is 40
//!   instructions. A call is repeated [`REPEAT`] times and the same loop around an empty
//!   call is subtracted.
//! - **Stack.** The free stack below the caller is painted with a pattern, the call runs,
//!   and the lowest word that changed gives the high-water mark.
#![no_std]
#![no_main]

#[allow(dead_code)] // each binary uses part of the models' helpers
#[path = "../models.rs"]
mod models;

use core::fmt::Write;
use core::hint::black_box;
use core::mem::MaybeUninit;

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use tensorbridge::cpu::Cpu;
use tensorbridge::{Model, DEFAULT_SEED};

use models::{big_batch, seed_batch, seed_params, Big, CatDog};

/// Calls a measured closure this many times.
const REPEAT: u32 = 64;
/// Instructions per SysTick tick under `-icount shift=0` (25 MHz clock, 1 ns an instruction).
const INSTRUCTIONS_PER_TICK: u32 = 40;
/// How far below the caller the stack is painted.
const PAINT_DEPTH: usize = 96 * 1024;
const PAINT: u32 = 0xA5C3_5A3C;

/// SysTick's current value (it counts down, modulo 2^24).
fn now() -> u32 {
    SYST::get_current()
}

/// The loop [`instructions`] times, in SysTick ticks.
#[inline(never)]
fn ticks(f: &mut dyn FnMut()) -> u32 {
    let start = now();
    for _ in 0..REPEAT {
        f();
    }
    start.wrapping_sub(now()) & 0x00FF_FFFF
}

/// Instructions of one call of `f`, the loop's own cost subtracted.
fn instructions(f: &mut dyn FnMut()) -> u32 {
    let empty = ticks(&mut || black_box(()));
    let total = ticks(f);
    (total.saturating_sub(empty) * INSTRUCTIONS_PER_TICK + REPEAT / 2) / REPEAT
}

/// Bytes of stack `f` uses below this function's frame.
#[inline(never)]
fn stack(f: &mut dyn FnMut()) -> usize {
    let top = cortex_m::register::msp::read() as usize;
    let bottom = top - PAINT_DEPTH;
    // SAFETY: [bottom, top) is free stack below this frame's stack pointer (the stack is the
    // top of the board's 4 MiB of RAM, far more than PAINT_DEPTH), written with volatile
    // stores by this frame only; no interrupt is enabled that could use it meanwhile.
    unsafe {
        for a in (bottom..top).step_by(4) {
            core::ptr::write_volatile(a as *mut u32, PAINT);
        }
    }
    f();
    let mut a = bottom;
    // SAFETY: the same words as above, read back after `f` returned.
    while a < top && unsafe { core::ptr::read_volatile(a as *const u32) } == PAINT {
        a += 4;
    }
    top - a
}

/// Measures `f` and prints its line.
fn report(out: &mut dyn Write, model: &str, call: &str, f: &mut dyn FnMut()) -> core::fmt::Result {
    let s = stack(f);
    let n = instructions(f);
    writeln!(out, "measure {model} {call} instructions {n} stack {s}")
}

static mut SEED_SLOT: MaybeUninit<Cpu<CatDog>> = MaybeUninit::uninit();
static mut BIG_SLOT: MaybeUninit<Cpu<Big>> = MaybeUninit::uninit();

/// Every call of the core for model `M` (`name`): construction in place in a `static` slot
/// from the seed, then logits, predict, loss, gradients and train steps on `batch`.
fn model_calls<M: Model>(
    out: &mut dyn Write,
    name: &str,
    slot: &mut MaybeUninit<Cpu<M>>,
    params: Option<&M::Params>,
    batch: &(M::Input, M::Labels),
) -> core::fmt::Result {
    report(out, name, "new", &mut || {
        Cpu::<M>::init_with_seed(slot, black_box(DEFAULT_SEED));
    })?;
    let model = Cpu::<M>::init_with_seed(slot, DEFAULT_SEED);
    if let Some(p) = params {
        let _ = model.set_params(p);
    }
    let (x, y) = batch;
    report(out, name, "logits", &mut || {
        let _ = black_box(model.logits(black_box(x)));
    })?;
    report(out, name, "predict", &mut || {
        let _ = black_box(model.predict(black_box(x)));
    })?;
    report(out, name, "loss", &mut || {
        let _ = black_box(model.loss(black_box(x), black_box(y)));
    })?;
    report(out, name, "gradients", &mut || {
        let _ = black_box(model.gradients(black_box(x), black_box(y)));
    })?;
    report(out, name, "train_step", &mut || {
        let _ = black_box(model.train_step(black_box(x), black_box(y), black_box(0.01)));
    })?;
    let macs = M::BATCH * M::LAYERS.windows(2).map(|w| w[0] * w[1]).sum::<usize>();
    writeln!(out, "model {name} macs {macs} size {}", core::mem::size_of::<Cpu<M>>())?;
    writeln!(out, "footprint {name} params {} optimizer {} work {}", M::PARAM_BYTES, M::OPTIMIZER_BYTES, M::WORK_BYTES)
}

fn run(out: &mut dyn Write) -> core::fmt::Result {
    let empty = instructions(&mut || black_box(()));
    writeln!(out, "calibration empty {empty}")?;
    // SAFETY: the only references to the slots, taken once, in this single-threaded program.
    let (seed_slot, big_slot) =
        unsafe { (&mut *core::ptr::addr_of_mut!(SEED_SLOT), &mut *core::ptr::addr_of_mut!(BIG_SLOT)) };
    model_calls::<CatDog>(out, "seed", seed_slot, Some(&seed_params()), &seed_batch(0))?;
    model_calls::<Big>(out, "big", big_slot, None, &big_batch(0))
}

#[entry]
fn main() -> ! {
    let Some(mut p) = cortex_m::Peripherals::take() else {
        debug::exit(debug::EXIT_FAILURE);
        cortex_m::asm::udf()
    };
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(0x00FF_FFFF);
    p.SYST.clear_current();
    p.SYST.enable_counter();
    let ok = match hio::hstdout() {
        Ok(mut out) => run(&mut out).is_ok(),
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
