//! The program-binary cache across processes: a cold start compiles and writes an entry,
//! a warm start loads it, a corrupt entry is rebuilt (and rewritten), never trusted.
//! Each start is a child process with its own `TENSORBRIDGE_CACHE_DIR`.

use std::time::Instant;

use crate::support::{child_process, child_stdout, opencl_device, scratch, tagged};
use tensorbridge::Device;

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}

const CHILD: &str = "TENSORBRIDGE_CACHE_CHILD";

/// In the child: create the model, print where its program came from and how long it took.
fn cache_child() {
    let device = opencl_device();
    let start = Instant::now();
    let mut model = Seed::new(&device).unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let x = tensorbridge::matrix![1.0, 0.0, 0.0, 0.0; 0.0, 1.0, 0.0, 0.0];
    model.train_step(&x, &tensorbridge::vector![0, 1], 0.1).unwrap();
    let (source, disk, _) = device.__program_origins();
    println!("ORIGIN source={source} disk={disk} ms={ms:.1}");
}

fn start(dir: &std::path::Path) -> (usize, usize, f64) {
    let mut child = child_process(module_path!(), "cache_child");
    let text = child_stdout(child.env(CHILD, "1").env("TENSORBRIDGE_CACHE_DIR", dir), "child failed");
    let line = tagged(&text, "ORIGIN").unwrap_or_else(|| panic!("no ORIGIN: {text}"));
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<f64>().ok()).unwrap()
    };
    (field("source=") as usize, field("disk=") as usize, field("ms="))
}

/// (The device itself is opened by each child process.)
fn warm_starts_load_the_binary_and_corrupt_entries_are_rebuilt(_device: &Device) {
    let dir = scratch("kernel-cache");
    let (source, disk, cold) = start(&dir);
    assert_eq!((source, disk), (1, 0), "cold start compiles");
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(entries.len(), 1, "one entry written: {entries:?}");
    let (source, disk, warm) = start(&dir);
    assert_eq!((source, disk), (0, 1), "warm start loads the entry");
    crate::test_log!("model creation: cold {cold:.1} ms, warm {warm:.1} ms");

    // Corrupt the binary (keep the length): rebuilt from source, then rewritten.
    let mut data = std::fs::read(&entries[0]).unwrap();
    let at = data.len() - 20;
    data[at] ^= 0xFF;
    std::fs::write(&entries[0], &data).unwrap();
    assert_eq!(start(&dir).0, 1, "a corrupt entry is rebuilt");
    assert_eq!(start(&dir).1, 1, "and the rewritten entry loads");
    // Truncated to nothing: the same.
    std::fs::write(&entries[0], b"").unwrap();
    assert_eq!(start(&dir).0, 1);
}

crate::tests! {
    child(CHILD) cache_child,
    opencl warm_starts_load_the_binary_and_corrupt_entries_are_rebuilt,
}
