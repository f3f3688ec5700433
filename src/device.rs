//! [`Device`]: where a model's parameters live and its arithmetic runs.

use std::fmt;
#[cfg(feature = "opencl")]
use std::sync::Arc;

use crate::backend::cpu::CpuBackend;
#[cfg(feature = "opencl")]
use crate::backend::opencl::{self, ClDevice, OpenClBackend};
use crate::backend::Backend;
use crate::error::{Error, Result};
#[cfg(feature = "opencl")]
use crate::info::{ClOptions, DeviceType};
use crate::info::{DeviceInfo, KernelPath, Upload};
use crate::model::Model;

/// The environment variable that sets the directory of the OpenCL program-binary cache;
/// an empty value or `off` turns the cache off. Unset, the cache lives in the user's cache
/// directory (`$XDG_CACHE_HOME/tensorbridge`, `~/.cache/tensorbridge`,
/// `~/Library/Caches/tensorbridge`, `%LOCALAPPDATA%\tensorbridge`).
#[cfg(not(feature = "opencl"))]
pub const CACHE_DIR_ENV: &str = "TENSORBRIDGE_CACHE_DIR";
#[cfg(feature = "opencl")]
pub use crate::backend::opencl::CACHE_DIR_ENV;

/// The environment variable that makes [`Device::auto`] print, on standard error, the
/// device it chose and why (`1` to enable; see [`Device::auto_explained`]).
pub const TRACE_DEVICE_ENV: &str = "TENSORBRIDGE_TRACE_DEVICE";

/// The environment variable that overrides [`Device::auto`]: `cpu`, `opencl` or
/// `opencl:N` (the N-th usable OpenCL device of [`Device::list`]).
pub const DEVICE_ENV: &str = "TENSORBRIDGE_DEVICE";

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
    #[cfg(feature = "opencl")]
    OpenCl {
        device: Arc<ClDevice>,
        options: ClOptions,
    },
}

/// The error of every OpenCL call in a build without the feature `opencl`.
#[cfg(not(feature = "opencl"))]
fn no_opencl<T>() -> Result<T> {
    Err(Error::NoOpenClDevice { reason: "tensorbridge was built without its `opencl` feature".to_string() })
}

impl Device {
    /// The OpenCL device, if this is one.
    #[cfg(feature = "opencl")]
    pub(crate) fn cl(&self) -> Option<&Arc<ClDevice>> {
        match &self.kind {
            DeviceKind::OpenCl { device, .. } => Some(device),
            DeviceKind::Cpu => None,
        }
    }

    /// The CPU backend: always available. With the feature `parallel`, its large products
    /// split over `TENSORBRIDGE_THREADS` threads (read once; the calling thread included, `1`
    /// for none), else as many as the machine runs at once: worker threads of the crate's
    /// own, which spin for 100 us after a product, waiting for the next, then sleep (from
    /// 2^24 multiply-adds a product, rayon's pool instead, `RAYON_NUM_THREADS`). The results
    /// are the same bits for any thread count.
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
        #[cfg(feature = "opencl")]
        return Ok(Device::from_cl(opencl::open(None, |_| true)?));
        #[cfg(not(feature = "opencl"))]
        no_opencl()
    }

    /// The `index`-th usable OpenCL device of [`Device::list`].
    ///
    /// # Errors
    /// Those of [`Device::opencl`], and [`Error::InvalidDevice`] for an index out of range.
    pub fn opencl_at(index: usize) -> Result<Device> {
        #[cfg(feature = "opencl")]
        return Ok(Device::from_cl(opencl::open(Some(index), |_| true)?));
        #[cfg(not(feature = "opencl"))]
        {
            let _ = index;
            no_opencl()
        }
    }

    /// Every usable OpenCL device on this machine, in the order `opencl:N` counts them.
    /// Platforms without devices, and devices that are unavailable or have no compiler,
    /// are skipped.
    ///
    /// # Errors
    /// [`Error::NoOpenClDevice`] when there is none (library missing, no platform, ...).
    pub fn list() -> Result<Vec<DeviceInfo>> {
        #[cfg(feature = "opencl")]
        return Ok(opencl::enumerate()?.into_iter().map(|f| f.info).collect());
        #[cfg(not(feature = "opencl"))]
        no_opencl()
    }

    #[cfg(feature = "opencl")]
    fn from_cl(device: Arc<ClDevice>) -> Device {
        Device { kind: DeviceKind::OpenCl { device, options: ClOptions::default() } }
    }

    /// The best device here, never failing: `TENSORBRIDGE_DEVICE` first (`cpu`, `opencl`,
    /// `opencl:N`); otherwise the first OpenCL GPU or accelerator; otherwise the CPU
    /// backend. A CPU-type OpenCL device (PoCL) is used only when asked for by name, since
    /// the CPU backend is faster on the same cores. If the variable names a device that
    /// cannot be used, a warning goes to standard error and the CPU backend is used; call
    /// [`Device::try_auto`] to get the error instead. Never panics, also where no OpenCL
    /// library is installed.
    ///
    /// Why it chose what it chose: [`Device::auto_explained`] returns the reason with the
    /// device, and `TENSORBRIDGE_TRACE_DEVICE=1` ([`TRACE_DEVICE_ENV`]) prints it to
    /// standard error.
    pub fn auto() -> Device {
        Device::auto_explained().0
    }

    /// [`Device::auto`]'s device and, in one line, why it was chosen: the variable that
    /// named it, the GPU found, or why the CPU backend runs (no OpenCL library, no
    /// platform, or only CPU-type OpenCL devices, which are passed over and named).
    ///
    /// ```
    /// let (device, why) = tensorbridge::Device::auto_explained();
    /// println!("{device}: {why}");
    /// ```
    pub fn auto_explained() -> (Device, String) {
        match Device::choose() {
            (Ok(device), why) => (device, why),
            (Err(err), why) => {
                eprintln!("tensorbridge: warning: {err}; using the CPU backend");
                (Device::cpu(), format!("{why}, which failed ({err}): the CPU backend"))
            }
        }
    }

    /// Like [`Device::auto`], but an unusable `TENSORBRIDGE_DEVICE` is an error.
    pub fn try_auto() -> Result<Device> {
        Device::choose().0
    }

    /// Why [`Device::auto`] would choose what it chooses now, in one line (it opens the
    /// device to find out; keep the device from [`Device::auto_explained`] instead of
    /// calling both).
    pub fn explain() -> String {
        Device::auto_explained().1
    }

    /// The choice of [`Device::try_auto`] and its reason; printed when
    /// `TENSORBRIDGE_TRACE_DEVICE=1`.
    fn choose() -> (Result<Device>, String) {
        let (device, why) = Device::choose_quietly();
        if std::env::var(TRACE_DEVICE_ENV).is_ok_and(|v| v.trim() == "1") {
            match &device {
                Ok(d) => eprintln!("tensorbridge: device {d}: {why}"),
                Err(err) => eprintln!("tensorbridge: device: {why}, which failed: {err}"),
            }
        }
        (device, why)
    }

    fn choose_quietly() -> (Result<Device>, String) {
        match std::env::var(DEVICE_ENV) {
            Ok(value) if !value.trim().is_empty() => {
                (Device::from_name(&value), format!("{DEVICE_ENV}={} asks for it", value.trim()))
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => Device::choose_found(),
            Err(std::env::VarError::NotUnicode(raw)) => (
                Err(Error::InvalidDevice {
                    value: raw.to_string_lossy().into_owned(),
                    reason: format!("{DEVICE_ENV} is not valid UTF-8"),
                }),
                format!("{DEVICE_ENV} is set"),
            ),
        }
    }

    /// With no variable set: the first OpenCL GPU or accelerator, else the CPU backend.
    #[cfg(feature = "opencl")]
    fn choose_found() -> (Result<Device>, String) {
        let accelerator = |i: &DeviceInfo| matches!(i.device_type, DeviceType::Gpu | DeviceType::Accelerator);
        // One enumeration: the reason is read from the devices it found, and the chosen one
        // is opened from them.
        let start = std::time::Instant::now();
        let found = match opencl::enumerate() {
            Ok(found) => found,
            Err(Error::NoOpenClDevice { reason }) => {
                return (Ok(Device::cpu()), format!("no OpenCL device ({reason}): the CPU backend"))
            }
            Err(err) => return (Ok(Device::cpu()), format!("no OpenCL device ({err}): the CPU backend")),
        };
        let platform_time = start.elapsed();
        let named = |i: &DeviceInfo| format!("`{}` ({}, {})", i.name, i.platform, i.device_type);
        if let Some(gpu) = found.iter().map(|f| &f.info).find(|i| accelerator(i)) {
            let why = format!("the first OpenCL GPU or accelerator, {}", named(gpu));
            return match opencl::open_found(found, None, accelerator, platform_time) {
                Ok(device) => (Ok(Device::from_cl(device)), why),
                Err(err) => (Ok(Device::cpu()), format!("{why}, could not be opened ({err}): the CPU backend")),
            };
        }
        let passed: Vec<String> = found.iter().map(|f| named(&f.info)).collect();
        let why = format!(
            "the OpenCL devices here are CPU-type only ({}), passed over since the CPU backend is faster on the \
             same cores ({DEVICE_ENV}=opencl uses one): the CPU backend",
            passed.join(", ")
        );
        (Ok(Device::cpu()), why)
    }

    /// With no variable set and no `opencl` feature: the CPU backend.
    #[cfg(not(feature = "opencl"))]
    fn choose_found() -> (Result<Device>, String) {
        (Ok(Device::cpu()), "tensorbridge was built without its `opencl` feature: the CPU backend".to_string())
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
    /// 2^20 multiply-adds, and the device can run the kernel's work-group; otherwise the
    /// tiled kernels. No effect on the CPU backend.
    pub fn with_kernel_path(&self, path: KernelPath) -> Device {
        match &self.kind {
            DeviceKind::Cpu => {
                let _ = path;
                self.clone()
            }
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, options } => Device {
                kind: DeviceKind::OpenCl { device: Arc::clone(device), options: ClOptions { path, ..*options } },
            },
        }
    }

    /// This device with a way for the batch of each train step to go up, for the models
    /// created on it afterwards (same context). [`Upload::Auto`] (the default) passes a
    /// batch of at most [`ARGUMENT_BATCH_WORDS`](crate::ARGUMENT_BATCH_WORDS) words as an
    /// argument of the fused kernel (a step is then one command, or less: a tiny model's
    /// deferred steps go up to four a launch), and otherwise writes
    /// it through a mapped host-allocated buffer where the device reports host-unified
    /// memory (PoCL, Mali, Adreno: no copy), or copies it. Forcing a mode is for
    /// benchmarks and tests; every mode computes bit-identical results. No effect on the
    /// CPU backend.
    pub fn with_upload(&self, upload: Upload) -> Device {
        match &self.kind {
            DeviceKind::Cpu => {
                let _ = upload;
                self.clone()
            }
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, options } => Device {
                kind: DeviceKind::OpenCl { device: Arc::clone(device), options: ClOptions { upload, ..*options } },
            },
        }
    }

    /// This device with per-command profiling on or off for the models created on it
    /// afterwards (same context). On, their queue records device timestamps
    /// (`CL_QUEUE_PROFILING_ENABLE`) and [`Engine::profile_step`](crate::Engine::profile_step)
    /// times a step stage by stage; off (the default), nothing is recorded and nothing
    /// costs. No effect on the CPU backend, which cannot profile.
    pub fn with_profiling(&self, on: bool) -> Device {
        match &self.kind {
            DeviceKind::Cpu => {
                let _ = on;
                self.clone()
            }
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, options } => Device {
                kind: DeviceKind::OpenCl {
                    device: Arc::clone(device),
                    options: ClOptions { profiling: on, ..*options },
                },
            },
        }
    }

    /// What the OpenCL device is; `None` for the CPU backend.
    pub fn info(&self) -> Option<&DeviceInfo> {
        match &self.kind {
            DeviceKind::Cpu => None,
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, .. } => Some(&device.info),
        }
    }

    /// A short human-readable description, e.g. `cpu (2 threads, avx512)`: the threads and
    /// the vector extension the CPU backend's train step runs with.
    pub fn name(&self) -> String {
        match &self.kind {
            DeviceKind::Cpu => crate::backend::cpu::describe(),
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, .. } => device.label(),
        }
    }

    /// Whether this is the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self.kind, DeviceKind::Cpu)
    }

    /// Whether this is an OpenCL device.
    pub fn is_opencl(&self) -> bool {
        !self.is_cpu()
    }

    /// The backend of model `M` on this device, holding the parameters `flat`: the only
    /// place that names a concrete backend.
    pub(crate) fn backend<M: Model>(&self, flat: &[M::Storage]) -> Result<Box<dyn Backend<M>>> {
        match &self.kind {
            DeviceKind::Cpu => Ok(Box::new(CpuBackend::<M>::new(flat))),
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, options } => Ok(Box::new(OpenClBackend::<M>::new(device, *options, flat)?)),
        }
    }

    /// Compiles `source` for this OpenCL device as a model's program would be; for tests
    /// of the build-failure path. Not a public API.
    #[doc(hidden)]
    pub fn __build_source(&self, source: &str) -> Result<()> {
        match &self.kind {
            DeviceKind::Cpu => {
                let _ = source;
                Err(Error::Unsupported { device: self.name(), reason: "no OpenCL compiler".to_string() })
            }
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, .. } => opencl::build_source(device, source),
        }
    }

    /// Launches an empty kernel and waits for it: the launch floor, for benchmarks. Not a
    /// public API.
    #[doc(hidden)]
    pub fn __empty_launch(&self) -> Result<()> {
        match &self.kind {
            DeviceKind::Cpu => Ok(()),
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, .. } => opencl::empty_launch(device, false),
        }
    }

    /// Launches an empty kernel and reads 4 bytes back (blocking): the floor under a step
    /// that reads its loss, for benchmarks. Not a public API.
    #[doc(hidden)]
    pub fn __empty_launch_read(&self) -> Result<()> {
        match &self.kind {
            DeviceKind::Cpu => Ok(()),
            #[cfg(feature = "opencl")]
            DeviceKind::OpenCl { device, .. } => opencl::empty_launch(device, true),
        }
    }

    /// Where this device's programs came from so far: (compiled from source, loaded from
    /// the disk cache, reused in memory). For tests and diagnostics; not a public API.
    #[doc(hidden)]
    pub fn __program_origins(&self) -> (usize, usize, usize) {
        match &self.kind {
            DeviceKind::Cpu => (0, 0, 0),
            #[cfg(feature = "opencl")]
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
