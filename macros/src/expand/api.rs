//! The model's API around its engine: the constructors (`new`, `with_params`, `load`,
//! `from_pytorch`, `from_onnx`, and the `no_std` core's), `kernel_source`, `Deref` and
//! `Debug`.

use proc_macro2::TokenStream;
use quote::quote;

use super::Names;

pub fn items(n: &Names) -> TokenStream {
    let Names { spec, name, params_name, .. } = n;
    let vis = &spec.vis;
    quote! {
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

        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.engine, f)
            }
        }
    }
}
