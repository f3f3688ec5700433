//! Finding OpenCL devices: platforms, their devices, what each one is, and the shared
//! per-device state (context, built programs) behind a [`crate::Device`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opencl3::device as dv;
use opencl3::error_codes::{
    error_text, CL_PLATFORM_NOT_FOUND_KHR, DLOPEN_FUNCTION_NOT_AVAILABLE, DLOPEN_RUNTIME_LOAD_FAILED,
};
use opencl3::platform::platform as pf;
use opencl3::types::{cl_device_id, cl_platform_id};

use super::cl::{bytes_to_string, read_u64, read_usize, Context, Kernel, Mem, Program, Queue};
use crate::error::{Error, Result};
use crate::info::{DeviceInfo, DeviceType};

/// A usable device found by [`enumerate`].
pub(crate) struct Found {
    pub id: cl_device_id,
    pub info: DeviceInfo,
}

/// Every usable OpenCL device of every platform, in platform order. Platforms with no
/// devices (or whose device query fails) are skipped, as are devices that are not
/// available or have no compiler.
///
/// Serialised process-wide: the ICD loader and PoCL initialise on first use, and two
/// threads doing that at once crashed in a probe (PoCL 3.1, `clGetDeviceInfo` racing the
/// platform's hwloc set-up).
pub(crate) fn enumerate() -> Result<Vec<Found>> {
    static DISCOVERY: Mutex<()> = Mutex::new(());
    let _guard = DISCOVERY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let platforms = pf::get_platform_ids().map_err(|code| Error::NoOpenClDevice {
        reason: match code {
            DLOPEN_RUNTIME_LOAD_FAILED | DLOPEN_FUNCTION_NOT_AVAILABLE => {
                "the OpenCL library (libOpenCL.so.1 / OpenCL.dll) could not be loaded; install an ICD loader and a driver (e.g. `ocl-icd-libopencl1` and `pocl-opencl-icd`)".to_string()
            }
            CL_PLATFORM_NOT_FOUND_KHR => {
                "the OpenCL ICD loader found no platform (no vendor driver is registered; check OCL_ICD_VENDORS or /etc/OpenCL/vendors)".to_string()
            }
            other => format!("clGetPlatformIDs failed with {} ({other})", error_text(other)),
        },
    })?;
    let mut found = Vec::new();
    for platform in platforms {
        let Ok(ids) = dv::get_device_ids(platform, dv::CL_DEVICE_TYPE_ALL) else {
            continue;
        };
        for id in ids {
            if let Some(info) = describe(platform, id, found.len()) {
                found.push(Found { id, info });
            }
        }
    }
    if found.is_empty() {
        return Err(Error::NoOpenClDevice {
            reason: "no platform has a usable device (PoCL shows none when it cannot create its cache directory: set POCL_CACHE_DIR to a writable directory)".to_string(),
        });
    }
    Ok(found)
}

fn platform_string(platform: cl_platform_id, param: u32) -> String {
    pf::get_platform_data(platform, param).map(|raw| bytes_to_string(&raw)).unwrap_or_default()
}

fn device_raw(id: cl_device_id, param: u32) -> Vec<u8> {
    dv::get_device_data(id, param).unwrap_or_default()
}

/// What a device is; `None` if it cannot be used (unavailable, no compiler).
fn describe(platform: cl_platform_id, id: cl_device_id, index: usize) -> Option<DeviceInfo> {
    let flag = |param| read_u64(&device_raw(id, param)) != 0;
    if !flag(dv::CL_DEVICE_AVAILABLE) || !flag(dv::CL_DEVICE_COMPILER_AVAILABLE) {
        return None;
    }
    let string = |param| bytes_to_string(&device_raw(id, param));
    let extensions = string(dv::CL_DEVICE_EXTENSIONS);
    let has = |ext: &str| extensions.split_whitespace().any(|e| e == ext);
    let kind = read_u64(&device_raw(id, dv::CL_DEVICE_TYPE));
    let device_type = if kind & dv::CL_DEVICE_TYPE_GPU != 0 {
        DeviceType::Gpu
    } else if kind & dv::CL_DEVICE_TYPE_ACCELERATOR != 0 {
        DeviceType::Accelerator
    } else if kind & dv::CL_DEVICE_TYPE_CPU != 0 {
        DeviceType::Cpu
    } else {
        DeviceType::Other
    };
    Some(DeviceInfo {
        index,
        platform: platform_string(platform, pf::CL_PLATFORM_NAME),
        platform_version: platform_string(platform, pf::CL_PLATFORM_VERSION),
        name: string(dv::CL_DEVICE_NAME),
        vendor: string(dv::CL_DEVICE_VENDOR),
        version: string(dv::CL_DEVICE_VERSION),
        driver_version: string(dv::CL_DRIVER_VERSION),
        opencl_c_version: string(dv::CL_DEVICE_OPENCL_C_VERSION),
        device_type,
        compute_units: read_u64(&device_raw(id, dv::CL_DEVICE_MAX_COMPUTE_UNITS)) as u32,
        max_work_group_size: read_usize(&device_raw(id, dv::CL_DEVICE_MAX_WORK_GROUP_SIZE)),
        local_mem_bytes: read_u64(&device_raw(id, dv::CL_DEVICE_LOCAL_MEM_SIZE)),
        global_mem_bytes: read_u64(&device_raw(id, dv::CL_DEVICE_GLOBAL_MEM_SIZE)),
        fp16: has("cl_khr_fp16"),
        fp64: has("cl_khr_fp64") || read_u64(&device_raw(id, dv::CL_DEVICE_DOUBLE_FP_CONFIG)) != 0,
        host_unified_memory: flag(dv::CL_DEVICE_HOST_UNIFIED_MEMORY),
        max_parameter_size: read_usize(&device_raw(id, dv::CL_DEVICE_MAX_PARAMETER_SIZE)),
    })
}

/// Where a model's program came from, counted per device (for tests and diagnostics).
#[derive(Default)]
pub(crate) struct BuildCounts {
    pub from_source: AtomicUsize,
    pub from_disk: AtomicUsize,
    pub from_memory: AtomicUsize,
}

static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(1);

/// One OpenCL device with its context: what every clone of a [`crate::Device`] shares.
/// Programs built for it are kept, keyed by source and options, for the device's lifetime.
pub(crate) struct ClDevice {
    pub context: Context,
    pub id: cl_device_id,
    pub info: DeviceInfo,
    /// Distinguishes contexts in messages (two `Device::opencl()` calls make two).
    pub serial: u64,
    pub programs: Mutex<HashMap<String, Arc<Program>>>,
    pub counts: BuildCounts,
    /// The empty kernel of the launch-floor benchmark and a 4-byte buffer to read, made on
    /// first use.
    pub empty: Mutex<Option<(Queue, Kernel, Mem)>>,
    /// Start-up: platform discovery (set by whoever enumerated) and context creation.
    pub platform_time: Duration,
    pub context_time: Duration,
}

impl ClDevice {
    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bytes: the alignment of a sub-buffer's origin
    /// (at least 4).
    pub(crate) fn base_align_bytes(&self) -> usize {
        (read_u64(&device_raw(self.id, dv::CL_DEVICE_MEM_BASE_ADDR_ALIGN)) as usize / 8).max(4)
    }
}

// SAFETY: a root `cl_device_id` is an opaque handle valid for the whole process, usable
// from any thread; the other fields are `Send + Sync` themselves.
unsafe impl Send for ClDevice {}
// SAFETY: as above; `ClDevice` offers only `&self` methods that make thread-safe calls.
unsafe impl Sync for ClDevice {}

impl ClDevice {
    /// Opens device `found` (creates its context).
    pub(crate) fn open(found: Found) -> Result<ClDevice> {
        let start = Instant::now();
        let context = Context::new(found.id)?;
        let context_time = start.elapsed();
        Ok(ClDevice {
            context,
            id: found.id,
            info: found.info,
            serial: NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed),
            programs: Mutex::new(HashMap::new()),
            counts: BuildCounts::default(),
            empty: Mutex::new(None),
            platform_time: Duration::ZERO,
            context_time,
        })
    }

    /// `name (platform), context #n`, for messages.
    pub(crate) fn label(&self) -> String {
        format!("OpenCL device `{}` ({}), context #{}", self.info.name, self.info.platform, self.serial)
    }
}
