//! Nothing here: this crate only holds tensorbridge's benchmarks (`benches/`) and the
//! compile-fail tests of `model!` (`tests/ui/`), so that their tools (criterion, trybuild)
//! are never built for the runtime crate or its examples.
