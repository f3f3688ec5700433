//! [`Spec`] -> tokens: the model struct, its `Model` impl, its `Params` struct.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::spec::{Spec, Storage};

/// Host buffers with more elements than this are boxed (`Box<SMatrix<..>>`) so that they
/// never sit on the stack: 16384 elements, 64 KiB of f32.
const BOX_ABOVE_ELEMENTS: usize = 16 * 1024;

/// `SMatrix<T, R, C>`, boxed when large.
fn host_matrix(elem: &TokenStream, rows: usize, cols: usize) -> TokenStream {
    let ty = quote!(::tensorbridge::nalgebra::SMatrix<#elem, #rows, #cols>);
    if rows * cols > BOX_ABOVE_ELEMENTS {
        // `Box` with the standard library; inline in the `no_std` core.
        quote!(::tensorbridge::__private::Boxed<#ty>)
    } else {
        ty
    }
}

pub fn expand(spec: &Spec) -> TokenStream {
    let Spec { attrs, vis, name, batch, features, classes, .. } = spec;
    let (batch, features, classes) = (*batch, *features, *classes);
    let params_name = format_ident!("{}Params", name);
    let layers = spec.layers();
    let name_str = name.to_string();

    let f32_ty = quote!(f32);
    let u32_ty = quote!(u32);
    let (store_ty, store_name) = match spec.storage {
        Storage::F32 => (quote!(f32), "f32"),
        Storage::F16 => (quote!(::tensorbridge::half::f16), "f16"),
    };
    let input_ty = host_matrix(&store_ty, batch, features);
    let labels_ty = host_matrix(&u32_ty, batch, 1);
    let logits_ty = host_matrix(&f32_ty, batch, classes);

    let mut fields = Vec::new();
    let mut grad_fields = Vec::new();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    let mut reads_fn = Vec::new();
    let mut visits = Vec::new();
    let mut clones = Vec::new();
    let mut slot_consts = Vec::new();
    for (l, pair) in layers.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let w = format_ident!("w{}", l);
        let b = format_ident!("b{}", l);
        let w_ty = host_matrix(&store_ty, fan_in, fan_out);
        let b_ty = host_matrix(&store_ty, fan_out, 1);
        let gw_ty = host_matrix(&f32_ty, fan_in, fan_out);
        let gb_ty = host_matrix(&f32_ty, fan_out, 1);
        let role = if l + 1 == layers.len() - 1 { "the linear head" } else { "a hidden layer (ReLU after it)" };
        let w_doc = format!(
            "Weights of layer {l}, {role}: `[{fan_in} x {fan_out}]`, rows = inputs, columns = outputs (`x · W`)."
        );
        let b_doc = format!("Bias of layer {l}: `[{fan_out}]`.");
        fields.push(quote! {
            #[doc = #w_doc]
            pub #w: #w_ty,
            #[doc = #b_doc]
            pub #b: #b_ty,
        });
        let gw_doc = format!("dL/dw{l}: `[{fan_in} x {fan_out}]`, as `w{l}`.");
        let gb_doc = format!("dL/db{l}: `[{fan_out}]`.");
        grad_fields.push(quote! {
            #[doc = #gw_doc]
            pub #w: #gw_ty,
            #[doc = #gb_doc]
            pub #b: #gb_ty,
        });
        // Offsets from `tensorbridge::layout`, the one source of the flat layout.
        let s = format_ident!("S{}", l);
        slot_consts.push(quote! {
            const #s: ::tensorbridge::layout::LayerSlot = ::tensorbridge::layout::layer_slot(DIMS, #l);
        });
        writes.push(quote! {
            out[#s.w..#s.b].copy_from_slice(::tensorbridge::HostTensor::as_flat(&self.#w));
            out[#s.b..#s.end()].copy_from_slice(::tensorbridge::HostTensor::as_flat(&self.#b));
        });
        reads.push(quote! {
            #w: ::tensorbridge::HostTensor::from_flat(&flat[#s.w..#s.b]),
            #b: ::tensorbridge::HostTensor::from_flat(&flat[#s.b..#s.end()]),
        });
        reads_fn.push(quote! {
            #w: ::tensorbridge::HostTensor::from_fn(|k| f(#s.w + k)),
            #b: ::tensorbridge::HostTensor::from_fn(|k| f(#s.b + k)),
        });
        visits.push(quote! {
            f(#s.w, ::tensorbridge::HostTensor::as_flat(&self.#w));
            f(#s.b, ::tensorbridge::HostTensor::as_flat(&self.#b));
        });
        // Through the flat view: a boxed matrix is copied heap to heap, never through the
        // stack as `#[derive(Clone)]` does for `Box<SMatrix<..>>` (4 MiB at 1024 x 1024).
        clones.push(quote! {
            #w: ::tensorbridge::HostTensor::from_flat(::tensorbridge::HostTensor::as_flat(&self.#w)),
            #b: ::tensorbridge::HostTensor::from_flat(::tensorbridge::HostTensor::as_flat(&self.#b)),
        });
    }
    let dims_const = quote! {
        const DIMS: &[usize] = &[#(#layers),*];
        #(#slot_consts)*
    };
    let params_len = quote!(::tensorbridge::layout::param_count(&[#(#layers),*]));
    let params_impl_body = quote! {
        const LEN: usize = #params_len;

        fn write_flat(&self, out: &mut [Self::Elem]) {
            #dims_const
            #(#writes)*
        }

        fn from_flat(flat: &[Self::Elem]) -> Self {
            #dims_const
            Self { #(#reads)* }
        }

        fn visit_flat(&self, f: &mut dyn FnMut(usize, &[Self::Elem])) {
            #dims_const
            #(#visits)*
        }

        fn from_flat_fn(f: &mut dyn FnMut(usize) -> Self::Elem) -> Self {
            #dims_const
            Self { #(#reads_fn)* }
        }
    };
    let is_f16 = spec.storage == Storage::F16;
    // The CPU train step's fixed-size products, one match arm per layer with its sizes as
    // const generic arguments (see `tensorbridge::Model::fixed_product`).
    let fixed_arms = layers.windows(2).enumerate().map(|(l, w)| {
        let (fan_in, fan_out) = (w[0], w[1]);
        quote!(#l => ::tensorbridge::__private::fixed_layer::<MR, NR, #batch, #fan_in, #fan_out>(p),)
    });
    let dims_doc = layers.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" -> ");
    let params_doc = format!(
        "Parameters of [`{name_str}`] ({dims_doc}), one `w`/`b` pair per dense layer, in order, \
         stored as `{store_name}`. Generated by `tensorbridge::model!`."
    );
    // f16 storage: the gradients get a struct of their own, the same fields in f32.
    let (grads_ty, grads_items) = match spec.storage {
        Storage::F32 => (quote!(#params_name), quote!()),
        Storage::F16 => {
            let grads_name = format_ident!("{}Grads", name);
            let grads_doc = format!(
                "Gradients of [`{name_str}`]'s parameters (the fields of [`{params_name}`], in `f32`), \
                 as `gradients` returns them. Generated by `tensorbridge::model!`."
            );
            let items = quote! {
                #[doc = #grads_doc]
                #[derive(Debug, PartialEq)]
                #vis struct #grads_name {
                    #(#grad_fields)*
                }

                impl ::core::clone::Clone for #grads_name {
                    fn clone(&self) -> Self {
                        Self { #(#clones)* }
                    }
                }

                impl ::tensorbridge::Params for #grads_name {
                    type Elem = f32;
                    #params_impl_body
                }
            };
            (quote!(#grads_name), items)
        }
    };
    // The struct's doc says what the build gives: the feature `std` decides what the model
    // wraps (tensorbridge's `__if_std!`/`__if_no_std!` pick one of the two definitions).
    let struct_doc_std = format!(
        " Shapes: batch {batch}, layers {dims_doc}. Generated by `tensorbridge::model!`; \
         its runtime API is [`tensorbridge::Engine`], reached through `Deref` (CPU backend, \
         and OpenCL with the feature `opencl`). Host buffers of more than 16384 elements \
         (64 KiB of `f32`) are boxed."
    );
    let struct_doc_no_std = format!(
        " Shapes: batch {batch}, layers {dims_doc}. Generated by `tensorbridge::model!`; \
         built without `std`, its runtime API is the `no_std` core, \
         `tensorbridge::cpu::Cpu`, reached through `Deref`: no allocator, no thread; every \
         buffer is inline (none is boxed), so a large model belongs in a `static` \
         (`Cpu::init_with_seed`)."
    );

    let int8_items = crate::int8::expand(spec);
    quote! {
        ::tensorbridge::__if_std! {
            #(#attrs)*
            #[doc = ""]
            #[doc = #struct_doc_std]
            #vis struct #name {
                engine: ::tensorbridge::__private::EngineOf<#name>,
            }
        }

        ::tensorbridge::__if_no_std! {
            #(#attrs)*
            #[doc = ""]
            #[doc = #struct_doc_no_std]
            #vis struct #name {
                engine: ::tensorbridge::__private::EngineOf<#name>,
            }
        }

        #[doc = #params_doc]
        #[derive(Debug, PartialEq)]
        #vis struct #params_name {
            #(#fields)*
        }

        impl ::core::clone::Clone for #params_name {
            fn clone(&self) -> Self {
                Self { #(#clones)* }
            }
        }

        impl ::tensorbridge::Params for #params_name {
            type Elem = #store_ty;
            #params_impl_body
        }

        #grads_items

        impl ::tensorbridge::Model for #name {
            const NAME: &'static str = #name_str;
            const BATCH: usize = #batch;
            const FEATURES: usize = #features;
            const CLASSES: usize = #classes;
            const LAYERS: &'static [usize] = &[#(#layers),*];
            type Storage = #store_ty;
            type Input = #input_ty;
            type Labels = #labels_ty;
            type Logits = #logits_ty;
            type Params = #params_name;
            type Grads = #grads_ty;
            type Scratch = ::tensorbridge::layout::Scratch<
                { ::tensorbridge::layout::param_count(&[#(#layers),*]) },
                { ::tensorbridge::layout::outputs_len(&[#(#layers),*], #batch) },
                { ::tensorbridge::layout::delta_len(&[#(#layers),*], #batch) },
                { ::tensorbridge::__private::x32_len(&[#(#layers),*], #batch, #is_f16) },
            >;
            type Flat = ::tensorbridge::layout::FlatParams<{ ::tensorbridge::layout::param_count(&[#(#layers),*]) }>;

            ::tensorbridge::__if_parallel! {
                #[inline(always)]
                fn fixed_product<const MR: usize, const NR: usize>(
                    layer: usize,
                    p: ::tensorbridge::__private::Product<'_>,
                ) -> bool {
                    match layer {
                        #(#fixed_arms)*
                        _ => false,
                    }
                }
            }
        }

        ::tensorbridge::__if_std! {
            impl #name {
                /// Creates the model on `device` with seeded, deterministic initial parameters
                /// (see [`tensorbridge::Engine::new`]).
                #vis fn new(device: &::tensorbridge::Device) -> ::tensorbridge::Result<Self> {
                    ::tensorbridge::Engine::new(device).map(|engine| Self { engine })
                }

                /// Creates the model on `device` with the given parameters, by value or by
                /// reference (see [`tensorbridge::Engine::with_params`]).
                #vis fn with_params(
                    device: &::tensorbridge::Device,
                    params: impl ::core::borrow::Borrow<#params_name>,
                ) -> ::tensorbridge::Result<Self> {
                    ::tensorbridge::Engine::with_params(device, params).map(|engine| Self { engine })
                }

                /// The runtime behind the model (also reached through `Deref`).
                #vis fn engine(&self) -> &::tensorbridge::Engine<#name> {
                    &self.engine
                }
            }
        }

        ::tensorbridge::__if_checkpoint! {
            impl #name {
                /// Creates the model on `device` with the parameters of a checkpoint that
                /// `save` wrote (see [`tensorbridge::Engine::load`]).
                #vis fn load(
                    device: &::tensorbridge::Device,
                    path: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::tensorbridge::Result<Self> {
                    ::tensorbridge::Engine::load(device, path).map(|engine| Self { engine })
                }

                /// Creates the model on `device` from a PyTorch state dict saved as safetensors
                /// (see [`tensorbridge::Engine::from_pytorch`]).
                #vis fn from_pytorch(
                    device: &::tensorbridge::Device,
                    path: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::tensorbridge::Result<Self> {
                    ::tensorbridge::Engine::from_pytorch(device, path).map(|engine| Self { engine })
                }
            }
        }

        ::tensorbridge::__if_onnx! {
            impl #name {
                /// Creates the model on `device` from an ONNX file of an MLP classifier with
                /// this declaration's layers (see [`tensorbridge::Engine::from_onnx`]).
                #vis fn from_onnx(
                    device: &::tensorbridge::Device,
                    path: impl ::core::convert::AsRef<::std::path::Path>,
                ) -> ::tensorbridge::Result<Self> {
                    ::tensorbridge::Engine::from_onnx(device, path).map(|engine| Self { engine })
                }
            }
        }

        ::tensorbridge::__if_opencl! {
            impl #name {
                /// The complete OpenCL C source specialised for this model's shapes.
                #vis fn kernel_source() -> &'static str {
                    static SOURCE: ::tensorbridge::__private::OnceLock<::tensorbridge::__private::String> =
                        ::tensorbridge::__private::OnceLock::new();
                    SOURCE.get_or_init(::tensorbridge::__private::kernel_source::<Self>)
                }
            }
        }

        ::tensorbridge::__if_no_std! {
            impl #name {
                /// The model on the CPU core, initialised from `tensorbridge::DEFAULT_SEED`
                /// (see [`tensorbridge::cpu::Cpu::with_seed`]).
                #vis fn new() -> Self {
                    Self { engine: ::tensorbridge::cpu::Cpu::with_seed(::tensorbridge::DEFAULT_SEED) }
                }

                /// The model on the CPU core with the given parameters, by value or by
                /// reference (see [`tensorbridge::cpu::Cpu::with_params`]).
                #vis fn with_params(
                    params: impl ::core::borrow::Borrow<#params_name>,
                ) -> ::tensorbridge::Result<Self> {
                    ::tensorbridge::cpu::Cpu::with_params(params.borrow()).map(|engine| Self { engine })
                }
            }
        }

        impl ::core::ops::Deref for #name {
            type Target = ::tensorbridge::__private::EngineOf<#name>;
            fn deref(&self) -> &Self::Target {
                &self.engine
            }
        }

        impl ::core::ops::DerefMut for #name {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.engine
            }
        }

        #int8_items

        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.engine, f)
            }
        }
    }
}
