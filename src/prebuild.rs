//! Building a model's OpenCL kernels ahead of deployment.
//!
//! The first run of a model on a device compiles its kernels (seconds on some drivers);
//! later runs load them from the binary cache (`TENSORBRIDGE_CACHE_DIR`, see
//! [`crate::CACHE_DIR_ENV`]). [`prebuild`] does that first run on purpose: call it for
//! every model you ship, on the target machine or an identical one (same device and
//! driver), e.g. from an install step (`cargo run --example prebuild` shows how), and
//! the first real start loads from the cache.

use crate::device::Device;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::Model;
use crate::startup::StartupReport;

/// Builds (or loads) model `M`'s kernels for `device`, writes them to the binary cache,
/// and launches each once (see [`Engine::warm_up`]). Returns the start-up report, or
/// `None` for the CPU backend (nothing to build).
///
/// # Errors
/// Those of [`Engine::new`] (a kernel build failure names the device and carries the
/// build log), and an OpenCL error from the warm-up launch.
pub fn prebuild<M: Model>(device: &Device) -> Result<Option<StartupReport>> {
    let mut engine = Engine::<M>::new(device)?;
    engine.warm_up()
}
