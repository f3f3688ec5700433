//! Tokens -> [`Declaration`]: the syntax of a `model!` declaration, nothing checked yet
//! beyond the punctuation.
//!
//! ```text
//! #[attributes and /// docs]
//! VISIBILITY struct NAME {
//!     KEY: VALUE,      // VALUE: an integer, `[integers, ...]` or an identifier
//!     ...
//! }
//! ```

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{braced, Attribute, Expr, Generics, Ident, Token, Visibility};

/// One `model!` invocation as written.
pub struct Declaration {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub generics: Generics,
    /// The span of the closing brace's group, for "missing key" errors.
    pub body_span: Span,
    pub entries: Vec<Entry>,
}

/// One `key: value` line.
pub struct Entry {
    pub key: Ident,
    pub value: Expr,
}

impl Parse for Declaration {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if !input.peek(Token![struct]) {
            return Err(input.error(
                "expected `struct NAME { batch: .., features: .., classes: .. }` \
                 (optionally preceded by doc comments, attributes and `pub`)",
            ));
        }
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let generics: Generics = input.parse()?;
        if !input.peek(syn::token::Brace) {
            return Err(input.error(
                "expected `{` and the model's keys, as in `struct CatDog { batch: 2, features: 4, classes: 2 }`",
            ));
        }
        let body;
        let brace = braced!(body in input);
        let mut entries = Vec::new();
        while !body.is_empty() {
            let key: Ident = body
                .parse()
                .map_err(|e| syn::Error::new(e.span(), "expected a key such as `batch`, `features` or `classes`"))?;
            if !body.peek(Token![:]) || body.peek(Token![::]) {
                return Err(body.error(format!("expected `:` after `{key}`; write `{key}: VALUE`")));
            }
            body.parse::<Token![:]>()?;
            let value = parse_value(&body, &key)?;
            entries.push(Entry { key, value });
            if body.is_empty() {
                break;
            }
            if !body.peek(Token![,]) {
                return Err(body.error("expected `,` between keys"));
            }
            body.parse::<Token![,]>()?;
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the model's `{ ... }`: declare one model per `model!`"));
        }
        Ok(Declaration { attrs, vis, name, generics, body_span: brace.span.join(), entries })
    }
}

/// A value: anything up to the next `,` parsed as an expression, so that validation can
/// say what is wrong with it (a float, a negative, a string, ...) at its own span.
fn parse_value(body: ParseStream, key: &Ident) -> syn::Result<Expr> {
    if body.is_empty() || body.peek(Token![,]) {
        return Err(body.error(format!("expected a value after `{key}:`")));
    }
    body.parse::<Expr>()
}
