//! [`Device`]: where a model's parameters live and its arithmetic runs.

use std::fmt;

use crate::error::{Error, Result};

/// The environment variable that overrides [`Device::auto`]: `cpu`, `opencl` or
/// `opencl:N` (the N-th usable OpenCL device of [`Device::list`]).
pub const DEVICE_ENV: &str = "TENSORBRIDGE_DEVICE";

/// A compute device: the CPU backend (nalgebra + rayon) or an OpenCL device.
///
/// Cheap to clone; clones refer to the same device.
#[derive(Clone)]
pub struct Device {
    kind: DeviceKind,
}

#[derive(Clone)]
pub(crate) enum DeviceKind {
    Cpu,
}

impl Device {
    /// The CPU backend: always available.
    pub fn cpu() -> Device {
        Device { kind: DeviceKind::Cpu }
    }

    /// The best device here, never failing: `TENSORBRIDGE_DEVICE` first (`cpu`, `opencl`,
    /// `opencl:N`); otherwise an OpenCL GPU or accelerator if one is present; otherwise
    /// the CPU backend. If the variable names a device that cannot be used, a warning goes
    /// to standard error and the CPU backend is used; call [`Device::try_auto`] to get the
    /// error instead.
    pub fn auto() -> Device {
        match Device::try_auto() {
            Ok(device) => device,
            Err(err) => {
                eprintln!("tensorbridge: warning: {err}; using the CPU backend");
                Device::cpu()
            }
        }
    }

    /// Like [`Device::auto`], but an unusable `TENSORBRIDGE_DEVICE` is an error.
    pub fn try_auto() -> Result<Device> {
        match std::env::var(DEVICE_ENV) {
            Ok(value) => Device::from_name(&value),
            Err(std::env::VarError::NotPresent) => Ok(Device::cpu()),
            Err(std::env::VarError::NotUnicode(raw)) => Err(Error::InvalidDevice {
                value: raw.to_string_lossy().into_owned(),
                reason: format!("{DEVICE_ENV} is not valid UTF-8"),
            }),
        }
    }

    /// The device a name selects: `cpu`, `opencl` (the first usable OpenCL device) or
    /// `opencl:N`. Surrounding whitespace and case are ignored.
    pub fn from_name(name: &str) -> Result<Device> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Device::cpu()),
            _ => Err(Error::InvalidDevice {
                value: name.to_string(),
                reason: "expected `cpu`, `opencl` or `opencl:N`".to_string(),
            }),
        }
    }

    /// A short human-readable description, e.g. `cpu (2 threads)`.
    pub fn name(&self) -> String {
        match &self.kind {
            DeviceKind::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        }
    }

    /// Whether this is the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self.kind, DeviceKind::Cpu)
    }

    pub(crate) fn kind(&self) -> &DeviceKind {
        &self.kind
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Device").field(&self.name()).finish()
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
