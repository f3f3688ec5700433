//! Pre-builds the OpenCL kernels of the models an application ships, so that its first
//! real start loads them from the binary cache instead of compiling them (seconds on some
//! drivers). Run it on the deployment machine (or one with the same device and driver),
//! e.g. in an install step, with the same `TENSORBRIDGE_CACHE_DIR` the application uses:
//!
//! ```text
//! TENSORBRIDGE_CACHE_DIR=/var/cache/myapp cargo run --release --example prebuild
//! ```
//! It prints each model's start-up report (and `--json` prints them as JSON lines).

use tensorbridge::{prebuild, Device, Model, StartupReport};

tensorbridge::model! {
    /// A digits-sized classifier.
    pub struct Digits { batch: 32, features: 64, hidden: [32], classes: 10 }
}
tensorbridge::model! {
    /// An MNIST-sized classifier.
    pub struct Mnist { batch: 128, features: 784, hidden: [128], classes: 10 }
}
tensorbridge::model! {
    /// A wide classifier.
    pub struct Wide { batch: 256, features: 1024, hidden: [1024], classes: 16 }
}

/// Pre-builds one model's kernels for a device.
type Prebuild = fn(&Device) -> tensorbridge::Result<Option<StartupReport>>;

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let device = match Device::opencl() {
        Ok(device) => device,
        Err(err) => {
            eprintln!("no OpenCL device, nothing to pre-build: {err}");
            return;
        }
    };
    // Every model the application declares; add yours here.
    let models: [(&str, Prebuild); 3] =
        [(Digits::NAME, prebuild::<Digits>), (Mnist::NAME, prebuild::<Mnist>), (Wide::NAME, prebuild::<Wide>)];
    let mut failed = false;
    for (name, build) in models {
        match build(&device) {
            Ok(Some(report)) if json => println!("{}", report.to_json()),
            Ok(Some(report)) => println!("{report}"),
            Ok(None) => println!("{name}: nothing to build on {device}"),
            Err(err) => {
                eprintln!("{name}: {err}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
