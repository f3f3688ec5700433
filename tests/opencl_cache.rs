//! The program-binary cache across processes: a cold start compiles and writes an entry,
//! a warm start loads it, a corrupt entry is rebuilt (and rewritten), never trusted.
//! Each start is a child process with its own `TENSORBRIDGE_CACHE_DIR`.

mod opencl_common;

use std::process::Command;
use std::time::Instant;

use opencl_common::opencl;

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}

const CHILD: &str = "TENSORBRIDGE_CACHE_CHILD";

/// In the child: create the model, print where its program came from and how long it took.
#[test]
fn cache_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let Some(device) = opencl() else { panic!("no device in the child") };
    let start = Instant::now();
    let mut model = Seed::new(&device).unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let x = tensorbridge::nalgebra::matrix![1.0, 0.0, 0.0, 0.0; 0.0, 1.0, 0.0, 0.0];
    model.train_step(&x, &tensorbridge::nalgebra::vector![0, 1], 0.1).unwrap();
    let (source, disk, _) = device.__program_origins();
    println!("ORIGIN source={source} disk={disk} ms={ms:.1}");
}

fn start(dir: &std::path::Path) -> (usize, usize, f64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["cache_child", "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("TENSORBRIDGE_CACHE_DIR", dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("ORIGIN")).unwrap_or_else(|| panic!("no ORIGIN line: {text}"));
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<f64>().ok()).unwrap()
    };
    (field("source=") as usize, field("disk=") as usize, field("ms="))
}

#[test]
fn warm_starts_load_the_binary_and_corrupt_entries_are_rebuilt() {
    if std::env::var_os(CHILD).is_some() || opencl().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (source, disk, cold) = start(dir.path());
    assert_eq!((source, disk), (1, 0), "cold start compiles");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(entries.len(), 1, "one entry written: {entries:?}");
    let (source, disk, warm) = start(dir.path());
    assert_eq!((source, disk), (0, 1), "warm start loads the entry");
    eprintln!("model creation: cold {cold:.1} ms, warm {warm:.1} ms");

    // Corrupt the binary (keep the length): rebuilt from source, then rewritten.
    let mut data = std::fs::read(&entries[0]).unwrap();
    let at = data.len() - 20;
    data[at] ^= 0xFF;
    std::fs::write(&entries[0], &data).unwrap();
    assert_eq!(start(dir.path()).0, 1, "a corrupt entry is rebuilt");
    assert_eq!(start(dir.path()).1, 1, "and the rewritten entry loads");
    // Truncated to nothing: the same.
    std::fs::write(&entries[0], b"").unwrap();
    assert_eq!(start(dir.path()).0, 1);
}
