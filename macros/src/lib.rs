//! The `model!` declaration macro of [tensorbridge](https://docs.rs/tensorbridge).
//!
//! Use it through `tensorbridge::model!`; this crate is an implementation detail whose
//! generated code refers to `::tensorbridge`. The macro works in three rooms:
//!
//! - [`parse`] turns tokens into a plain syntax struct, keeping every span;
//! - [`spec`] validates it into a [`spec::Spec`] with no `syn` types left, collecting every
//!   mistake (each one a `syn::Error` pointing at the offending token), and, when there is
//!   one, a fallback spec from what did validate;
//! - [`expand`] turns the validated spec into the model's items; after errors it expands
//!   the fallback beside them, so that one mistake is one error.
//! - [`embed`] adds the constructors that are the same with and without `std`, and the
//!   weights a `weights: "path"` key compiles in (the checkpoint read at compile time).
//! - `format` is the checkpoint format, written once for `weights:` and for
//!   `tensorbridge::checkpoint` (which takes it through [`__checkpoint_format!`]).

use proc_macro::TokenStream;

mod embed;
mod expand;
// Items of the format that only `tensorbridge::checkpoint` uses are unused here.
#[allow(dead_code)]
mod format;
mod int8;
mod parse;
mod spec;

/// Declares a fixed-shape classifier. See `tensorbridge::model!` for the syntax and the
/// generated items.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let decl = match syn::parse::<parse::Declaration>(input) {
        Ok(decl) => decl,
        Err(err) => return err.to_compile_error().into(),
    };
    match spec::Spec::validate(decl) {
        Ok(spec) => expand::expand(&spec).into(),
        // The errors, and beside them the items of a fallback model, so that later uses of
        // the model's types raise no errors of their own.
        Err(spec::Invalid { error, fallback }) => {
            let mut out = error.to_compile_error();
            out.extend(expand::expand(&fallback));
            out.into()
        }
    }
}

/// Expands to the items of the checkpoint format, `format.rs` of this crate (its names, the
/// parameters' order and layout in the file, the metadata entry, a header reader), for
/// `tensorbridge::checkpoint`: the format is written once, and read both there and by
/// `weights: "path"` here. Not a public API.
#[doc(hidden)]
#[proc_macro]
pub fn __checkpoint_format(_input: TokenStream) -> TokenStream {
    match include_str!("format.rs").parse() {
        Ok(items) => items,
        Err(err) => syn::Error::new(proc_macro2::Span::call_site(), format!("format.rs does not lex: {err}"))
            .to_compile_error()
            .into(),
    }
}
