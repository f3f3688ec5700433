//! [`StepProfile`]: where the time of one train step went on an OpenCL device, stage by
//! stage, from the device's own event timestamps. Plain data, importing nothing of the
//! crate, so that both the engine and the OpenCL backend can name it.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// One stage of a profiled step: its name and the device time of its commands (the sum
/// of `CL_PROFILING_COMMAND_END - CL_PROFILING_COMMAND_START` over them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// `upload` (the batch going up: a write, or an unmap for zero-copy; absent when the
    /// batch is a kernel argument), `widen` (`f16` batches on the tiled kernels),
    /// `forward[l]` and `backward[l]` per layer `l` (0 is the first; `backward[l]` covers
    /// both the weight and the input gradients of layer `l`), `loss`, `update` (the
    /// overflow check and the SGD update), or `fused` for the one-launch kernel, which
    /// does the whole step, or `tiny` for its one-work-item form for tiny models. (The
    /// blocking read of the loss that ends the step is not
    /// included.)
    pub name: String,
    /// Device time of the stage's commands.
    pub duration: Duration,
    /// How many commands (kernel launches, transfers) the stage issued.
    pub commands: usize,
}

/// The stages of one train step, in the order the device ran them (see
/// [`Engine::profile_step`](crate::Engine::profile_step)).
#[derive(Clone, Debug, PartialEq)]
pub struct StepProfile {
    /// The model's name.
    pub model: String,
    /// The device, in words.
    pub device: String,
    /// The step's loss (before its update).
    pub loss: f32,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl StepProfile {
    /// The device time of every stage together.
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The stage called `name`, if the step had one.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The profile as one JSON object: `model`, `device`, `loss` (`null` when not
    /// finite), `total_ns`, and `stages`, an array of `{"name", "ns", "commands"}` in order.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(s, "\"model\":{},\"device\":{},", json_string(&self.model), json_string(&self.device));
        if self.loss.is_finite() {
            let _ = write!(s, "\"loss\":{:?},", self.loss);
        } else {
            s.push_str("\"loss\":null,");
        }
        let _ = write!(s, "\"total_ns\":{},\"stages\":[", self.total().as_nanos());
        for (k, stage) in self.stages.iter().enumerate() {
            if k > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"name\":{},\"ns\":{},\"commands\":{}}}",
                json_string(&stage.name),
                stage.duration.as_nanos(),
                stage.commands
            );
        }
        s.push_str("]}");
        s
    }
}

impl fmt::Display for StepProfile {
    /// One line per stage: name, microseconds, share of the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().as_secs_f64().max(f64::MIN_POSITIVE);
        writeln!(f, "step of `{}` on {}: loss {}, {:.1} us", self.model, self.device, self.loss, total * 1e6)?;
        for stage in &self.stages {
            let t = stage.duration.as_secs_f64();
            writeln!(f, "  {:<14} {:>10.1} us {:>5.1}%", stage.name, t * 1e6, 100.0 * t / total)?;
        }
        Ok(())
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut s = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
