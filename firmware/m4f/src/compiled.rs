//! The program of the `weights` firmware, and of the host too
//! (`examples/firmware_weights_host.rs` includes this file): a model whose weights a
//! `weights: "path"` declaration compiled in (`tests/fixtures/weights/mlp.safetensors`),
//! its logits read from the weights in place (in flash on the board: only the [`Work`] area
//! is in RAM), then a copy in RAM trained for a few steps. Every number is printed with its
//! bits, so that `.ci/run` can compare the board's output with the host's line by line.

use core::fmt::Write;

use tensorbridge::cpu::{Cpu, Weights, Work};
use tensorbridge::{HostTensor, Model};

/// Runs the program for the model `M` whose compiled-in weights are `weights`, printing to
/// `out`; `Ok(false)` if tensorbridge refused a call (none is expected; printed too).
///
/// # Errors
/// A failed write.
pub fn run<M: Model<Storage = f32>>(weights: &Weights<M>, out: &mut dyn Write) -> Result<bool, core::fmt::Error> {
    let x = <M::Input as HostTensor>::from_fn(|k| (k % 7) as f32 * 0.25 - 0.75);
    let y = <M::Labels as HostTensor>::from_fn(|r| (r % M::CLASSES) as u32);
    let mut work = Work::<M>::new();
    let z = match weights.logits(&mut work, &x) {
        Ok(z) => z,
        Err(e) => return writeln!(out, "failed: {e}").map(|()| false),
    };
    for (k, v) in z.as_flat().iter().enumerate() {
        writeln!(out, "compiled logit {k} {:08x} {v:?}", v.to_bits())?;
    }
    let mut model = Cpu::<M>::from_weights(weights);
    for step in 0..5 {
        match model.train_step(&x, &y, 0.5) {
            Ok(loss) => writeln!(out, "compiled step {step} loss {:08x} {loss:?}", loss.to_bits())?,
            Err(e) => return writeln!(out, "failed: {e}").map(|()| false),
        }
    }
    Ok(true)
}
