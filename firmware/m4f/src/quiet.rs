//! The quiet firmwares' common part: a program that prints nothing (no `core::fmt`), so that
//! its flash is tensorbridge's and the board's start-up code alone. `footprint.py` subtracts
//! `quiet_none` (the same program without a model) from `quiet_seed` and `quiet_big`.

use core::hint::black_box;
use core::mem::MaybeUninit;

use cortex_m_semihosting::debug;
use tensorbridge::cpu::Cpu;
use tensorbridge::{Model, DEFAULT_SEED};

/// Builds model `M` in `slot` from the seed, then runs every call of the core once on
/// `batch`; ends QEMU with exit code 0 if all succeeded.
pub fn exercise<M: Model>(slot: &mut MaybeUninit<Cpu<M>>, batch: &(M::Input, M::Labels)) -> ! {
    let model = Cpu::<M>::init_with_seed(slot, black_box(DEFAULT_SEED));
    let (x, y) = black_box(batch);
    let ok = black_box(model.logits(x)).is_ok()
        & black_box(model.predict(x)).is_ok()
        & black_box(model.loss(x, y)).is_ok()
        & black_box(model.gradients(x, y)).is_ok()
        & black_box(model.train_step(x, y, black_box(0.01))).is_ok();
    exit(ok)
}

/// Ends QEMU: exit code 0 when `ok`.
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    cortex_m::asm::udf()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(false)
}
