//! The program the firmware runs, and the host too (`examples/firmware_host.rs` includes this
//! file): the seed's logits with its hand-set weights, a training run from the seeded
//! initialisation, predictions, and a few steps of a bigger model. Every number is printed
//! with its bits, so that `.ci/run` can compare the board's output with the host's line by
//! line. It uses only the `no_std` core (`Cpu<M>`), which both builds have.

use core::fmt::Write;

use tensorbridge::cpu::Cpu;
use tensorbridge::{Params, DEFAULT_SEED};

use super::models::{big_batch, seed_batch, seed_params, Big, BigParams, CatDog};

/// Why [`run`] stopped.
#[derive(Debug)]
pub enum Failure {
    /// tensorbridge refused a call (none is expected).
    Model(tensorbridge::Error),
    /// The output could not be written.
    Print,
}

impl From<tensorbridge::Error> for Failure {
    fn from(e: tensorbridge::Error) -> Self {
        Failure::Model(e)
    }
}

impl From<core::fmt::Error> for Failure {
    fn from(_: core::fmt::Error) -> Self {
        Failure::Print
    }
}

/// FNV-1a over the bits of `values`: one line for many numbers.
pub fn digest(values: &[f32]) -> u32 {
    let bytes = values.iter().flat_map(|v| v.to_bits().to_le_bytes());
    bytes.fold(0x811C_9DC5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Runs the whole program, printing to `out`.
///
/// # Errors
/// A refused call of tensorbridge's (none is expected) or a failed write.
pub fn run(out: &mut dyn Write) -> Result<(), Failure> {
    // 1. The seed's hand-set weights: logits 16.25, 4.0 (row 0) and -2.45, 17.1 (row 1).
    let mut seed = Cpu::<CatDog>::with_params(&seed_params())?;
    let (x, y) = seed_batch(0);
    let z = seed.logits(&x)?;
    for r in 0..2 {
        for c in 0..2 {
            writeln!(out, "seed logit row {r} class {c} {:08x} {:?}", z[(r, c)].to_bits(), z[(r, c)])?;
        }
    }
    let loss = seed.loss(&x, &y)?;
    writeln!(out, "seed loss {:08x} {loss:?}", loss.to_bits())?;
    // 2. Training from the seeded initialisation: 20 steps over the five mini-batches.
    let mut model = Cpu::<CatDog>::with_seed(DEFAULT_SEED);
    writeln!(out, "init w0 {:08x}", digest(model.params().w0.as_slice()))?;
    for step in 0..20 {
        let (x, y) = seed_batch(step);
        let loss = model.train_step(&x, &y, 0.5)?;
        writeln!(out, "step {step} loss {:08x} {loss:?}", loss.to_bits())?;
    }
    let p = model.params();
    for (k, v) in p.w0.iter().chain(p.b0.iter()).enumerate() {
        writeln!(out, "trained param {k} {:08x} {v:?}", v.to_bits())?;
    }
    // 3. Predictions of the trained model on every row.
    for k in 0..5 {
        let (x, y) = seed_batch(k);
        let p = model.predict(&x)?;
        writeln!(out, "predict batch {k} {} {} (labels {} {})", p[0], p[1], y[0], y[1])?;
    }
    // 4. The bigger model: initialisation, ten steps, logits.
    let mut big = Cpu::<Big>::with_seed(DEFAULT_SEED);
    let mut flat = [0.0f32; <BigParams as Params>::LEN];
    big.params().write_flat(&mut flat);
    writeln!(out, "big init {:08x}", digest(&flat))?;
    for step in 0..10 {
        let (x, y) = big_batch(step);
        let loss = big.train_step(&x, &y, 0.1)?;
        writeln!(out, "big step {step} loss {:08x} {loss:?}", loss.to_bits())?;
    }
    big.params().write_flat(&mut flat);
    let (x, _) = big_batch(99);
    let z = big.logits(&x)?;
    writeln!(out, "big trained {:08x} logits {:08x}", digest(&flat), digest(z.as_slice()))?;
    Ok(())
}
