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
