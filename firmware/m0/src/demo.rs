//! The program the Cortex-M0 firmware runs, and the host too (`examples/firmware_m0_host.rs`
//! includes this file): quantise `Big` to int8 with four calibration batches, then the
//! head's integer codes and the predictions of four more batches; the same for `Odd`. Every
//! number is printed as an integer (or a float's bits), so that `.ci/run` can compare the
//! board's output with the host's line by line.

use core::fmt::Write;

use tensorbridge::Model;

use super::models::{batch, odd_batch, odd_params, params, Big, BigInt8, Odd, OddInt8};

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

/// FNV-1a over `bytes`: one line for many numbers.
pub fn digest(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes.fold(0x811C_9DC5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Runs the whole program, printing to `out`.
///
/// # Errors
/// A refused call of tensorbridge's (none is expected) or a failed write.
pub fn run(out: &mut dyn Write) -> Result<(), Failure> {
    let flat = params();
    let calibration = [batch(0), batch(1), batch(2), batch(3)];
    let q = BigInt8::quantize_flat(&flat, &calibration)?;
    writeln!(out, "int8 weights {:08x}", digest(q.weights().iter().map(|&w| w as u8)))?;
    writeln!(out, "int8 biases {:08x}", digest(q.biases().iter().flat_map(|b| b.to_le_bytes())))?;
    writeln!(out, "int8 multipliers {:08x}", digest(q.multipliers().iter().flat_map(|m| m.to_le_bytes())))?;
    writeln!(out, "int8 shifts {:08x}", digest(q.shifts().iter().copied()))?;
    for (t, (s, z)) in q.act_scales().iter().zip(q.act_zero_points()).enumerate() {
        writeln!(out, "int8 activation {t} scale {:08x} zero point {z}", s.to_bits())?;
    }
    let mut codes = [0i16; Big::BATCH * Big::CLASSES];
    for k in 100..104 {
        let x = batch(k);
        q.codes_into(&x, &mut codes)?;
        write!(out, "int8 batch {k} codes")?;
        for c in codes {
            write!(out, " {c}")?;
        }
        let p = q.predict(&x)?;
        write!(out, " predict")?;
        for label in p.iter() {
            write!(out, " {label}")?;
        }
        writeln!(out)?;
    }
    // Odd sizes: the ends of the integer pass's blocks (a lone row, an odd layer, inputs
    // that are not a whole group of four).
    let calibration: [_; 8] = core::array::from_fn(|k| odd_batch(k as u32));
    let q = OddInt8::quantize_flat(&odd_params(), &calibration)?;
    let mut codes = [0i16; Odd::BATCH * Odd::CLASSES];
    for k in 100..104 {
        let x = odd_batch(k);
        q.codes_into(&x, &mut codes)?;
        write!(out, "int8 odd batch {k} codes")?;
        for c in codes {
            write!(out, " {c}")?;
        }
        let p = q.predict(&x)?;
        write!(out, " predict")?;
        for label in p.iter() {
            write!(out, " {label}")?;
        }
        // The last row alone, from its input codes (`forward_codes`, one row).
        let input: [i8; Odd::FEATURES] = core::array::from_fn(|i| q.input_code(x[(Odd::BATCH - 1, i)]));
        let mut row = [0i16; Odd::CLASSES];
        q.forward_codes(&input, &mut row)?;
        write!(out, " last row alone")?;
        for c in row {
            write!(out, " {c}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
