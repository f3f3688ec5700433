//! Cold start, measured: where the time to a model's first step goes on OpenCL, and the
//! notice printed while a slow kernel build runs.
//!
//! - [`StartupReport`]: platform discovery and context creation (once per
//!   [`crate::Device`]), the program (compiled, loaded from the binary cache, or reused in
//!   memory), kernel and buffer creation, and the first launch of every kernel a step
//!   uses (PoCL compiles a work-group function there). Read it with
//!   [`crate::Engine::startup_report`]; [`crate::Engine::warm_up`] and [`crate::prebuild()`]
//!   fill in the first launch.
//! - `TENSORBRIDGE_TRACE_STARTUP=1`: every OpenCL model warms up when created and prints
//!   its report to stderr.
//! - A build that takes longer than a second prints, once, on stderr:
//!   `tensorbridge: building OpenCL kernels for `Mnist` on <device> (first run; cached afterwards)...`;
//!   `TENSORBRIDGE_BUILD_NOTICE=0` (or `off`) silences it.

use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// The environment variable that makes every OpenCL model warm up when created and print
/// its [`StartupReport`] to stderr (`1` to enable).
pub const TRACE_STARTUP_ENV: &str = "TENSORBRIDGE_TRACE_STARTUP";

/// The environment variable that silences the notice of a slow kernel build (`0` or
/// `off`); the notice is on when it is unset or anything else.
pub const BUILD_NOTICE_ENV: &str = "TENSORBRIDGE_BUILD_NOTICE";

/// How long a build may run before the notice is printed.
const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// Whether `TENSORBRIDGE_TRACE_STARTUP` asks for the report.
pub(crate) fn tracing() -> bool {
    std::env::var(TRACE_STARTUP_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Where a model's program came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramOrigin {
    /// Compiled from source by the driver (a cold build; the binary cache was empty, stale
    /// or off).
    Compiled,
    /// Loaded from tensorbridge's on-disk binary cache.
    DiskCache,
    /// Reused from an earlier model of the same shape on the same [`crate::Device`].
    Memory,
}

impl fmt::Display for ProgramOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgramOrigin::Compiled => "compiled from source",
            ProgramOrigin::DiskCache => "loaded from the binary cache",
            ProgramOrigin::Memory => "reused in memory",
        })
    }
}

/// The start-up of one model on one OpenCL device, phase by phase.
#[derive(Clone, Debug, PartialEq)]
pub struct StartupReport {
    /// The model's name (`M::NAME`).
    pub model: &'static str,
    /// The device, as in messages.
    pub device: String,
    /// Finding the platforms and devices (when the [`crate::Device`] was opened; shared by
    /// every model on it).
    pub platform: Duration,
    /// Creating the context (likewise shared).
    pub context: Duration,
    /// Getting the program: compiling it, loading it from the binary cache, or reusing it.
    pub program: Duration,
    /// Where the program came from.
    pub origin: ProgramOrigin,
    /// Creating the kernel objects and querying their limits.
    pub kernels: Duration,
    /// Creating the queue and the model's buffers (parameters uploaded).
    pub buffers: Duration,
    /// The first launch of every kernel a train step uses, and waiting for it; `None`
    /// until [`crate::Engine::warm_up`] (or [`crate::prebuild()`]) ran.
    pub first_launch: Option<Duration>,
}

impl StartupReport {
    /// The sum of the phases (the device's share included).
    pub fn total(&self) -> Duration {
        self.platform
            + self.context
            + self.program
            + self.kernels
            + self.buffers
            + self.first_launch.unwrap_or_default()
    }

    /// The report as one JSON object, durations in microseconds.
    pub fn to_json(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            "{{\"model\":{},\"device\":{},\"platform_us\":{:.1},\"context_us\":{:.1},\"program_us\":{:.1},\"origin\":{},\"kernels_us\":{:.1},\"buffers_us\":{:.1},\"first_launch_us\":{},\"total_us\":{:.1}}}",
            json_string(self.model),
            json_string(&self.device),
            us(self.platform),
            us(self.context),
            us(self.program),
            json_string(match self.origin {
                ProgramOrigin::Compiled => "compiled",
                ProgramOrigin::DiskCache => "disk_cache",
                ProgramOrigin::Memory => "memory",
            }),
            us(self.kernels),
            us(self.buffers),
            self.first_launch.map_or("null".to_string(), |d| format!("{:.1}", us(d))),
            us(self.total()),
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for StartupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(f, "tensorbridge: start-up of `{}` on {}", self.model, self.device)?;
        writeln!(f, "  platform      {:9.3} ms", ms(self.platform))?;
        writeln!(f, "  context       {:9.3} ms", ms(self.context))?;
        writeln!(f, "  program       {:9.3} ms  ({})", ms(self.program), self.origin)?;
        writeln!(f, "  kernels       {:9.3} ms", ms(self.kernels))?;
        writeln!(f, "  buffers       {:9.3} ms", ms(self.buffers))?;
        match self.first_launch {
            Some(d) => writeln!(f, "  first launch  {:9.3} ms", ms(d))?,
            None => writeln!(f, "  first launch          -  (not yet: Engine::warm_up)")?,
        }
        write!(f, "  total         {:9.3} ms", ms(self.total()))
    }
}

/// Whether `TENSORBRIDGE_BUILD_NOTICE` leaves the notice on.
fn notice_on() -> bool {
    std::env::var(BUILD_NOTICE_ENV).map_or(true, |v| !matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off"))
}

/// Runs `build`, printing the notice on stderr if it is still running after a second
/// (unless `TENSORBRIDGE_BUILD_NOTICE` silences it).
pub(crate) fn with_build_notice<T>(model: &str, device: &str, build: impl FnOnce() -> T) -> T {
    if !notice_on() {
        return build();
    }
    let (done, wait) = mpsc::channel::<()>();
    let message =
        format!("tensorbridge: building OpenCL kernels for `{model}` on {device} (first run; cached afterwards)...");
    let watcher = std::thread::Builder::new().name("tensorbridge-build-notice".to_string()).spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(NOTICE_AFTER) {
            eprintln!("{message}");
        }
    });
    let out = build();
    drop(done);
    if let Ok(watcher) = watcher {
        let _ = watcher.join();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StartupReport {
        StartupReport {
            model: "Mnist",
            device: "dev \"x\"".to_string(),
            platform: Duration::from_micros(100),
            context: Duration::from_micros(200),
            program: Duration::from_micros(3000),
            origin: ProgramOrigin::DiskCache,
            kernels: Duration::from_micros(400),
            buffers: Duration::from_micros(500),
            first_launch: None,
        }
    }

    #[test]
    fn the_total_is_the_sum_of_the_phases() {
        let mut r = report();
        assert_eq!(r.total(), Duration::from_micros(4200));
        r.first_launch = Some(Duration::from_micros(800));
        assert_eq!(r.total(), Duration::from_micros(5000));
    }

    #[test]
    fn json_escapes_and_names_every_phase() {
        let j = report().to_json();
        assert!(j.starts_with("{\"model\":\"Mnist\",\"device\":\"dev \\\"x\\\"\""), "{j}");
        assert!(j.contains("\"program_us\":3000.0") && j.contains("\"origin\":\"disk_cache\""), "{j}");
        assert!(j.contains("\"first_launch_us\":null") && j.ends_with("\"total_us\":4200.0}"), "{j}");
    }

    #[test]
    fn the_notice_waits_for_a_second_and_returns_the_value() {
        assert_eq!(with_build_notice("M", "d", || 7), 7);
    }
}
