//! Building a model's program: in-memory reuse per device, then the on-disk binary cache,
//! then the device compiler.
//!
//! # The binary cache
//! Entries live in [`cache_dir`] (`TENSORBRIDGE_CACHE_DIR`, else the user's cache
//! directory + `tensorbridge`), one file per program. The key is the platform, device
//! name, vendor, device and driver versions, build options and the full source (its length
//! and two independent 64-bit hashes); the file stores the whole key text, the binary and a
//! checksum of it. A file whose key text or checksum does not match, or whose binary the
//! driver rejects, is ignored and rebuilt from source, never trusted. An entry is written
//! (to a temporary file, then renamed) only after every kernel was created from the
//! freshly built program, since some drivers compile lazily there. Cache failures never
//! fail a build: the cache is an accelerator, not a dependency.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cl::{Kernel, Program};
use super::platform::ClDevice;
use crate::error::{Error, Result};

/// The environment variable that sets the directory of the OpenCL program-binary cache;
/// an empty value or `off` turns the cache off. Unset, the cache lives in the user's cache
/// directory (`$XDG_CACHE_HOME/tensorbridge`, `~/.cache/tensorbridge`,
/// `~/Library/Caches/tensorbridge`, `%LOCALAPPDATA%\tensorbridge`).
pub const CACHE_DIR_ENV: &str = "TENSORBRIDGE_CACHE_DIR";

const MAGIC: &[u8] = b"TBCLBIN1\n";

/// The directory of the binary cache, or `None` when caching is off
/// (`TENSORBRIDGE_CACHE_DIR` set to an empty string or `off`, or no home directory).
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(value) = std::env::var_os(CACHE_DIR_ENV) {
        let text = value.to_string_lossy();
        if text.trim().is_empty() || text.trim().eq_ignore_ascii_case("off") {
            return None;
        }
        return Some(PathBuf::from(value));
    }
    let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = if cfg!(target_os = "windows") {
        env_dir("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env_dir("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        env_dir("XDG_CACHE_HOME").or_else(|| env_dir("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("tensorbridge"))
}

/// FNV-1a, 64 bits: stable across Rust versions and machines.
fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn sip64(data: &str) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The text that identifies one program on one device and driver.
fn cache_key(device: &ClDevice, source: &str, options: &str) -> String {
    let i = &device.info;
    format!(
        "tensorbridge program cache v1\nplatform: {} | {}\ndevice: {} | {} | {}\ndriver: {}\noptions: {}\nsource: {} bytes, fnv {:016x}, sip {:016x}\n",
        i.platform,
        i.platform_version,
        i.name,
        i.vendor,
        i.version,
        i.driver_version,
        options,
        source.len(),
        fnv64(source.as_bytes()),
        sip64(source)
    )
}

/// The built program for `source` on `device`, with every kernel of `kernels` creatable.
pub(crate) fn build(device: &ClDevice, source: &str, options: &str, kernels: &[&str]) -> Result<Arc<Program>> {
    let key = cache_key(device, source, options);
    if let Some(program) = device.programs.lock().ok().and_then(|memo| memo.get(&key).cloned()) {
        device.counts.from_memory.fetch_add(1, Ordering::Relaxed);
        return Ok(program);
    }
    let file = cache_dir().map(|dir| dir.join(format!("{:016x}.clbin", fnv64(key.as_bytes()))));
    let cached = file.as_deref().and_then(|f| load(device, f, &key, options, kernels));
    let program = match cached {
        Some(program) => {
            device.counts.from_disk.fetch_add(1, Ordering::Relaxed);
            program
        }
        None => {
            let program = build_from_source(device, source, options)?;
            check_kernels(&program, kernels)?;
            device.counts.from_source.fetch_add(1, Ordering::Relaxed);
            if let Some(file) = &file {
                store(&program, file, &key);
            }
            program
        }
    };
    let program = Arc::new(program);
    if let Ok(mut memo) = device.programs.lock() {
        memo.insert(key, Arc::clone(&program));
    }
    Ok(program)
}

/// Compiles `source`; a compiler failure is [`Error::KernelBuild`] with the device's log.
pub(crate) fn build_from_source(device: &ClDevice, source: &str, options: &str) -> Result<Program> {
    let program = Program::from_source(&device.context, source)?;
    program.build(device.id, options).map_err(|(code, log)| Error::KernelBuild {
        device: device.label(),
        log: if log.trim().is_empty() {
            format!(
                "(the driver gave no build log; clBuildProgram returned {})",
                opencl3::error_codes::error_text(code)
            )
        } else {
            log
        },
    })?;
    Ok(program)
}

fn check_kernels(program: &Program, kernels: &[&str]) -> Result<()> {
    for name in kernels {
        Kernel::new(program, name)?;
    }
    Ok(())
}

/// A program from a cache file, or `None` if the file is missing, stale, corrupt or
/// rejected by the driver.
fn load(device: &ClDevice, file: &Path, key: &str, options: &str, kernels: &[&str]) -> Option<Program> {
    let data = fs::read(file).ok()?;
    let binary = parse(&data, key)?;
    let program = Program::from_binary(&device.context, device.id, binary).ok()?;
    program.build(device.id, options).ok()?;
    check_kernels(&program, kernels).ok()?;
    Some(program)
}

/// The binary of a well-formed entry whose key is `key`.
fn parse<'a>(data: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let rest = data.strip_prefix(MAGIC)?;
    let (key_len, rest) = take_u64(rest)?;
    let key_len = usize::try_from(key_len).ok()?;
    if rest.len() < key_len || &rest[..key_len] != key.as_bytes() {
        return None;
    }
    let rest = &rest[key_len..];
    let (bin_len, rest) = take_u64(rest)?;
    let bin_len = usize::try_from(bin_len).ok()?;
    if bin_len == 0 || rest.len() != bin_len + 8 {
        return None;
    }
    let (binary, tail) = rest.split_at(bin_len);
    let (sum, _) = take_u64(tail)?;
    (sum == fnv64(binary)).then_some(binary)
}

fn take_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    if data.len() < 8 {
        return None;
    }
    let (head, rest) = data.split_at(8);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(head);
    Some((u64::from_le_bytes(bytes), rest))
}

/// Writes the entry for `program`; failures are ignored (see the module docs).
fn store(program: &Program, file: &Path, key: &str) {
    let Ok(binary) = program.binary() else {
        return;
    };
    let mut data = Vec::with_capacity(MAGIC.len() + key.len() + binary.len() + 24);
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&(key.len() as u64).to_le_bytes());
    data.extend_from_slice(key.as_bytes());
    data.extend_from_slice(&(binary.len() as u64).to_le_bytes());
    data.extend_from_slice(&binary);
    data.extend_from_slice(&fnv64(&binary).to_le_bytes());
    let Some(dir) = file.parent() else {
        return;
    };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_all()));
    if written.is_err() || fs::rename(&tmp, file).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_corrupt_and_foreign_entries() {
        let key = "k";
        let binary = b"binary!";
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&1u64.to_le_bytes());
        data.extend_from_slice(key.as_bytes());
        data.extend_from_slice(&(binary.len() as u64).to_le_bytes());
        data.extend_from_slice(binary);
        data.extend_from_slice(&fnv64(binary).to_le_bytes());
        assert_eq!(parse(&data, key), Some(&binary[..]));
        assert_eq!(parse(&data, "other key"), None);
        let mut flipped = data.clone();
        let at = MAGIC.len() + 8 + 1 + 8 + 2;
        flipped[at] ^= 1;
        assert_eq!(parse(&flipped, key), None);
        assert_eq!(parse(&data[..data.len() - 1], key), None);
        assert_eq!(parse(b"garbage", key), None);
    }

    #[test]
    fn fnv64_matches_the_published_vectors() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
