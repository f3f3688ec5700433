//! `impl Model`: the shapes, the hidden layers' activations, the host types, and the CPU
//! train step's fixed-size products.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{host_matrix, Names};
use crate::spec::Storage;

pub fn items(n: &Names) -> TokenStream {
    let Names { spec, name, name_str, params_name, layers, store_ty, .. } = n;
    let (batch, features, classes) = (spec.batch, spec.features, spec.classes);
    let activations = spec.activations.iter().map(|v| {
        let v = format_ident!("{}", v);
        quote!(::tensorbridge::Activation::#v)
    });
    let f32_ty = quote!(f32);
    let u32_ty = quote!(u32);
    let input_ty = host_matrix(store_ty, batch, features);
    let labels_ty = host_matrix(&u32_ty, batch, 1);
    let logits_ty = host_matrix(&f32_ty, batch, classes);
    // f16 storage: the gradients have a struct of their own (see `params`).
    let grads_ty = match spec.storage {
        Storage::F32 => quote!(#params_name),
        Storage::F16 => {
            let grads_name = format_ident!("{}Grads", name);
            quote!(#grads_name)
        }
    };
    let is_f16 = spec.storage == Storage::F16;
    let optimizer_ty = format_ident!("{}", spec.optimizer.type_name());
    // The CPU train step's fixed-size products, one match arm per layer with its sizes as
    // const generic arguments (see `tensorbridge::Model::fixed_product`).
    let fixed_arms = layers.windows(2).enumerate().map(|(l, w)| {
        let (fan_in, fan_out) = (w[0], w[1]);
        quote!(#l => ::tensorbridge::__private::fixed_layer::<MR, NR, #batch, #fan_in, #fan_out>(p),)
    });
    quote! {
        impl ::tensorbridge::Model for #name {
            const NAME: &'static str = #name_str;
            const BATCH: usize = #batch;
            const FEATURES: usize = #features;
            const CLASSES: usize = #classes;
            const LAYERS: &'static [usize] = &[#(#layers),*];
            const ACTIVATIONS: &'static [::tensorbridge::Activation] = &[#(#activations),*];
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
            type Optimizer = ::tensorbridge::optim::#optimizer_ty;
            type OptState = ::tensorbridge::layout::FlatParams<{
                <::tensorbridge::optim::#optimizer_ty as ::tensorbridge::optim::Optimizer>::MOMENTS
                    * ::tensorbridge::layout::param_count(&[#(#layers),*])
            }>;

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

    }
}
