//! The network's math, each formula written once: the Rust function the CPU core and the
//! CPU backend call, and the OpenCL C text of the same formula that
//! `kernels.rs` emits into the kernels' prelude. `no_std`, no allocation;
//! imports nothing of the crate.

pub mod activation;
pub mod loss;
pub mod optim;

/// The square root, correctly rounded (as IEEE 754 requires of every implementation, so
/// that every platform gets the same bits): the FPU's instruction on an Arm with a hardware
/// FPU (`eabihf`), where `libm::sqrtf` would run about a hundred integer instructions.
#[inline(always)]
pub(crate) fn sqrt(x: f32) -> f32 {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        let bits: u32;
        // SAFETY: every `eabihf` target has the VFP these instructions need. They move the
        // value through `s15`, which they save on the stack first and restore after (so that
        // no register the compiler uses changes), and touch no other memory.
        unsafe {
            core::arch::asm!(
                "vpush {{s15}}",
                "vmov s15, {x}",
                "vsqrt.f32 s15, s15",
                "vmov {r}, s15",
                "vpop {{s15}}",
                x = in(reg) x.to_bits(),
                r = lateout(reg) bits,
                options(pure, nomem),
            );
        }
        f32::from_bits(bits)
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    libm::sqrtf(x)
}
