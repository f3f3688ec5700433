//! The items that are the same with and without `std` (constructors taking a device), and
//! the weights a `weights: "path"` key compiles in: the checkpoint is read here, at compile
//! time, checked against the declaration (errors point at the path), and written into the
//! expansion as a `static` [`Weights`] (in flash on a microcontroller), with an
//! `include_bytes!` of the file so that Cargo rebuilds the crate when it changes.
//!
//! [`Weights`]: https://docs.rs/tensorbridge/latest/tensorbridge/cpu/struct.Weights.html

use std::path::{Path, PathBuf};

use proc_macro2::{Literal, TokenStream};
use quote::quote;
use safetensors::tensor::Dtype;

use crate::format::{self, Checkpoint, STANDARDIZER_TENSORS};
use crate::spec::{Spec, Storage, WeightsFile};

/// The constructors taking a device with the same signature in every build, and
/// `Name::weights()` for a `weights:` key (or the error about its file).
pub fn items(spec: &Spec) -> TokenStream {
    let constructors = constructors(spec);
    let weights = match &spec.weights {
        None => quote!(),
        Some(file) => match compiled_weights(spec, file) {
            Ok(tokens) => tokens,
            Err(err) => err.to_compile_error(),
        },
    };
    quote!(#constructors #weights)
}

fn constructors(spec: &Spec) -> TokenStream {
    let Spec { vis, name, .. } = spec;
    let params_name = quote::format_ident!("{}Params", name);
    let on_doc = " Creates the model on `device` with seeded, deterministic initial parameters: \
                  the same signature with and without the feature `std`. With `std` it is \
                  `new(device)` (an OpenCL device or the CPU backend); without, the `no_std` \
                  core, whose only [`tensorbridge::Device`] is the CPU (`new()`).";
    let with_params_doc = " Creates the model on `device` with the given parameters, by value or by \
                           reference: the same signature with and without the feature `std` \
                           (`with_params(device, params)` with it, `with_params(params)` without).";
    let from_weights_doc = " Creates the model on `device` with a copy of `weights` (for example \
                            `Self::weights()` of a `weights:` declaration), so that it can train: \
                            the same signature with and without the feature `std`. For inference \
                            alone, `weights.predict(&mut work, &x)` reads them in place.";
    quote! {
        ::tensorbridge::__if_std! {
            impl #name {
                #[doc = #on_doc]
                #vis fn on(device: &::tensorbridge::Device) -> ::tensorbridge::Result<Self> {
                    Self::new(device)
                }

                #[doc = #with_params_doc]
                #vis fn on_with_params(
                    device: &::tensorbridge::Device,
                    params: impl ::core::borrow::Borrow<#params_name>,
                ) -> ::tensorbridge::Result<Self> {
                    Self::with_params(device, params)
                }

                #[doc = #from_weights_doc]
                #vis fn from_weights(
                    device: &::tensorbridge::Device,
                    weights: &::tensorbridge::cpu::Weights<#name>,
                ) -> ::tensorbridge::Result<Self> {
                    Self::with_params(device, weights.params())
                }
            }
        }

        ::tensorbridge::__if_no_std! {
            impl #name {
                #[doc = #on_doc]
                #vis fn on(_device: &::tensorbridge::Device) -> ::tensorbridge::Result<Self> {
                    Ok(Self::new())
                }

                #[doc = #with_params_doc]
                #vis fn on_with_params(
                    _device: &::tensorbridge::Device,
                    params: impl ::core::borrow::Borrow<#params_name>,
                ) -> ::tensorbridge::Result<Self> {
                    Self::with_params(params)
                }

                #[doc = #from_weights_doc]
                #vis fn from_weights(
                    _device: &::tensorbridge::Device,
                    weights: &::tensorbridge::cpu::Weights<#name>,
                ) -> ::tensorbridge::Result<Self> {
                    Ok(Self { engine: ::tensorbridge::cpu::Cpu::from_weights(weights) })
                }
            }
        }
    }
}

/// `Name::weights()`: the checkpoint's values as a `static`, and the file included so that
/// Cargo rebuilds when it changes.
fn compiled_weights(spec: &Spec, file: &WeightsFile) -> syn::Result<TokenStream> {
    let Spec { vis, name, .. } = spec;
    let path = manifest_path(file)?;
    let values = read_checkpoint(spec, file, &path)?;
    let values = values.iter().map(|&v| {
        let lit = Literal::f32_suffixed(v.abs());
        if v.is_sign_negative() {
            quote!(-#lit)
        } else {
            quote!(#lit)
        }
    });
    let path_str = path.display().to_string();
    let doc = format!(
        " The parameters of `{}`, compiled in (`weights:` in the declaration): a `static`, in flash \
         on a microcontroller. `weights().predict(&mut work, &x)` and `weights().logits(..)` read \
         them in place; `Self::from_weights(&device, Self::weights())` copies them into a model \
         that can train.",
        file.path
    );
    Ok(quote! {
        impl #name {
            #[doc = #doc]
            #vis fn weights() -> &'static ::tensorbridge::cpu::Weights<#name> {
                // The file itself, so that Cargo rebuilds this crate when it changes.
                const _: &[u8] = include_bytes!(#path_str);
                static WEIGHTS: ::tensorbridge::cpu::Weights<#name> = ::tensorbridge::cpu::Weights::from_flat(
                    match ::tensorbridge::layout::FlatParams::finite([#(#values),*]) {
                        ::core::option::Option::Some(flat) => flat,
                        // Checked when the file was read: never reached, not even at compile time.
                        ::core::option::Option::None => ::core::panic!("a compiled-in weight is not finite"),
                    },
                );
                &WEIGHTS
            }
        }
    })
}

/// The file's path: relative to the declaring crate's `CARGO_MANIFEST_DIR`.
fn manifest_path(file: &WeightsFile) -> syn::Result<PathBuf> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| {
        syn::Error::new(file.span, "`weights`: CARGO_MANIFEST_DIR is not set (build the crate with Cargo)")
    })?;
    Ok(Path::new(&dir).join(&file.path))
}

/// The checkpoint's parameters in the flat layout (`w[o * in + i]`, then `b`), every tensor
/// checked against the declaration: names, dtype, shapes, finite values. The optimizer's
/// state that a checkpoint may hold beside them is not compiled in.
fn read_checkpoint(spec: &Spec, file: &WeightsFile, path: &Path) -> syn::Result<Vec<f32>> {
    let err = |msg: String| syn::Error::new(file.span, format!("`weights: {:?}`: {msg}", file.path));
    let bytes = std::fs::read(path).map_err(|e| {
        err(format!("cannot read the file ({e}; the path is relative to the directory of the crate's Cargo.toml)"))
    })?;
    let checkpoint = Checkpoint::parse(&bytes).map_err(|e| err(format!("not a safetensors checkpoint: {e}")))?;
    let (dtype, dtype_name) = match spec.storage {
        Storage::F32 => (Dtype::F32, "F32"),
        Storage::F16 => (Dtype::F16, "F16 (`storage: f16`)"),
    };
    let dims = spec.layers();
    let expected = format::param_tensors(&dims);
    for name in checkpoint.names() {
        if STANDARDIZER_TENSORS.contains(&name.as_str()) {
            return Err(err(format!(
                "the checkpoint holds a standardiser (`{name}`), which `weights:` does not compile in; \
                 standardise the features before `predict`, or save the model without it"
            )));
        }
        if !format::is_state(&name) && !expected.iter().any(|(n, _)| *n == name) {
            return Err(err(format!(
                "unexpected tensor `{name}`: the declaration ({}) has the tensors {}",
                format::widths_text(&dims),
                expected.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut flat = Vec::new();
    for (name, shape) in &expected {
        let view = checkpoint.tensor(name).ok_or_else(|| {
            err(format!("the tensor `{name}` is missing (the declaration: {})", format::widths_text(&dims)))
        })?;
        if view.shape() != shape.as_slice() {
            let transposed = shape.len() == 2 && view.shape() == [shape[1], shape[0]];
            let hint = if transposed {
                " (it is transposed: PyTorch's [out, in] layout; the checkpoint of `save` is [in, out])"
            } else {
                ""
            };
            return Err(err(format!(
                "the tensor `{name}` has shape {:?}; the declaration ({}) needs {shape:?}{hint}",
                view.shape(),
                format::widths_text(&dims)
            )));
        }
        if view.dtype() != dtype {
            return Err(err(format!("the tensor `{name}` is {:?}; the declaration needs {dtype_name}", view.dtype())));
        }
        let values: Vec<f32> = match dtype {
            Dtype::F16 => {
                view.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            _ => view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        };
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(err(format!("the tensor `{name}` holds {} at flat index {k}", values[k])));
        }
        let start = flat.len();
        flat.resize(start + values.len(), 0.0);
        for (k, v) in values.into_iter().enumerate() {
            flat[start + format::flat_offset(shape, k)] = v;
        }
    }
    // The tensors fit the declaration; the hidden activations `save` records, where it did,
    // must too.
    let recorded = checkpoint.entry().and_then(|entry| format::record(entry, format::ACTIVATIONS));
    let declared = format::activations_text(spec.activations.iter().map(|a| a.to_ascii_lowercase()));
    if let Some(recorded) = recorded.filter(|r| *r != declared) {
        return Err(err(format!(
            "the checkpoint was saved from a model with hidden activations [{recorded}], but the declaration has [{declared}]"
        )));
    }
    Ok(flat)
}
