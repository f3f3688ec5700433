//! Issue 12, files and inputs: written files get `0666 & !umask` and a replaced file keeps
//! its mode; a save removes the temporary files of killed saves of its path (and only
//! those); a label of `u32::MAX` costs no memory by its value; `fit_with`'s plot path is
//! checked before the first epoch; an `f8` value beyond `f32`'s range is named as such.

use std::path::Path;

use tensorbridge::nalgebra::DMatrix;
use tensorbridge::npy::{self, NpyErrorKind};
use tensorbridge::{Dataset, Device, Error, FitOptions, History};

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}

/// A fresh directory of this module's (named apart from other modules' scratch folders).
fn scratch(name: &str) -> std::path::PathBuf {
    crate::support::scratch(&format!("issue12-{name}"))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A version-1.0 `.npy` file of `descr`, `shape` and raw little-endian `data`.
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(unix)]
mod modes {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// What `std::fs::write` gives a new file in this process: `0666 & !umask`.
    fn expected_new_mode(dir: &Path) -> u32 {
        let probe = dir.join("probe");
        std::fs::write(&probe, b"x").unwrap();
        let m = mode(&probe);
        std::fs::remove_file(&probe).unwrap();
        m
    }

    pub fn new_files_get_the_umask_mode_and_replaced_files_keep_theirs() {
        let dir = scratch("modes");
        let want = expected_new_mode(&dir);
        assert_ne!(want & 0o044, 0, "test setup: a umask that hides group and other reads proves nothing");
        let model = Seed::new(&Device::cpu()).unwrap();
        let ckpt = dir.join("model.safetensors");
        model.save(&ckpt).unwrap();
        assert_eq!(mode(&ckpt), want, "new checkpoint");
        let npy_path = dir.join("m.npy");
        npy::write_matrix(&npy_path, &DMatrix::<f32>::zeros(2, 2)).unwrap();
        assert_eq!(mode(&npy_path), want, "new .npy");
        let svg = dir.join("h.svg");
        History::default().write_svg(&svg).unwrap();
        assert_eq!(mode(&svg), want, "new .svg");

        // Replacing keeps the old file's mode, whatever it is.
        for m in [0o644, 0o640, 0o600, 0o664] {
            for path in [&ckpt, &npy_path, &svg] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
            }
            model.save(&ckpt).unwrap();
            npy::write_matrix(&npy_path, &DMatrix::<f32>::zeros(2, 2)).unwrap();
            History::default().write_svg(&svg).unwrap();
            for path in [&ckpt, &npy_path, &svg] {
                assert_eq!(mode(path), m, "{} replaced over mode {m:o}", path.display());
            }
        }
        assert_eq!(entries(&dir), vec!["h.svg", "m.npy", "model.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The mode follows the umask of the writing process: a child with umask 027 gets 0640.
    pub fn the_mode_follows_the_umask() {
        let dir = scratch("umask");
        let path = dir.join("child.safetensors");
        let child = crate::support::child_process(module_path!().rsplit_once("::").unwrap().0, "umask_child");
        // The same command, started by a shell that sets the umask first.
        let out = std::process::Command::new("sh")
            .args(["-c", "umask 027 && exec \"$0\" \"$@\""])
            .arg(child.get_program())
            .args(child.get_args())
            .env(UMASK_CHILD, &path)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
        assert_eq!(mode(&path), 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

const UMASK_CHILD: &str = "TENSORBRIDGE_TEST_UMASK_CHILD";

/// In the child process (umask 027): save a checkpoint to the path the parent gave.
fn umask_child() {
    let path = std::env::var(UMASK_CHILD).unwrap();
    Seed::new(&Device::cpu()).unwrap().save(path).unwrap();
}

/// (Unix only: elsewhere there are no mode bits to check.)
fn new_files_get_the_umask_mode_and_replaced_files_keep_theirs() {
    #[cfg(unix)]
    modes::new_files_get_the_umask_mode_and_replaced_files_keep_theirs();
}

/// (Unix only.)
fn the_mode_follows_the_umask() {
    #[cfg(unix)]
    modes::the_mode_follows_the_umask();
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn a_save_removes_its_paths_stale_temporaries_only() {
    let dir = scratch("stale");
    let dead = dead_pid();
    let stale = format!(".model.safetensors.tensorbridge-{dead}-0.tmp");
    let stale2 = format!(".model.safetensors.tensorbridge-{dead}-17.tmp");
    // A live process's (pid 1 always runs): could be a concurrent save; kept.
    let live = ".model.safetensors.tensorbridge-1-0.tmp".to_string();
    // Another target's, and files that merely look alike: kept.
    let other = format!(".other.safetensors.tensorbridge-{dead}-0.tmp");
    let unrelated = format!(".model.safetensors.tensorbridge-{dead}-x.tmp");
    // Written two minutes ago, as a save killed earlier left them.
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    for name in [&stale, &stale2, &live, &other, &unrelated] {
        std::fs::write(dir.join(name), vec![0u8; 1 << 20]).unwrap();
        std::fs::File::options().write(true).open(dir.join(name)).unwrap().set_modified(then).unwrap();
    }
    // A file of a dead process written just now may be a live save in another pid
    // namespace sharing the directory: kept until it is a minute old.
    let young = format!(".model.safetensors.tensorbridge-{dead}-99.tmp");
    std::fs::write(dir.join(&young), b"x").unwrap();
    Seed::new(&Device::cpu()).unwrap().save(dir.join("model.safetensors")).unwrap();
    let mut want = vec![live, other, unrelated, young, "model.safetensors".to_string()];
    want.sort();
    if Path::new("/proc/self").exists() {
        assert_eq!(entries(&dir), want);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn a_label_of_u32_max_costs_no_memory_by_its_value() {
    let dir = scratch("labels");
    let features = dir.join("x.npy");
    npy::write_matrix(&features, &DMatrix::<f32>::from_fn(4, 4, |r, c| (r + c) as f32 / 8.0)).unwrap();
    let labels = dir.join("y.npy");
    let data: Vec<u8> = [0u32, 1, u32::MAX, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&labels, npy_bytes("<u4", "(4,)", &data)).unwrap();
    let set = Dataset::from_npy(&features, &labels).unwrap();
    let counts = set.class_counts();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), vec![(0, 1), (1, 2), (u32::MAX, 1)]);
    assert_eq!(set.n_classes(), 1 << 32);
    // Splitting groups rows by the labels present, not by value.
    let (train, test) = set.split_stratified(0.5, 0).unwrap();
    assert_eq!(train.len() + test.len(), 4);
    // Training refuses the label, naming its file and row, before any step.
    let mut model = Seed::new(&Device::cpu()).unwrap();
    match model.fit_with(&set, &[0.1], 0, FitOptions::new().progress(false)) {
        Err(Error::LabelsOutOfRange { file: Some(file), classes: 2, count: 1, rows, .. }) => {
            assert_eq!((file, rows), (labels.clone(), vec![(2, u32::MAX)]));
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn a_plot_path_in_a_missing_directory_fails_before_the_first_epoch() {
    let dir = scratch("plot");
    let set = Dataset::new(DMatrix::from_fn(4, 4, |r, c| (r * c) as f32 / 9.0), vec![0, 1, 0, 1]).unwrap();
    let mut model = Seed::new(&Device::cpu()).unwrap();
    let before = model.params().unwrap();
    let mut epochs = 0;
    let result = model.fit_with(
        &set,
        &[0.1, 0.1],
        0,
        FitOptions::new().progress(false).plot_svg(dir.join("missing").join("curves.svg")).on_epoch(|_| epochs += 1),
    );
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    assert_eq!(epochs, 0, "no epoch ran");
    assert_eq!(model.params().unwrap(), before);
    // A directory as the plot path is refused too; nothing is left behind.
    let result = model.fit_with(&set, &[0.1], 0, FitOptions::new().progress(false).plot_svg(&dir));
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    // A good path: trained, then written.
    let svg = dir.join("curves.svg");
    let history = model.fit_with(&set, &[0.1], 0, FitOptions::new().progress(false).plot_svg(&svg)).unwrap();
    assert_eq!(history.epochs.len(), 1);
    assert_eq!(entries(&dir), vec!["curves.svg"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn an_f64_value_beyond_f32_range_is_named_as_such() {
    let dir = scratch("f64");
    let path = dir.join("x.npy");
    let data: Vec<u8> = [1.0f64, 2.0, -1e300, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = npy_bytes("<f8", "(2, 2)", &data);
    std::fs::write(&path, &bytes).unwrap();
    let header_end = (bytes.len() - data.len()) as u64;
    match npy::read_matrix(&path) {
        Err(
            err @ Error::Npy { offset, kind: NpyErrorKind::BeyondF32Range { index: 2, row: 1, column: 0, .. }, .. },
        ) => {
            assert_eq!(offset, header_end + 16);
            let text = err.to_string();
            assert!(text.contains("at row 1, column 0"), "{text}");
            assert!(text.contains("beyond f32 range") && text.contains("-1e300"), "{text}");
            assert!(!text.contains("inf"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // A real infinity is still read (and refused later as non-finite, by name).
    let data: Vec<u8> = [1.0f64, 2.0, f64::INFINITY, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, npy_bytes("<f8", "(2, 2)", &data)).unwrap();
    assert!(npy::read_matrix(&path).unwrap()[(1, 0)].is_infinite());
    // f8 values that fit (even ones that round to f32's largest) are read.
    let data: Vec<u8> = [1.0f64, f64::from(f32::MAX), -1e-300, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, npy_bytes("<f8", "(2, 2)", &data)).unwrap();
    assert_eq!(npy::read_matrix(&path).unwrap()[(0, 1)], f32::MAX);
    std::fs::remove_dir_all(&dir).unwrap();
}

tensorbridge::model! {
    /// Three classes, two features, in f16: for the data errors of a loaded dataset.
    pub struct Three16 { batch: 4, features: 2, classes: 3, storage: f16 }
}

/// A features file (`rows x 2`, `f4`) and a labels file (`i4`) in `dir`.
fn write_dataset(dir: &Path, features: &[f32], labels: &[i32]) -> (std::path::PathBuf, std::path::PathBuf) {
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    let data: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&x, npy_bytes("<f4", &format!("({}, 2)", features.len() / 2), &data)).unwrap();
    let data: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&y, npy_bytes("<i4", &format!("({},)", labels.len()), &data)).unwrap();
    (x, y)
}

/// Data errors name the file, and rows and columns as the file has them (not a flat
/// index, not the row of a shuffled split): labels the model has no class for (how many,
/// and the first few), NaN features, values f16 cannot hold, files of different lengths.
fn data_errors_name_the_file_row_and_column() {
    let dir = scratch("data-errors");
    // Ten rows; the labels of rows 3, 6, 7 and 9 are not classes of a 3-class model.
    let features: Vec<f32> = (0..20).map(|k| k as f32 * 0.1).collect();
    let (x, y) = write_dataset(&dir, &features, &[0, 1, 2, 5, 0, 1, 3, 4, 2, 9]);
    let data = Dataset::from_npy(&x, &y).unwrap();
    assert_eq!((data.features_file(), data.labels_file()), (Some(x.as_path()), Some(y.as_path())));
    // A shuffled split: its rows are not the file's, the error's are.
    let (train, _) = data.shuffled(5).split_stratified(0.5, 3).unwrap();
    match train.batches::<Three16>().err() {
        Some(err @ Error::LabelsOutOfRange { .. }) => {
            let Error::LabelsOutOfRange { file, model, classes, count, rows } = &err else { unreachable!() };
            assert_eq!((file.as_deref(), *model, *classes), (Some(y.as_path()), "Three16", 3));
            // Which of the four the split kept: each listed row is a bad row of the file.
            assert!(*count >= 1 && *count == rows.len(), "{err}");
            let bad = [(3, 5), (6, 3), (7, 4), (9, 9)];
            assert!(rows.iter().all(|r| bad.contains(r)), "{err}");
            assert!(rows.windows(2).all(|w| w[0] < w[1]), "in the file's order: {err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("labels out of range in {}: `Three16` has 3 classes", y.display())),
                "{text}"
            );
        }
        other => panic!("expected LabelsOutOfRange, got {other:?}"),
    }
    // All of them, loaded as is: the count, and the first rows (at most five).
    let err = data.check_fits::<Three16>("the data").unwrap_err();
    let text = err.to_string();
    assert!(
        text.ends_with(
            "but 4 rows hold other labels: row 3 (label 5), row 6 (label 3), row 7 (label 4), row 9 (label 9)"
        ),
        "{text}"
    );
    let many: Vec<i32> = (0..10).map(|k| if k == 0 { 0 } else { 3 + k }).collect();
    let (x, y) = write_dataset(&dir, &features, &many);
    let text = Dataset::from_npy(&x, &y).unwrap().check_fits::<Three16>("the data").unwrap_err().to_string();
    assert!(text.contains("but 9 rows hold other labels: row 1 (label 4), row 2 (label 5)"), "{text}");
    assert!(text.ends_with("row 5 (label 8), ..."), "{text}");

    // A NaN feature: the file, its row and column, and the byte offset.
    let mut with_nan = features.clone();
    with_nan[2 * 7 + 1] = f32::NAN; // row 7, column 1
    let (x, y) = write_dataset(&dir, &with_nan, &[0; 10]);
    match Dataset::from_npy(&x, &y) {
        Err(err @ Error::Npy { kind: NpyErrorKind::NonFinite { row: 7, column: 1, .. }, .. }) => {
            let Error::Npy { path, offset, .. } = &err else { unreachable!() };
            assert_eq!(path, &x);
            let data_start = std::fs::metadata(&x).unwrap().len() - 4 * 20;
            assert_eq!(*offset, data_start + 4 * 15, "the 16th value of the data");
            assert!(err.to_string().contains("value NaN at row 7, column 1 is not finite"), "{err}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }

    // A value f16 storage cannot hold, in a shuffled dataset: the file and the file's row.
    let mut huge = features.clone();
    huge[2 * 4] = 1e6; // row 4, column 0
    let (x, y) = write_dataset(&dir, &huge, &[0; 10]);
    match Dataset::from_npy(&x, &y).unwrap().shuffled(1).batches::<Three16>().err() {
        Some(Error::StorageOverflow { what, row: 4, column: 0, .. }) => {
            assert_eq!(what, format!("features of {}", x.display()));
        }
        other => panic!("expected StorageOverflow, got {other:?}"),
    }

    // Files of different lengths: both are named.
    let (x, y) = write_dataset(&dir, &features, &[0; 9]);
    match Dataset::from_npy(&x, &y) {
        Err(err @ Error::ShapeMismatch { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&y.display().to_string()) && text.contains(&x.display().to_string()), "{text}");
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

crate::tests! {
    plain new_files_get_the_umask_mode_and_replaced_files_keep_theirs,
    plain the_mode_follows_the_umask,
    child(UMASK_CHILD) umask_child,
    plain a_save_removes_its_paths_stale_temporaries_only,
    plain a_label_of_u32_max_costs_no_memory_by_its_value,
    plain a_plot_path_in_a_missing_directory_fails_before_the_first_epoch,
    plain an_f64_value_beyond_f32_range_is_named_as_such,
    plain data_errors_name_the_file_row_and_column,
}
