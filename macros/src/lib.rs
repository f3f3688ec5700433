//! The `model!` declaration macro of [tensorbridge](https://docs.rs/tensorbridge).
//!
//! Use it through `tensorbridge::model!`; this crate is an implementation detail whose
//! generated code refers to `::tensorbridge`. The macro works in three rooms:
//!
//! - [`parse`] turns tokens into a plain syntax struct, keeping every span;
//! - [`spec`] validates it into a [`spec::Spec`] with no `syn` types left, collecting every
//!   mistake (each one a `syn::Error` pointing at the offending token);
//! - [`expand`] turns the validated spec into the model's items.

use proc_macro::TokenStream;

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
        Err(err) => err.to_compile_error().into(),
    }
}
