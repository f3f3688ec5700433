//! Nothing here: this crate only builds tensorbridge's integration tests (the repository's
//! `tests/`), its benchmarks (`benches/`) and the compile-fail tests of `model!`
//! (`tests/ui/`), so that their tools (libtest-mimic, criterion, trybuild) are never built
//! for the runtime crate or its examples.
