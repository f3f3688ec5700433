//! Writing files safely: [`write_atomically`]. A leaf of the crate's layers (it imports
//! only the error type), shared by `.npy` files, checkpoints and plots.

use std::fs::File;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes a file atomically: `write` fills a temporary file in `path`'s directory, which is
/// flushed to disk and renamed over `path`. On any error the temporary file is removed and
/// `path` is untouched.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |e| Error::io(path, e);
    let mut tmp = tempfile::Builder::new().prefix(".tensorbridge-").suffix(".tmp").tempfile_in(&dir).map_err(io)?;
    write(tmp.as_file_mut()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    // On failure the `PersistError` drops the temporary file, which deletes it.
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable (best effort: not every platform can sync a directory).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
