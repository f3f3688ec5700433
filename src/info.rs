//! What a device is: [`DeviceInfo`], [`DeviceType`], and the kernel choice [`KernelPath`].
//! Plain data, importing nothing of the crate, so that both `device` and the OpenCL backend
//! can name them.

use std::fmt;

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
    /// `CL_DEVICE_HOST_UNIFIED_MEMORY`: the device and the host share one memory (CPU
    /// devices such as PoCL, and integrated GPUs such as Mali and Adreno). There a batch
    /// goes up through a mapped buffer with no copy (see [`Upload`]).
    pub host_unified_memory: bool,
    /// `CL_DEVICE_MAX_PARAMETER_SIZE`: bytes of arguments a kernel launch may carry.
    pub max_parameter_size: usize,
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

/// Which OpenCL kernels a model on this device uses (see [`Device::with_kernel_path`](crate::Device::with_kernel_path)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// The fused one-launch kernel when the model is small enough and the device can run
    /// it, else the tiled kernels. The rule is documented on [`Device::with_kernel_path`](crate::Device::with_kernel_path).
    #[default]
    Auto,
    /// Always the fused kernel; a model too large for it fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    Fused,
    /// Always the tiled kernels (one launch per layer and stage).
    Tiled,
}

/// How a train step's batch (features and labels) reaches an OpenCL device (see
/// [`Device::with_upload`](crate::Device::with_upload)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Upload {
    /// The cheapest the model and the device allow: [`Upload::Arguments`] for a small
    /// batch on the fused kernel, else [`Upload::ZeroCopy`] where the device reports
    /// host-unified memory, else [`Upload::Copy`].
    #[default]
    Auto,
    /// A non-blocking write from a host staging buffer into a device buffer (one command).
    Copy,
    /// A device buffer allocated in host memory (`CL_MEM_ALLOC_HOST_PTR`), mapped, filled
    /// in place and unmapped: no copy on a device with host-unified memory. Allowed on
    /// any device (elsewhere the driver may copy at unmap).
    ZeroCopy,
    /// The batch passed by value as an argument of the fused kernel: a step is one
    /// command (a tiny model's deferred steps, up to four a command: see
    /// [`Engine::train_step_deferred`](crate::Engine::train_step_deferred)). Only for the fused kernel and a batch of at most
    /// [`ARGUMENT_BATCH_WORDS`] 32-bit words (features and labels); otherwise the model
    /// fails to build with `Error::Unsupported`.
    Arguments,
}

/// The largest batch (in 32-bit words: `f32` features, or `f16` features two a word, then
/// one per label) that [`Upload::Arguments`] passes by value: 256 bytes, which every
/// device's `CL_DEVICE_MAX_PARAMETER_SIZE` (1024 at least, 256 on embedded profiles) has
/// room for beside the kernel's other arguments where the device reports enough.
pub const ARGUMENT_BATCH_WORDS: usize = 64;

/// How models made on an OpenCL device run: the settings of its `with_*` methods.
#[cfg(feature = "opencl")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClOptions {
    pub path: KernelPath,
    pub upload: Upload,
    pub profiling: bool,
}
