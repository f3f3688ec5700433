//! [`Device`]: where a model's parameters live and its arithmetic runs.

use std::fmt;
use std::sync::Arc;

use crate::backend::opencl::{self, ClDevice};
use crate::error::{Error, Result};

/// The environment variable that overrides [`Device::auto`]: `cpu`, `opencl` or
/// `opencl:N` (the N-th usable OpenCL device of [`Device::list`]).
pub const DEVICE_ENV: &str = "TENSORBRIDGE_DEVICE";

/// The environment variable that sets the directory of the OpenCL program-binary cache;
/// an empty value or `off` turns the cache off. Unset, the cache lives in the user's cache
/// directory (`$XDG_CACHE_HOME/tensorbridge`, `~/.cache/tensorbridge`,
/// `~/Library/Caches/tensorbridge`, `%LOCALAPPDATA%\tensorbridge`).
pub const CACHE_DIR_ENV: &str = "TENSORBRIDGE_CACHE_DIR";

/// A compute device: the CPU backend (nalgebra + rayon) or an OpenCL device.
///
/// Cheap to clone; clones refer to the same device (and, for OpenCL, the same context, so
/// tensors move freely between models made on clones).
#[derive(Clone)]
pub struct Device {
    kind: DeviceKind,
}

#[derive(Clone)]
pub(crate) enum DeviceKind {
    Cpu,
    OpenCl { device: Arc<ClDevice>, path: KernelPath },
}

/// The kind of an OpenCL device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceType {
    /// A GPU (`CL_DEVICE_TYPE_GPU`).
    Gpu,
    /// An accelerator (`CL_DEVICE_TYPE_ACCELERATOR`): DSPs, NPUs, FPGAs.
    Accelerator,
    /// A CPU device, such as PoCL.
    Cpu,
    /// Anything else (custom devices).
    Other,
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceType::Gpu => "GPU",
            DeviceType::Accelerator => "accelerator",
            DeviceType::Cpu => "CPU",
            DeviceType::Other => "other",
        })
    }
}

/// What an OpenCL device is, as its driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// Position among the usable devices (`opencl:N` selects it).
    pub index: usize,
    /// Platform name, e.g. `Portable Computing Language`.
    pub platform: String,
    /// Platform version string, e.g. `OpenCL 3.0 PoCL 3.1 ...`.
    pub platform_version: String,
    /// Device name.
    pub name: String,
    /// Device vendor.
    pub vendor: String,
    /// `CL_DEVICE_VERSION`, e.g. `OpenCL 3.0 PoCL HSTR: ...`.
    pub version: String,
    /// Driver version.
    pub driver_version: String,
    /// Highest OpenCL C version the compiler accepts, e.g. `OpenCL C 1.2 PoCL`.
    pub opencl_c_version: String,
    /// GPU, accelerator, CPU, ...
    pub device_type: DeviceType,
    /// Parallel compute units.
    pub compute_units: u32,
    /// Largest work-group.
    pub max_work_group_size: usize,
    /// Local memory per work-group, in bytes.
    pub local_mem_bytes: u64,
    /// Global memory, in bytes.
    pub global_mem_bytes: u64,
    /// `cl_khr_fp16`: half-precision arithmetic in kernels.
    pub fp16: bool,
    /// Double precision (`cl_khr_fp64`).
    pub fp64: bool,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "opencl:{} {} `{}` ({}; {}; {} compute units; fp16 {}, fp64 {})",
            self.index,
            self.device_type,
            self.name,
            self.platform,
            self.version,
            self.compute_units,
            if self.fp16 { "yes" } else { "no" },
            if self.fp64 { "yes" } else { "no" },
        )
    }
}

/// Which OpenCL kernels a model on this device uses (see [`Device::with_kernel_path`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// The fused one-launch kernel when the model is small enough and the device can run
    /// it, else the tiled kernels. The rule is documented on [`Device::with_kernel_path`].
    #[default]
    Auto,
    /// Always the fused kernel; a model too large for it fails with
    /// [`Error::Unsupported`].
    Fused,
    /// Always the tiled kernels (one launch per layer and stage).
    Tiled,
}

impl Device {
    /// The CPU backend: always available.
    pub fn cpu() -> Device {
        Device { kind: DeviceKind::Cpu }
    }

    /// The first usable OpenCL device of any type (GPU, accelerator or CPU such as PoCL),
    /// with a context of its own.
    ///
    /// # Errors
    /// [`Error::NoOpenClDevice`] when the OpenCL library is missing, the loader finds no
    /// platform, or no platform has a usable device; [`Error::OpenCl`] if creating the
    /// context fails.
    pub fn opencl() -> Result<Device> {
        Ok(Device::from_cl(opencl::open(None, |_| true)?))
    }

    /// The `index`-th usable OpenCL device of [`Device::list`].
    ///
    /// # Errors
    /// Those of [`Device::opencl`], and [`Error::InvalidDevice`] for an index out of range.
    pub fn opencl_at(index: usize) -> Result<Device> {
        Ok(Device::from_cl(opencl::open(Some(index), |_| true)?))
    }

    /// Every usable OpenCL device on this machine, in the order `opencl:N` counts them.
    /// Platforms without devices, and devices that are unavailable or have no compiler,
    /// are skipped.
    ///
    /// # Errors
    /// [`Error::NoOpenClDevice`] when there is none (library missing, no platform, ...).
    pub fn list() -> Result<Vec<DeviceInfo>> {
        Ok(opencl::enumerate()?.into_iter().map(|f| f.info).collect())
    }

    fn from_cl(device: Arc<ClDevice>) -> Device {
        Device { kind: DeviceKind::OpenCl { device, path: KernelPath::Auto } }
    }

    /// The best device here, never failing: `TENSORBRIDGE_DEVICE` first (`cpu`, `opencl`,
    /// `opencl:N`); otherwise the first OpenCL GPU or accelerator; otherwise the CPU
    /// backend. A CPU-type OpenCL device (PoCL) is used only when asked for by name, since
    /// the CPU backend is faster on the same cores. If the variable names a device that
    /// cannot be used, a warning goes to standard error and the CPU backend is used; call
    /// [`Device::try_auto`] to get the error instead. Never panics, also where no OpenCL
    /// library is installed.
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
            Ok(value) if !value.trim().is_empty() => Device::from_name(&value),
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                let accelerator = |i: &DeviceInfo| matches!(i.device_type, DeviceType::Gpu | DeviceType::Accelerator);
                Ok(opencl::open(None, accelerator).map_or_else(|_| Device::cpu(), Device::from_cl))
            }
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
        let invalid = || Error::InvalidDevice {
            value: name.to_string(),
            reason: "expected `cpu`, `opencl` or `opencl:N`".to_string(),
        };
        match lower.as_str() {
            "cpu" => Ok(Device::cpu()),
            "opencl" => Device::opencl(),
            other => match other.strip_prefix("opencl:") {
                Some(n) => Device::opencl_at(n.trim().parse().map_err(|_| invalid())?),
                None => Err(invalid()),
            },
        }
    }

    /// This device with a kernel choice for the models created on it afterwards (same
    /// context: tensors move freely between models on either).
    ///
    /// [`KernelPath::Auto`] (the default) picks the fused kernel when the batch, every
    /// activation and two delta buffers fit in 16 KiB of local memory, a step is at most
    /// 2^17 multiply-adds, and the device can run the kernel's work-group; otherwise the
    /// tiled kernels. No effect on the CPU backend.
    pub fn with_kernel_path(&self, path: KernelPath) -> Device {
        match &self.kind {
            DeviceKind::Cpu => self.clone(),
            DeviceKind::OpenCl { device, .. } => {
                Device { kind: DeviceKind::OpenCl { device: Arc::clone(device), path } }
            }
        }
    }

    /// What the OpenCL device is; `None` for the CPU backend.
    pub fn info(&self) -> Option<&DeviceInfo> {
        match &self.kind {
            DeviceKind::Cpu => None,
            DeviceKind::OpenCl { device, .. } => Some(&device.info),
        }
    }

    /// A short human-readable description, e.g. `cpu (2 threads)`.
    pub fn name(&self) -> String {
        match &self.kind {
            DeviceKind::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            DeviceKind::OpenCl { device, .. } => device.label(),
        }
    }

    /// Whether this is the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self.kind, DeviceKind::Cpu)
    }

    /// Whether this is an OpenCL device.
    pub fn is_opencl(&self) -> bool {
        matches!(self.kind, DeviceKind::OpenCl { .. })
    }

    pub(crate) fn kind(&self) -> &DeviceKind {
        &self.kind
    }

    /// Compiles `source` for this OpenCL device as a model's program would be; for tests
    /// of the build-failure path. Not a public API.
    #[doc(hidden)]
    pub fn __build_source(&self, source: &str) -> Result<()> {
        match &self.kind {
            DeviceKind::Cpu => {
                Err(Error::Unsupported { device: self.name(), reason: "no OpenCL compiler".to_string() })
            }
            DeviceKind::OpenCl { device, .. } => opencl::build_source(device, source),
        }
    }

    /// Launches an empty kernel and waits for it: the launch floor, for benchmarks. Not a
    /// public API.
    #[doc(hidden)]
    pub fn __empty_launch(&self) -> Result<()> {
        match &self.kind {
            DeviceKind::Cpu => Ok(()),
            DeviceKind::OpenCl { device, .. } => opencl::empty_launch(device),
        }
    }

    /// Where this device's programs came from so far: (compiled from source, loaded from
    /// the disk cache, reused in memory). For tests and diagnostics; not a public API.
    #[doc(hidden)]
    pub fn __program_origins(&self) -> (usize, usize, usize) {
        match &self.kind {
            DeviceKind::Cpu => (0, 0, 0),
            DeviceKind::OpenCl { device, .. } => opencl::build_counts(device),
        }
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
