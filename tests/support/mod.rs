//! The one home of the integration tests' support: the harness (which tests run on which
//! device, and which are skipped, visibly, for lack of OpenCL, NumPy or `unshare`), scratch
//! directories, the repository's data, NumPy, and number comparisons.
//!
//! Every test module ends with a [`tests!`](crate::tests) list. A `device` test is one body,
//! `fn(&Device)`, run once on the CPU backend (`cpu::<module>::<name>`) and once on OpenCL
//! (`opencl::<module>::<name>`). A trial that cannot run here is listed as *ignored*, with the
//! reason in its name (`... (skipped: no OpenCL device)`), so the summary a user sees counts
//! it; `TENSORBRIDGE_REQUIRE_OPENCL=1` / `TENSORBRIDGE_REQUIRE_NUMPY=1` run it anyway, and it
//! fails saying what is missing.
//!
//! The harness gives the whole process (and the child processes that tests start, which
//! inherit its environment) one temporary directory, removed at the end: scratch files, the
//! kernel-binary cache (`TENSORBRIDGE_CACHE_DIR`, unless set) and PoCL's cache
//! (`POCL_CACHE_DIR`, unless set) live there, never in the user's home.
#![allow(dead_code)]

pub mod accuracy;

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Failed, Trial};
use tensorbridge::nalgebra::SMatrix;
use tensorbridge::{Device, Element, KernelPath, Params, StorageElement};

/// Lists a module's tests, each as `KIND name` (see [`Test`]'s constructors for the kinds):
/// `crate::tests! { plain a, device b, numpy c, child(ENV) d }`.
#[macro_export]
macro_rules! tests {
    ($($kind:ident $(($arg:expr))? $name:ident),* $(,)?) => {
        pub const TESTS: &[$crate::support::Test] =
            &[$($crate::support::Test::$kind(module_path!(), stringify!($name), $name $(, $arg)?)),*];
    };
}

/// The variable that makes tests print what they measured along the way (accuracies,
/// error bounds, timings): `TENSORBRIDGE_TEST_LOG=1`. Unset, a passing run prints only the
/// harness's lines.
pub const LOG_VAR: &str = "TENSORBRIDGE_TEST_LOG";

/// Whether `TENSORBRIDGE_TEST_LOG=1`.
pub fn logging() -> bool {
    required(LOG_VAR)
}

/// `eprintln!` when `TENSORBRIDGE_TEST_LOG=1`, else nothing: for the figures a test
/// measures, which a passing run keeps quiet.
#[macro_export]
macro_rules! test_log {
    ($($arg:tt)*) => {
        if $crate::support::logging() {
            eprintln!($($arg)*);
        }
    };
}

/// What a test body takes.
#[derive(Clone, Copy)]
pub enum Body {
    /// Runs once, as is.
    Plain(fn()),
    /// Runs once per device it is listed for, given that device.
    OnDevice(fn(&Device)),
}

/// Where a test runs and what it needs.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// Anywhere.
    Plain,
    /// Needs Python with NumPy (`TENSORBRIDGE_PYTHON`, else `python3`).
    NumPy,
    /// Needs Python with NumPy and onnxruntime (`TENSORBRIDGE_PYTHON`, else `python3`).
    OnnxRuntime,
    /// Needs root, `unshare` and `ldconfig` (it hides libOpenCL in a mount namespace).
    Unshare,
    /// Once on the CPU backend and once on OpenCL.
    EveryDevice,
    /// On OpenCL only (it is about the OpenCL backend itself).
    OpenClOnly,
    /// A child process's half of a test: listed only when the variable is set.
    Child(&'static str),
}

/// One test as a module lists it.
#[derive(Clone, Copy)]
pub struct Test {
    pub module: &'static str,
    pub name: &'static str,
    pub body: Body,
    pub kind: Kind,
}

impl Test {
    /// Runs anywhere.
    pub const fn plain(module: &'static str, name: &'static str, f: fn()) -> Test {
        Test { module, name, body: Body::Plain(f), kind: Kind::Plain }
    }
    /// Needs Python with NumPy (`TENSORBRIDGE_PYTHON`, else `python3`): skipped (ignored)
    /// without it.
    pub const fn numpy(module: &'static str, name: &'static str, f: fn()) -> Test {
        Test { module, name, body: Body::Plain(f), kind: Kind::NumPy }
    }
    /// Needs Python with NumPy and onnxruntime: skipped (ignored) without them.
    pub const fn onnxruntime(module: &'static str, name: &'static str, f: fn()) -> Test {
        Test { module, name, body: Body::Plain(f), kind: Kind::OnnxRuntime }
    }
    /// Needs root, `unshare` and `ldconfig`: skipped (ignored) without them.
    pub const fn unshare(module: &'static str, name: &'static str, f: fn()) -> Test {
        Test { module, name, body: Body::Plain(f), kind: Kind::Unshare }
    }
    /// One body, run on the CPU backend and on OpenCL (skipped there without a device).
    pub const fn device(module: &'static str, name: &'static str, f: fn(&Device)) -> Test {
        Test { module, name, body: Body::OnDevice(f), kind: Kind::EveryDevice }
    }
    /// On OpenCL only: skipped (ignored) without a device.
    pub const fn opencl(module: &'static str, name: &'static str, f: fn(&Device)) -> Test {
        Test { module, name, body: Body::OnDevice(f), kind: Kind::OpenClOnly }
    }
    /// The half of a test that runs in a child process started with `var` set.
    pub const fn child(module: &'static str, name: &'static str, f: fn(), var: &'static str) -> Test {
        Test { module, name, body: Body::Plain(f), kind: Kind::Child(var) }
    }

    /// `<module>::<name>` without the crate's name.
    pub fn path(&self) -> String {
        trial_name(self.module, self.name)
    }
}

/// The full name of a plain test (`<module>::<name>`, `module` as `module_path!()` gives
/// it), as child processes select it with `--exact`.
pub fn trial_name(module: &str, name: &str) -> String {
    let module = module.split_once("::").map_or(module, |(_, m)| m);
    format!("{module}::{name}")
}

/// Why a trial cannot run here, and whether that is a failure (required) or a skip.
type Missing = (String, bool);

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.trim() == "1")
}

/// Whether the OpenCL device can be opened here, or why not.
fn opencl_status() -> Result<(), String> {
    Device::opencl().map(drop).map_err(|e| e.to_string())
}

/// The variable naming the Python interpreter the NumPy tests run (a path, or a command
/// on `PATH`), for a NumPy that lives in a virtual environment; `python3` when unset.
pub const PYTHON_VAR: &str = "TENSORBRIDGE_PYTHON";

/// The Python interpreter the tests run: `TENSORBRIDGE_PYTHON`, else `python3`.
pub fn python_program() -> String {
    std::env::var(PYTHON_VAR).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "python3".to_string())
}

/// Whether the Python of [`python_program`] imports NumPy here, or why not (the reason
/// names the interpreter and the variable that chooses another).
fn numpy_status() -> Result<(), String> {
    python_status("numpy", "numpy")
}

/// Whether the Python of [`python_program`] imports `modules` (`"numpy, onnxruntime"`), or
/// why not; the reason names the interpreter, the variable that chooses another, and what
/// to `pip install`.
fn python_status(modules: &str, packages: &str) -> Result<(), String> {
    let program = python_program();
    let hint = format!("set {PYTHON_VAR} to a Python that has it, or pip install {packages}");
    match Command::new(&program).args(["-c", &format!("import {modules}")]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            Err(format!("no {modules} in `{program}` ({hint}): {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
        Err(err) => Err(format!("no Python `{program}` ({hint}): {err}")),
    }
}

/// Whether this process may hide libOpenCL in a mount namespace (root, `unshare`,
/// `ldconfig`), or why not.
fn unshare_status() -> Result<(), String> {
    let works = |cmd: &str, args: &[&str]| Command::new(cmd).args(args).output().is_ok_and(|o| o.status.success());
    if !works("ldconfig", &["-p"]) {
        return Err("no ldconfig".into());
    }
    if !works("unshare", &["-m", "true"]) {
        return Err("unshare -m fails (needs root and unshare)".into());
    }
    Ok(())
}

/// The OpenCL device (each trial opens its own, as a user's program would).
pub fn opencl_device() -> Device {
    Device::opencl().unwrap_or_else(|err| panic!("no OpenCL device: {err}"))
}

/// The device as found (the automatic kernel choice) and, on OpenCL, forced onto the tiled
/// kernels too.
pub fn paths(device: &Device) -> Vec<Device> {
    if device.is_cpu() {
        vec![device.clone()]
    } else {
        vec![device.clone(), device.with_kernel_path(KernelPath::Tiled)]
    }
}

/// The process's temporary directory, set up by [`harness`] (or inherited from the parent
/// process's harness through `TENSORBRIDGE_TEST_ROOT`).
pub fn root() -> PathBuf {
    PathBuf::from(std::env::var_os(ROOT_VAR).expect("the harness sets TENSORBRIDGE_TEST_ROOT"))
}

const ROOT_VAR: &str = "TENSORBRIDGE_TEST_ROOT";

/// A fresh, empty directory for one test, inside the process's temporary directory. Each
/// call gets a directory of its own (numbered), so the `cpu::` and `opencl::` runs of one
/// test body, which run at the same time, never share one.
pub fn scratch(name: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root().join("scratch").join(format!("{name}-{}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The repository's root (this suite is built by the `xtests` member, one level down).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtests sits in the repository").to_path_buf()
}

/// A file of the repository's `data/` folder.
pub fn data(name: &str) -> PathBuf {
    repo().join("data").join(name)
}

/// Runs `<python> -c script args...` (the interpreter of [`python_program`]) and returns
/// its standard output; panics with its standard error if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let program = python_program();
    let out = Command::new(&program).arg("-c").arg(script).args(args).output().expect("run Python");
    assert!(out.status.success(), "{program} failed:\n{}\nscript:\n{script}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("Python printed UTF-8")
}

/// This test binary run again as a child process, selecting one test by its full name.
pub fn child_process(module: &str, name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args([trial_name(module, name).as_str(), "--exact", "--test-threads", "1"]);
    cmd
}

/// Runs a child process (see [`child_process`]) to its end and returns its standard output;
/// panics, with `what`, its output and its standard error, if it failed.
pub fn child_stdout(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().expect("start the child process");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// What follows `tag` on the first line of `text` that holds it (the harness prints a
/// test's output after its name, on the same line).
pub fn tagged<'t>(text: &'t str, tag: &str) -> Option<&'t str> {
    text.lines().find_map(|l| l.find(tag).map(|at| &l[at + tag.len()..]))
}

/// Runs every listed test: sets up the process's temporary directory, lists the trials
/// (skipping, visibly, those that cannot run here), runs them, removes the directory.
pub fn harness(modules: &[&[Test]]) -> std::process::ExitCode {
    // First, as it exits on bad arguments (before anything needs cleaning up).
    let args = libtest_mimic::Arguments::from_args();
    // Single-threaded still: the variables are set before any trial (or OpenCL) starts.
    let owned = match std::env::var_os(ROOT_VAR) {
        Some(_) => None, // a child process: its parent owns the directory
        None => {
            let dir = tempfile::Builder::new().prefix("tensorbridge-tests-").tempdir().expect("a temporary directory");
            std::env::set_var(ROOT_VAR, dir.path());
            Some(dir)
        }
    };
    let root = root();
    // Test threads get the main thread's 8 MiB of stack, not std's 2 MiB: a debug build
    // keeps every temporary of a test body in its own stack slot, and the bodies that compare
    // models with 64 KiB layers by value (core_equals_backend's Narrow) hold dozens of them.
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        std::env::set_var("RUST_MIN_STACK", (8usize << 20).to_string());
    }
    // A passing run prints only the harness's lines: no notice of slow kernel builds
    // (tests/opencl_startup.rs checks the notice itself, in a child process).
    if std::env::var_os(tensorbridge::BUILD_NOTICE_ENV).is_none() {
        std::env::set_var(tensorbridge::BUILD_NOTICE_ENV, "0");
    }
    for (var, sub) in [("POCL_CACHE_DIR", "pocl"), ("TENSORBRIDGE_CACHE_DIR", "kernels")] {
        if std::env::var_os(var).is_none() {
            let dir = root.join(sub);
            let _ = std::fs::create_dir_all(&dir);
            std::env::set_var(var, dir);
        }
    }

    let all: Vec<Test> = modules.iter().flat_map(|m| m.iter().copied()).collect();
    let is_child = owned.is_none();
    // A child process runs the one test its parent selected, at once (tests time it): it
    // probes nothing, as the parent did.
    let wants = |k: fn(&Kind) -> bool| !is_child && all.iter().any(|t| k(&t.kind));
    let opencl = if wants(|k| matches!(k, Kind::EveryDevice | Kind::OpenClOnly)) { opencl_status() } else { Ok(()) };
    let numpy = if wants(|k| *k == Kind::NumPy) { numpy_status() } else { Ok(()) };
    let unshare = if wants(|k| *k == Kind::Unshare) { unshare_status() } else { Ok(()) };
    let require_opencl = !is_child && required("TENSORBRIDGE_REQUIRE_OPENCL");
    let require_numpy = !is_child && required("TENSORBRIDGE_REQUIRE_NUMPY");
    let onnxruntime = if wants(|k| *k == Kind::OnnxRuntime) {
        python_status("numpy, onnxruntime", "numpy onnxruntime")
    } else {
        Ok(())
    };
    let require_onnxruntime = !is_child && required("TENSORBRIDGE_REQUIRE_ONNXRUNTIME");
    if let (false, Err(why)) = (is_child, &onnxruntime) {
        let what = if require_onnxruntime { "failing (TENSORBRIDGE_REQUIRE_ONNXRUNTIME=1)" } else { "skipped" };
        eprintln!("note: onnxruntime tests {what}: {why}");
    }
    if !is_child {
        if let Err(why) = &opencl {
            let what = if require_opencl { "failing (TENSORBRIDGE_REQUIRE_OPENCL=1)" } else { "skipped" };
            eprintln!("note: OpenCL tests {what}: {why}");
        }
        if let Err(why) = &numpy {
            let what = if require_numpy { "failing (TENSORBRIDGE_REQUIRE_NUMPY=1)" } else { "skipped" };
            eprintln!("note: NumPy tests {what}: {why}");
        }
        if let Err(why) = &unshare {
            eprintln!("note: the test that hides libOpenCL is skipped: {why}");
        }
    }

    let mut trials = Vec::new();
    for t in all {
        let path = t.path();
        // (name, on OpenCL?, what is missing here)
        let mut runs: Vec<(String, Option<bool>, Option<Missing>)> = Vec::new();
        let opencl_missing = opencl.as_ref().err().map(|why| (format!("no OpenCL device: {why}"), require_opencl));
        match t.kind {
            Kind::Plain => runs.push((path, None, None)),
            Kind::Child(var) => {
                if std::env::var_os(var).is_some() {
                    runs.push((path, None, None));
                }
            }
            Kind::NumPy => runs.push((path, None, numpy.as_ref().err().map(|why| (why.clone(), require_numpy)))),
            Kind::OnnxRuntime => {
                runs.push((path, None, onnxruntime.as_ref().err().map(|why| (why.clone(), require_onnxruntime))))
            }
            Kind::Unshare => runs.push((path, None, unshare.as_ref().err().map(|why| (why.clone(), false)))),
            Kind::EveryDevice => {
                runs.push((format!("cpu::{path}"), Some(false), None));
                runs.push((format!("opencl::{path}"), Some(true), opencl_missing));
            }
            Kind::OpenClOnly => runs.push((format!("opencl::{path}"), Some(true), opencl_missing)),
        }
        for (name, on_opencl, missing) in runs {
            let body = t.body;
            match missing {
                Some((why, false)) => {
                    let short = why.split(':').next().unwrap_or(&why).to_string();
                    // Run anyway (`-- --ignored`), it fails saying what is missing.
                    let trial = Trial::test(format!("{name} (skipped: {short})"), move || Err(Failed::from(why)));
                    trials.push(trial.with_ignored_flag(true));
                }
                Some((why, true)) => {
                    trials.push(Trial::test(name, move || Err(Failed::from(format!("required: {why}")))))
                }
                None => trials.push(Trial::test(name, move || {
                    match (body, on_opencl) {
                        (Body::Plain(f), _) => f(),
                        (Body::OnDevice(f), Some(true)) => f(&opencl_device()),
                        (Body::OnDevice(f), _) => f(&Device::cpu()),
                    }
                    Ok(())
                })),
            }
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    drop(owned); // removes the temporary directory
    if conclusion.has_failed() {
        std::process::ExitCode::from(101)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// An SMatrix from row-major nested arrays of f64 (as the NumPy fixtures write them).
pub fn mat<const R: usize, const C: usize>(rows: &[[f64; C]; R]) -> SMatrix<f32, R, C> {
    SMatrix::from_fn(|r, c| rows[r][c] as f32)
}

/// A column vector from an array of f64.
pub fn col<const R: usize>(v: &[f64; R]) -> SMatrix<f32, R, 1> {
    SMatrix::from_fn(|r, _| v[r] as f32)
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise against an f64 reference, naming the
/// first offender.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (k, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a as f64 - e).abs();
        assert!(
            err <= atol + rtol * e.abs(),
            "{what}[{k}]: got {a}, expected {e} (error {err:e} > {atol:e} + {rtol:e} * |expected|)"
        );
    }
}

/// `|a - b| <= abs + rel * max(|a|, |b|)` for every pair of two f32 results, else a panic
/// naming the first that differs.
#[track_caller]
pub fn assert_agree(what: &str, a: &[f32], b: &[f32], abs: f32, rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        let tol = abs + rel * x.abs().max(y.abs());
        assert!((x - y).abs() <= tol, "{what}[{k}]: {x} vs {y} (tolerance {tol})");
    }
}

/// The values of a column-major matrix as f64.
pub fn f64s<const R: usize, const C: usize>(m: &SMatrix<f32, R, C>) -> Vec<f64> {
    m.iter().map(|&v| v as f64).collect()
}

/// The bits of every parameter, in the flat layout (widened exactly to `f32` for `f16`
/// storage): to compare parameters exactly, NaN included.
pub fn param_bits<P: Params>(p: &P) -> Vec<u32> {
    let mut flat = vec![<P::Elem as Element>::ZERO; P::LEN];
    p.write_flat(&mut flat);
    flat.iter().map(|v| v.to_f32().to_bits()).collect()
}

/// A deterministic pseudo-random value in [-1, 1) (not the crate's RNG: independent).
pub fn noise(seed: u64, k: usize) -> f32 {
    let mut z = seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}
