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

use proc_macro::TokenStream;

mod embed;
mod expand;
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
