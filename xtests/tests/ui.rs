//! Compile-fail tests of the `model!` macro: one file per mistake under `tests/ui/`, each
//! with its expected compiler output checked in beside it. The messages are part of the API.
//! Regenerate after an intentional change with `TRYBUILD=overwrite cargo test -p tensorbridge-xtests --test ui`.

#[test]
fn declaration_mistakes_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
