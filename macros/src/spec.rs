//! [`Declaration`] -> [`Spec`]: every rule of a declaration checked, every mistake collected
//! (so a user sees them all at once), and a plain model description with no `syn` types
//! left besides the pass-through attributes.

use proc_macro2::Span;
use syn::{Attribute, Expr, ExprArray, ExprLit, ExprUnary, Ident, Lit, UnOp, Visibility};

use crate::parse::Declaration;

/// The largest value of any single size (`batch`, `features`, `classes`, a hidden width):
/// 2^20. Anything larger is almost certainly a typo, and would not fit an OpenCL work-group
/// plan or a host buffer anyway.
pub const MAX_DIM: u64 = 1 << 20;
/// The largest number of elements in one buffer (the batch `[batch x features]`, one weight
/// matrix, the logits): 2^28, i.e. 1 GiB of `f32`.
pub const MAX_ELEMENTS: u64 = 1 << 28;
/// The most hidden layers a declaration may have.
pub const MAX_HIDDEN_LAYERS: usize = 64;

const KEYS: [&str; 8] = ["batch", "features", "classes", "hidden", "storage", "activation", "optimizer", "weights"];

/// The hidden layers' activations a declaration may name, as `tensorbridge::Activation`'s
/// variants spell them.
const ACTIVATIONS: [(&str, &str); 4] =
    [("relu", "Relu"), ("tanh", "Tanh"), ("sigmoid", "Sigmoid"), ("identity", "Identity")];

/// Element type of host and device buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    F16,
}

/// The optimizer a model trains with (`optimizer:`), named as its hyperparameter struct in
/// `tensorbridge::optim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Adam,
    AdamW,
}

impl OptimizerKind {
    /// The type in `tensorbridge::optim`.
    pub fn type_name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "Sgd",
            OptimizerKind::Momentum => "Momentum",
            OptimizerKind::Adam => "Adam",
            OptimizerKind::AdamW => "AdamW",
        }
    }
}

/// A validated model declaration.
pub struct Spec {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub batch: usize,
    pub features: usize,
    pub classes: usize,
    pub hidden: Vec<usize>,
    pub storage: Storage,
    /// Each hidden layer's activation: the name of its `tensorbridge::Activation` variant.
    pub activations: Vec<&'static str>,
    pub optimizer: OptimizerKind,
    /// `weights: "path"`: the checkpoint to compile in (see [`crate::embed`]).
    pub weights: Option<WeightsFile>,
}

/// The value of a `weights: "path"` key.
pub struct WeightsFile {
    /// The path as written: relative to the declaring crate's `CARGO_MANIFEST_DIR`.
    pub path: String,
    /// The string literal's span, where errors about the file point.
    pub span: Span,
}

impl Spec {
    /// Layer widths: `[features, hidden..., classes]`.
    pub fn layers(&self) -> Vec<usize> {
        let mut dims = vec![self.features];
        dims.extend_from_slice(&self.hidden);
        dims.push(self.classes);
        dims
    }

    /// Checks every rule; returns all mistakes combined into one error, with a fallback
    /// spec to expand beside it ([`Invalid`]).
    pub fn validate(decl: Declaration) -> Result<Spec, Invalid> {
        let mut errors = Errors::default();
        if let Some(param) = decl.generics.params.first() {
            errors.push(syn::Error::new_spanned(
                param,
                "a model has no generic parameters: its shapes are the literals in its body",
            ));
        }
        if let Some(clause) = &decl.generics.where_clause {
            errors.push(syn::Error::new_spanned(clause, "a model has no `where` clause"));
        }

        let mut batch = None;
        let mut features = None;
        let mut classes = None;
        let mut hidden = None;
        let mut storage = None;
        let mut activation = None;
        let mut optimizer = None;
        let mut weights = None;
        let mut seen: Vec<Ident> = Vec::new();
        // Keys an unknown key was taken for (`featurse` -> `features`): not reported missing too.
        let mut suggested: Vec<&str> = Vec::new();
        // Sizes given under a misspelled key (`featurse: 4`), for the fallback.
        let mut guessed: [Option<usize>; 3] = [None; 3];
        for entry in &decl.entries {
            let key = entry.key.to_string();
            if let Some(first) = seen.iter().find(|k| **k == entry.key) {
                let mut err =
                    syn::Error::new(entry.key.span(), format!("duplicate key `{key}`: each key may appear once"));
                err.combine(syn::Error::new(first.span(), format!("`{key}` first given here")));
                errors.push(err);
                continue;
            }
            seen.push(entry.key.clone());
            match key.as_str() {
                "batch" => batch = errors.take(size(&entry.key, &entry.value)),
                "features" => features = errors.take(size(&entry.key, &entry.value)),
                "classes" => classes = errors.take(size(&entry.key, &entry.value)),
                "hidden" => hidden = errors.take(hidden_list(&entry.value)),
                "storage" => storage = errors.take(storage_kind(&entry.value)),
                "activation" => activation = errors.take(activation_list(&entry.value)),
                "optimizer" => optimizer = errors.take(optimizer_kind(&entry.value)),
                "weights" => weights = errors.take(weights_file(&entry.value)),
                _ => {
                    let (err, suggestion) = unknown_key(&entry.key);
                    // The fallback takes a misspelled size for the key it was meant for.
                    let guess = size(&entry.key, &entry.value).ok();
                    match suggestion {
                        Some("batch") => guessed[0] = guess,
                        Some("features") => guessed[1] = guess,
                        Some("classes") => guessed[2] = guess,
                        _ => {}
                    }
                    suggested.extend(suggestion);
                    errors.push(err);
                }
            }
        }
        for (name, value, example) in
            [("batch", &batch, "batch: 2"), ("features", &features, "features: 4"), ("classes", &classes, "classes: 2")]
        {
            if value.is_none() && !seen.iter().any(|k| k == name) && !suggested.contains(&name) {
                errors.push(syn::Error::new(
                    decl.body_span,
                    format!("missing key `{name}`: add `{example},` (a positive integer)"),
                ));
            }
        }
        if let Some(classes) = classes {
            if classes < 2 {
                errors.push(syn::Error::new(
                    value_span(&decl, "classes"),
                    "`classes` must be at least 2: a classifier chooses between classes",
                ));
            }
        }
        if let (Some(batch), Some(features), Some(classes)) = (batch, features, classes) {
            let hidden_dims: &[usize] = hidden.as_deref().unwrap_or(&[]);
            check_elements(&mut errors, &decl, "batch", "[batch x features]", batch, features);
            check_elements(&mut errors, &decl, "batch", "[batch x classes]", batch, classes);
            let mut dims = vec![features];
            dims.extend_from_slice(hidden_dims);
            dims.push(classes);
            for (l, pair) in dims.windows(2).enumerate() {
                let key = if l == 0 { "features" } else { "hidden" };
                check_elements(&mut errors, &decl, key, &format!("w{l}"), pair[0], pair[1]);
            }
            for &h in hidden_dims {
                check_elements(&mut errors, &decl, "hidden", "[batch x hidden]", batch, h);
            }
        }
        let hidden_count = hidden.as_ref().map_or(0, Vec::len);
        let activations = match activation {
            Some(Activations::One(name)) => vec![name; hidden_count],
            Some(Activations::PerLayer(names)) => {
                if (hidden.is_some() || !seen.iter().any(|k| k == "hidden")) && names.len() != hidden_count {
                    errors.push(syn::Error::new(
                        value_span(&decl, "activation"),
                        format!(
                            "`activation` lists {} activations for {hidden_count} hidden layers: give one per \
                             hidden layer, or one name for all of them",
                            names.len()
                        ),
                    ));
                }
                names
            }
            None => vec!["Relu"; hidden_count],
        };
        let failed = errors.0.is_some();
        let mut spec = Spec {
            attrs: decl.attrs,
            vis: decl.vis,
            name: decl.name,
            batch: batch.or(guessed[0]).unwrap_or(1),
            features: features.or(guessed[1]).unwrap_or(1),
            classes: classes.or(guessed[2]).filter(|&c| c >= 2).unwrap_or(2),
            hidden: hidden.unwrap_or_default(),
            storage: storage.unwrap_or(Storage::F32),
            activations,
            optimizer: optimizer.unwrap_or(OptimizerKind::Sgd),
            weights,
        };
        match errors.finish() {
            Ok(()) => Ok(spec),
            Err(error) => {
                debug_assert!(failed);
                spec.make_fallback();
                Err(Invalid { error, fallback: Box::new(spec) })
            }
        }
    }

    /// Turns what validated of a faulty declaration into a model that expands without
    /// errors: every buffer within [`MAX_ELEMENTS`] (else the smallest model, `1 -> 2`),
    /// one activation per hidden layer.
    fn make_fallback(&mut self) {
        let mut dims = self.layers();
        dims.insert(0, self.batch);
        let too_large = dims.windows(2).any(|p| p[0] as u64 * p[1] as u64 > MAX_ELEMENTS)
            || self.batch as u64 * self.classes as u64 > MAX_ELEMENTS
            || self.hidden.iter().any(|&h| self.batch as u64 * h as u64 > MAX_ELEMENTS);
        if too_large {
            (self.batch, self.features, self.classes) = (1, 1, 2);
            self.hidden.clear();
        }
        self.activations.resize(self.hidden.len(), "Relu");
    }
}

/// A declaration with mistakes: the error to report, and a fallback model to generate
/// beside it, made of what did validate (defaults elsewhere: batch 1, features 1, classes
/// 2, no hidden layer, ReLU, `f32`), so that the rest of the crate compiles against the
/// model's items and one mistake gives one error, not another at every use of the type
/// (as thiserror's fallback impls do).
pub struct Invalid {
    pub error: syn::Error,
    pub fallback: Box<Spec>,
}

/// Collects errors so that all of them are reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }
    fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }
    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn value_span(decl: &Declaration, key: &str) -> Span {
    decl.entries.iter().find(|e| e.key == key).map_or(decl.body_span, |e| syn::spanned::Spanned::span(&e.value))
}

fn check_elements(errors: &mut Errors, decl: &Declaration, key: &str, what: &str, rows: usize, cols: usize) {
    let n = rows as u64 * cols as u64;
    if n > MAX_ELEMENTS {
        errors.push(syn::Error::new(
            value_span(decl, key),
            format!(
                "{what} would hold {rows} x {cols} = {n} elements; the most one buffer may hold is {MAX_ELEMENTS} (1 GiB of f32)"
            ),
        ));
    }
}

/// A positive integer literal no larger than [`MAX_DIM`].
fn size(key: &Ident, value: &Expr) -> syn::Result<usize> {
    positive_int(value, &format!("`{key}`"))
}

fn positive_int(value: &Expr, what: &str) -> syn::Result<usize> {
    let allowed = format!("a positive integer literal from 1 to {MAX_DIM}");
    match value {
        Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) => {
            if !int.suffix().is_empty() && int.suffix() != "usize" {
                return Err(syn::Error::new_spanned(
                    int,
                    format!("{what} takes an unsuffixed integer (write `{}`), not `{int}`", int.base10_digits()),
                ));
            }
            match int.base10_parse::<u64>() {
                Ok(0) => Err(syn::Error::new_spanned(int, format!("{what} must not be zero: expected {allowed}"))),
                Ok(n) if n <= MAX_DIM => Ok(n as usize),
                _ => Err(syn::Error::new_spanned(
                    int,
                    format!("{what} = {} is too large: expected {allowed}", int.base10_digits()),
                )),
            }
        }
        Expr::Unary(ExprUnary { op: UnOp::Neg(_), .. }) => {
            Err(syn::Error::new_spanned(value, format!("{what} must not be negative: expected {allowed}")))
        }
        Expr::Lit(ExprLit { lit: Lit::Float(_), .. }) => {
            Err(syn::Error::new_spanned(value, format!("{what} must be an integer, not a float: expected {allowed}")))
        }
        _ => Err(syn::Error::new_spanned(
            value,
            format!("{what} must be {allowed} (constants and expressions are not evaluated)"),
        )),
    }
}

/// `[h1, h2, ...]`: each a positive integer; `[]` means no hidden layer.
fn hidden_list(value: &Expr) -> syn::Result<Vec<usize>> {
    let Expr::Array(ExprArray { elems, .. }) = value else {
        return Err(syn::Error::new_spanned(
            value,
            "`hidden` takes a list of layer widths such as `[32, 16]` (`[]` for none)",
        ));
    };
    if elems.len() > MAX_HIDDEN_LAYERS {
        return Err(syn::Error::new_spanned(
            value,
            format!("`hidden` lists {} layers; at most {MAX_HIDDEN_LAYERS} are allowed", elems.len()),
        ));
    }
    let mut errors = Errors::default();
    let widths: Vec<usize> =
        elems.iter().filter_map(|e| errors.take(positive_int(e, "a hidden layer's width"))).collect();
    errors.finish()?;
    Ok(widths)
}

fn storage_kind(value: &Expr) -> syn::Result<Storage> {
    match value {
        Expr::Path(p) if p.path.is_ident("f32") => Ok(Storage::F32),
        Expr::Path(p) if p.path.is_ident("f16") => Ok(Storage::F16),
        _ => Err(syn::Error::new_spanned(
            value,
            "`storage` takes `f32` or `f16` (f16: half the memory and transfers, arithmetic still in f32)",
        )),
    }
}

/// What `activation:` says: one activation for every hidden layer, or one per layer.
enum Activations {
    One(&'static str),
    PerLayer(Vec<&'static str>),
}

/// `relu`, `tanh`, `sigmoid`, `identity`, or a list of them, one per hidden layer.
fn activation_list(value: &Expr) -> syn::Result<Activations> {
    let Expr::Array(ExprArray { elems, .. }) = value else {
        return activation_name(value).map(Activations::One);
    };
    let mut errors = Errors::default();
    let names: Vec<&'static str> = elems.iter().filter_map(|e| errors.take(activation_name(e))).collect();
    errors.finish()?;
    Ok(Activations::PerLayer(names))
}

fn activation_name(value: &Expr) -> syn::Result<&'static str> {
    if let Expr::Path(p) = value {
        if let Some((_, variant)) = ACTIVATIONS.iter().find(|(name, _)| p.path.is_ident(name)) {
            return Ok(variant);
        }
    }
    let names = ACTIVATIONS.map(|(name, _)| format!("`{name}`")).join(", ");
    Err(syn::Error::new_spanned(
        value,
        format!("`activation` takes one of {names} (the default is `relu`), or a list of them, one per hidden layer"),
    ))
}

fn optimizer_kind(value: &Expr) -> syn::Result<OptimizerKind> {
    let kinds = [
        ("sgd", OptimizerKind::Sgd),
        ("momentum", OptimizerKind::Momentum),
        ("adam", OptimizerKind::Adam),
        ("adamw", OptimizerKind::AdamW),
    ];
    if let Expr::Path(p) = value {
        if let Some((_, kind)) = kinds.iter().find(|(name, _)| p.path.is_ident(name)) {
            return Ok(*kind);
        }
    }
    Err(syn::Error::new_spanned(
        value,
        "`optimizer` takes `sgd` (the default), `momentum`, `adam` or `adamw`; \
         set the hyperparameters at run time with `set_optimizer`",
    ))
}

/// `weights: "path"`: a string literal naming a file.
fn weights_file(value: &Expr) -> syn::Result<WeightsFile> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) if !s.value().is_empty() => {
            Ok(WeightsFile { path: s.value(), span: s.span() })
        }
        _ => Err(syn::Error::new_spanned(
            value,
            "`weights` takes the path of a checkpoint `save` wrote, as a string literal relative to \
             the crate's Cargo.toml, such as `weights: \"model.safetensors\"`",
        )),
    }
}

/// The error for an unknown key, and the known key it is probably a misspelling of.
fn unknown_key(key: &Ident) -> (syn::Error, Option<&'static str>) {
    let name = key.to_string();
    let allowed = KEYS.map(|k| format!("`{k}`")).join(", ");
    let closest = KEYS.iter().map(|k| (edit_distance(&name, k), *k)).min().filter(|(d, k)| *d <= 2.max(k.len() / 3));
    let hint = match closest {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => String::new(),
    };
    let err = syn::Error::new(key.span(), format!("unknown key `{name}`: expected one of {allowed}{hint}"));
    (err, closest.map(|(_, k)| k))
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), so that
/// `featurse` is one edit away from `features`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn transposition_is_one_edit() {
        assert_eq!(edit_distance("featurse", "features"), 1);
        assert_eq!(edit_distance("clases", "classes"), 1);
        assert_eq!(edit_distance("batch", "batch"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
