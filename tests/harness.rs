//! The harness itself, as a user meets it: the Python it runs the NumPy tests with, and
//! the skip reason that says how to choose another.

use std::process::Command;

use crate::support::{python_program, PYTHON_VAR};

/// This suite's test list, as a fresh run (not a child of this one) would print it, with
/// `TENSORBRIDGE_PYTHON` set to `python`.
fn listing_with_python(python: &str) -> String {
    let out = Command::new(std::env::current_exe().expect("the test binary's path"))
        .arg("--list")
        .env_remove("TENSORBRIDGE_TEST_ROOT")
        .env_remove("TENSORBRIDGE_REQUIRE_NUMPY")
        .env(PYTHON_VAR, python)
        .output()
        .expect("list the tests");
    assert!(out.status.success(), "--list failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `TENSORBRIDGE_PYTHON` chooses the interpreter: a missing one skips the NumPy tests with
/// a reason that names it and the variable; the one that has NumPy runs them.
fn the_python_variable_chooses_the_interpreter() {
    let missing = "/nonexistent/bin/python3";
    let reason =
        format!(" (skipped: no Python `{missing}` (set {PYTHON_VAR} to a Python that has it, or pip install numpy))");
    let listing = listing_with_python(missing);
    let skipped: Vec<&str> = listing.lines().filter_map(|l| l.strip_suffix(": test")?.strip_suffix(&reason)).collect();
    assert!(skipped.contains(&"harness::the_python_variable_chooses_the_interpreter"), "{listing}");
    assert!(skipped.iter().any(|name| name.starts_with("npy_numpy::")), "{listing}");
    // The interpreter this run found NumPy in, given by the variable: the same tests, run.
    let listing = listing_with_python(&python_program());
    let run: Vec<&str> = listing.lines().filter_map(|l| l.strip_suffix(": test")).collect();
    for name in &skipped {
        assert!(run.contains(name), "{name} runs with a Python that has NumPy:\n{listing}");
    }
    assert!(!listing.contains("skipped: no Python"), "{listing}");
}

crate::tests! {
    numpy the_python_variable_chooses_the_interpreter,
}
