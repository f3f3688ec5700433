//! Checkpoints: [`Engine::save`] and [`Engine::load`] in the
//! [safetensors](https://huggingface.co/docs/safetensors) format, readable by
//! `safetensors.numpy.load_file` and PyTorch.
//!
//! One tensor per parameter, named as the fields of the model's `Params`: `w0`, `b0`, `w1`,
//! `b1`, ...; weights have shape `[in, out]` and biases `[out]`, all `F32` (`F16` for a model
//! declared with `storage: f16`; loading checks the dtype against the declaration), little-endian,
//! row-major (C order) as safetensors requires — nalgebra stores `[in x out]` column-major,
//! so saving transposes the layout (not the matrix) and loading transposes it back. The
//! header's `__metadata__` holds one entry, `"tensorbridge": "<model>: <layer widths>"`, for
//! people reading the file; the same parameters always give the same bytes.
//!
//! Saving is atomic: the bytes go to a temporary file in the same directory, which is
//! flushed to disk and then renamed over the target, so a crash or a failure at any point
//! leaves either the old checkpoint or the new one at the path, never a mixture. The file
//! gets the permissions `std::fs::write` would give it (`0666 & !umask` on unix), or keeps
//! those of the file it replaces. A save never writes what [`Engine::load`] would refuse
//! (a NaN or infinite parameter). The temporary file is `.<name>.tensorbridge-<pid>-<n>.tmp`;
//! a save removes those of its path whose process is gone (a save that was killed) and that
//! are more than a minute old.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::backend::layer_slots;
use crate::device::Device;
use crate::engine::{check_params, Engine};
use crate::error::{Error, Result};
use crate::model::{Element, Model, Params, StorageElement};

/// Why a checkpoint was refused. Carried by [`Error::Checkpoint`] with the file's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// Not a valid safetensors file.
    #[error("not a valid safetensors file: {reason}")]
    Format {
        /// What the safetensors parser reported.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error("tensor '{name}' is missing: {model} (layers {layers}) needs {expected}")]
    MissingTensor {
        /// The missing tensor.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The model's layer widths, e.g. `4 -> 8 -> 3`.
        layers: String,
        /// Every tensor the model needs.
        expected: String,
    },
    /// A tensor the model does not have (e.g. a checkpoint of a deeper model).
    #[error("unexpected tensor '{name}': {model} (layers {layers}) has only {expected}")]
    UnexpectedTensor {
        /// The tensor found.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The model's layer widths.
        layers: String,
        /// Every tensor the model has.
        expected: String,
    },
    /// A tensor of another element type than the model's storage (`F32`, or `F16` for
    /// `storage: f16`).
    #[error("tensor '{name}' has dtype {found}, but the model stores {expected} (declared `storage: {storage}`)")]
    WrongDtype {
        /// The tensor.
        name: String,
        /// The dtype found.
        found: String,
        /// The dtype the model needs: `F32` or `F16`.
        expected: &'static str,
        /// The model's declared storage, `f32` or `f16`.
        storage: &'static str,
    },
    /// A tensor whose shape differs from the declaration.
    #[error("tensor '{name}' has shape {found:?}, but {model} declares {expected:?}")]
    WrongShape {
        /// The tensor.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The declared shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
}

impl<M: Model> Engine<M> {
    /// Saves the parameters to `path` as a safetensors file (see the
    /// [module docs](crate::checkpoint) for the layout), atomically replacing any file there.
    /// Costs one device -> host copy of the parameters and one file write with `fsync`.
    ///
    /// The file gets `0666 & !umask` (as `std::fs::write` or `numpy.save` would give it);
    /// a file replaced keeps its permissions. Temporary files left by killed saves of the
    /// same path are removed (see the module docs).
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite (what [`Engine::load`] would
    /// refuse), before the file is touched; [`Error::Io`] if the file cannot be written;
    /// the old file, if any, is then intact.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        self.params()?.write_flat(&mut flat);
        check_params(M::LAYERS, &flat)?;
        let bytes = to_safetensors::<M>(&flat).map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            kind: CheckpointErrorKind::Format { reason },
        })?;
        write_atomically(path, |file| file.write_all(&bytes))
    }

    /// Creates the model on `device` with the parameters saved at `path` by [`Engine::save`]
    /// (or by any program that writes the same tensor names and shapes). Generated models
    /// offer this as `Name::load(&device, path)`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Checkpoint`] if it is not a
    /// safetensors file or a tensor is missing, unexpected, of another dtype than the
    /// model's storage (`F32`, or `F16` for `storage: f16`), or shaped otherwise than the
    /// declaration; [`Error::NonFinite`] if a parameter is NaN or infinite.
    pub fn load(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let flat =
            from_safetensors::<M>(&bytes).map_err(|kind| Error::Checkpoint { path: path.to_path_buf(), kind })?;
        Engine::with_params(device, &M::Params::from_flat(&flat))
    }
}

/// `(name, shape, start of the values in the flat layout)` of every tensor, in order.
fn tensors_of<M: Model>() -> Vec<(String, Vec<usize>, usize)> {
    layer_slots(M::LAYERS)
        .enumerate()
        .flat_map(|(l, s)| [(format!("w{l}"), vec![s.fan_in, s.fan_out], s.w), (format!("b{l}"), vec![s.fan_out], s.b)])
        .collect()
}

fn layers_text<M: Model>() -> String {
    M::LAYERS.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" -> ")
}

/// The safetensors bytes of the flat parameters.
/// The safetensors dtype of model `M`'s storage.
fn dtype_of<M: Model>() -> Dtype {
    if M::Storage::IS_F16 {
        Dtype::F16
    } else {
        Dtype::F32
    }
}

fn to_safetensors<M: Model>(flat: &[M::Storage]) -> std::result::Result<Vec<u8>, String> {
    let mut buffers = Vec::new();
    for (name, shape, start) in tensors_of::<M>() {
        let mut bytes = Vec::with_capacity(shape.iter().product::<usize>() * std::mem::size_of::<M::Storage>());
        if let [fan_in, fan_out] = shape[..] {
            // Column-major `w[o * in + i]` -> row-major `[i][o]`.
            for i in 0..fan_in {
                for o in 0..fan_out {
                    flat[start + o * fan_in + i].extend_le_bytes(&mut bytes);
                }
            }
        } else {
            for v in &flat[start..start + shape[0]] {
                v.extend_le_bytes(&mut bytes);
            }
        }
        buffers.push((name, shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(dtype_of::<M>(), shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| e.to_string())?;
    // One entry only: safetensors takes a `HashMap`, whose order would otherwise make the
    // bytes of two saves of the same parameters differ.
    let metadata = HashMap::from([("tensorbridge".to_string(), format!("{}: {}", M::NAME, layers_text::<M>()))]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// The flat parameters from safetensors bytes, every name, dtype and shape checked.
fn from_safetensors<M: Model>(bytes: &[u8]) -> std::result::Result<Vec<M::Storage>, CheckpointErrorKind> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| CheckpointErrorKind::Format { reason: e.to_string() })?;
    let expected = tensors_of::<M>();
    let expected_names = expected.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let mut names = file.names();
    names.sort_unstable();
    for name in names {
        if !expected.iter().any(|(n, _, _)| n == name) {
            return Err(CheckpointErrorKind::UnexpectedTensor {
                name: name.to_string(),
                model: M::NAME,
                layers: layers_text::<M>(),
                expected: expected_names,
            });
        }
    }
    let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
    for (name, shape, start) in &expected {
        let view = file.tensor(name).map_err(|_| CheckpointErrorKind::MissingTensor {
            name: name.clone(),
            model: M::NAME,
            layers: layers_text::<M>(),
            expected: expected_names.clone(),
        })?;
        if view.dtype() != dtype_of::<M>() {
            return Err(CheckpointErrorKind::WrongDtype {
                name: name.clone(),
                found: format!("{:?}", view.dtype()),
                expected: if M::Storage::IS_F16 { "F16" } else { "F32" },
                storage: M::Storage::NAME,
            });
        }
        if view.shape() != shape.as_slice() {
            return Err(CheckpointErrorKind::WrongShape {
                name: name.clone(),
                model: M::NAME,
                expected: shape.clone(),
                found: view.shape().to_vec(),
            });
        }
        // The parser checked that the data holds exactly product(shape) values of the dtype.
        let values = view.data().chunks_exact(std::mem::size_of::<M::Storage>()).map(M::Storage::from_le_slice);
        if let [fan_in, _] = shape[..] {
            // Row-major `[i][o]` (index k = i * out + o) -> column-major `w[o * in + i]`.
            let fan_out = shape[1];
            for (k, v) in values.enumerate() {
                let (i, o) = (k / fan_out, k % fan_out);
                flat[start + o * fan_in + i] = v;
            }
        } else {
            for (k, v) in values.enumerate() {
                flat[start + k] = v;
            }
        }
    }
    Ok(flat)
}

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
