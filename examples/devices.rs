//! A small `clinfo`: every usable OpenCL device, what it is, and the device
//! `Device::auto()` picks here.
//!
//! ```text
//! cargo run --example devices
//! ```

use tensorbridge::Device;

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn main() {
    match Device::list() {
        Err(err) => println!("no OpenCL: {err}"),
        Ok(devices) => {
            let mut platform = String::new();
            for d in &devices {
                if d.platform != platform {
                    platform.clone_from(&d.platform);
                    println!("platform: {} ({})", d.platform, d.platform_version);
                }
                println!("  opencl:{}  {} `{}`", d.index, d.device_type, d.name);
                println!("      vendor            {}", d.vendor);
                println!("      version           {}  (driver {})", d.version, d.driver_version);
                println!("      OpenCL C          {}", d.opencl_c_version);
                println!("      compute units     {}", d.compute_units);
                println!("      max work-group    {}", d.max_work_group_size);
                println!("      local memory      {}", mib(d.local_mem_bytes));
                println!("      global memory     {}", mib(d.global_mem_bytes));
                println!("      fp16 / fp64       {} / {}", yes(d.fp16), yes(d.fp64));
            }
        }
    }
    println!("Device::auto() here: {}", Device::auto());
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
