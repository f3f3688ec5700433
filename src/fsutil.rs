//! Writing files safely: [`write_atomically`]. A leaf of the crate's layers (it imports
//! only the error type), shared by `.npy` files, checkpoints and plots.

use std::fs::File;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes a file atomically: `write` fills a temporary file in `path`'s directory, which is
/// flushed to disk and renamed over `path`. On any error the temporary file is removed and
/// `path` is untouched.
///
/// Permissions: a new file gets `0666 & !umask`, as `std::fs::write`, `numpy.save` and
/// Python's `safetensors` give it; a file replaced keeps its permission bits (not its
/// owner, which only a privileged process could keep).
///
/// Temporary files are named `.<file name>.tensorbridge-<pid>-<n>.tmp`. Before writing,
/// a save removes the temporary files of the same target left by earlier saves that were
/// killed: those whose process is no longer alive and that were last modified more than a
/// minute ago (on Linux, where `/proc` tells whether a process lives; elsewhere, those
/// last modified more than an hour ago). A temporary file of a live process, such as a
/// concurrent save of the same path, is never removed; nor is one of this process.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |e| Error::io(path, e);
    let name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path does not name a file")))?;
    let prefix = temporary_prefix(name);
    remove_stale_temporaries(&dir, &prefix);
    let (tmp_path, mut file) = create_temporary(&dir, &prefix).map_err(io)?;
    let tmp = RemoveOnDrop(Some(tmp_path));
    write(&mut file).map_err(io)?;
    keep_mode(path, &file).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    if let Some(tmp_path) = tmp.0.as_deref() {
        std::fs::rename(tmp_path, path).map_err(io)?;
    }
    tmp.disarm();
    // Make the rename itself durable (best effort: not every platform can sync a directory).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks, before long work, that [`write_atomically`] could write `path`: its directory
/// exists and takes a new file (one is created and removed), and `path` is not a
/// directory. Touches nothing at `path`.
#[cfg(feature = "train")]
pub(crate) fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |e| Error::io(path, e);
    let name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path does not name a file")))?;
    if path.is_dir() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is a directory")));
    }
    let (tmp, file) = create_temporary(&dir, &temporary_prefix(name)).map_err(io)?;
    drop(file);
    std::fs::remove_file(&tmp).map_err(io)
}

/// `.<file name>.tensorbridge-`: the start of every temporary file of a target.
fn temporary_prefix(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tensorbridge-");
    prefix
}

/// Creates `<dir>/<prefix><pid>-<n>.tmp` (a name no other file has), readable and writable
/// by everyone the umask allows (`0666 & !umask` on unix).
fn create_temporary(dir: &Path, prefix: &std::ffi::OsStr) -> std::io::Result<(PathBuf, File)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = prefix.to_os_string();
        name.push(format!("{pid}-{n}.tmp"));
        let tmp = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o666);
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // Left by an earlier process of the same pid: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// When `path` is an existing file, gives `file` its permissions (else `file` keeps the
/// `0666 & !umask` it was created with).
fn keep_mode(path: &Path, file: &File) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => file.set_permissions(meta.permissions()),
        _ => Ok(()),
    }
}

/// Removes the temporary files `<prefix><pid>-<n>.tmp` in `dir` whose process is gone
/// (see [`write_atomically`]). Best effort: a file that cannot be listed or removed stays.
fn remove_stale_temporaries(dir: &Path, prefix: &std::ffi::OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix) else { continue };
        let Some(pid) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if pid != std::process::id() && process_gone(pid, &entry) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid`, which wrote the temporary file `entry`, is gone: on Linux, it has
/// no `/proc/<pid>` and the file was last modified more than a minute ago (a process in
/// another pid namespace sharing the directory is invisible in `/proc`, but a live save
/// keeps its file younger than that); elsewhere, the file was last modified more than an
/// hour ago.
fn process_gone(pid: u32, entry: &std::fs::DirEntry) -> bool {
    let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
    let older_than = |secs| age.is_some_and(|age| age > std::time::Duration::from_secs(secs));
    let proc = Path::new("/proc");
    if cfg!(target_os = "linux") && proc.join("self").exists() {
        return !proc.join(pid.to_string()).exists() && older_than(60);
    }
    older_than(3600)
}

/// Removes the file at its path when dropped, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tensorbridge-ckpt-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn failure_mid_write_leaves_the_old_file_and_no_temporary() {
        let dir = scratch("midwrite");
        let path = dir.join("model.safetensors");
        std::fs::write(&path, b"old contents").unwrap();
        let result = write_atomically(&path, |f| {
            f.write_all(b"half of the new")?;
            Err(std::io::Error::other("injected failure"))
        });
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old contents");
        assert_eq!(entries(&dir), vec!["model.safetensors".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_rename_leaves_no_temporary() {
        let dir = scratch("rename");
        // The target is a non-empty directory: the rename fails after the write succeeded.
        let path = dir.join("occupied");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        let result = write_atomically(&path, |f| f.write_all(b"new"));
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
        assert_eq!(entries(&dir), vec!["occupied".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn success_replaces_the_file() {
        let dir = scratch("ok");
        let path = dir.join("f.bin");
        std::fs::write(&path, b"old").unwrap();
        write_atomically(&path, |f| f.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(&dir), vec!["f.bin".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
