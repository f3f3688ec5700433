//! What `model!` generates: two differently sized models side by side in one module, an
//! MLP's parameter fields, boxed host buffers for large shapes, attributes passing through.

use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::{Device, HostTensor, Model, Params};

tensorbridge::model! {
    /// A small head.
    #[must_use = "a model does nothing unless used"]
    pub struct Small { batch: 2, features: 4, classes: 2 }
}

tensorbridge::model! {
    pub(crate) struct Wider { batch: 16, features: 4, classes: 3, }
}

tensorbridge::model! {
    struct TwoHidden { batch: 3, features: 5, hidden: [6, 4], classes: 3 }
}

tensorbridge::model! {
    struct NoHidden { batch: 1, features: 1, hidden: [], classes: 2 }
}

tensorbridge::model! {
    /// Big enough that its batch (300 x 100 = 30000 elements) and w0 are boxed.
    struct Big { batch: 300, features: 100, classes: 200 }
}

fn two_models_in_one_module_do_not_collide() {
    assert_eq!((Small::BATCH, Small::FEATURES, Small::CLASSES), (2, 4, 2));
    assert_eq!((Wider::BATCH, Wider::FEATURES, Wider::CLASSES), (16, 4, 3));
    assert_eq!(<SmallParams as Params>::LEN, 4 * 2 + 2);
    assert_eq!(<WiderParams as Params>::LEN, 4 * 3 + 3);
    let device = Device::cpu();
    let small = Small::new(&device).unwrap();
    let wider = Wider::new(&device).unwrap();
    assert_eq!(small.logits(&SMatrix::<f32, 2, 4>::zeros()).unwrap().shape(), (2, 2));
    assert_eq!(wider.logits(&SMatrix::<f32, 16, 4>::zeros()).unwrap().shape(), (16, 3));
    assert_ne!(Small::kernel_source(), Wider::kernel_source());
}

fn mlp_params_have_one_pair_per_layer_in_order() {
    let p = TwoHidden::new(&Device::cpu()).unwrap().params().unwrap();
    let _: (&SMatrix<f32, 5, 6>, &SVector<f32, 6>) = (&p.w0, &p.b0);
    let _: (&SMatrix<f32, 6, 4>, &SVector<f32, 4>) = (&p.w1, &p.b1);
    let _: (&SMatrix<f32, 4, 3>, &SVector<f32, 3>) = (&p.w2, &p.b2);
    assert_eq!(TwoHidden::LAYERS, &[5, 6, 4, 3]);
    assert_eq!(NoHidden::LAYERS, &[1, 2]);
    // Flat layout: w0, b0, w1, b1, w2, b2, each matrix column-major.
    let mut flat = vec![0.0; <TwoHiddenParams as Params>::LEN];
    p.write_flat(&mut flat);
    assert_eq!(flat.len(), 5 * 6 + 6 + 6 * 4 + 4 + 4 * 3 + 3);
    assert_eq!(flat[1], p.w0[(1, 0)]);
    assert_eq!(flat[5], p.w0[(0, 1)]);
    assert_eq!(TwoHiddenParams::from_flat(&flat), p);
}

fn hidden_layers_are_he_initialised_and_the_head_lecun() {
    let p = TwoHidden::new(&Device::cpu()).unwrap().params().unwrap();
    let w0_mean_sq = p.w0.iter().map(|v| v * v).sum::<f32>() / 30.0;
    assert!(w0_mean_sq > 0.05 && w0_mean_sq < 1.5, "w0 variance {w0_mean_sq} (He: 2/5)");
    assert!(p.b0.iter().chain(p.b1.iter()).chain(p.b2.iter()).all(|&b| b == 0.0));
}

fn large_host_buffers_are_boxed_and_stay_statically_sized() {
    let _: fn(&Big) -> &tensorbridge::Engine<Big> = |b| b;
    let x: <Big as Model>::Input = tensorbridge::boxed_zeros::<f32, 300, 100>();
    let _: Box<SMatrix<f32, 300, 100>> = x.clone();
    assert_eq!(<<Big as Model>::Input as HostTensor>::ROWS, 300);
    let model = Big::new(&Device::cpu()).unwrap();
    let p = model.params().unwrap();
    let _: Box<SMatrix<f32, 100, 200>> = p.w0.clone();
    let _: &SVector<f32, 200> = &p.b0;
    let logits = model.logits(&x).unwrap();
    // Zero input, zero bias: every logit is exactly zero.
    assert!(logits.iter().all(|&v| v == 0.0));
    assert_eq!(logits.shape(), (300, 200));
}

tensorbridge::model! {
    /// A 1024 x 1024 head: `w0` alone is 4 MiB, boxed.
    struct Square { batch: 2, features: 1024, classes: 1024 }
}

fn cloning_large_params_never_goes_through_the_stack() {
    let params = Square::new(&Device::cpu()).unwrap().params().unwrap();
    // A 256 KiB stack: a clone that built the 4 MiB matrix on the stack would overflow it
    // (and abort the test process).
    let copy = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let copy = params.clone();
            assert_eq!(copy, params);
            copy.w0[(1023, 1023)]
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(copy.is_finite());
}

fn f16_host_matrices_have_nalgebras_constructors() {
    let z = SMatrix::<tensorbridge::half::f16, 2, 3>::zeros();
    assert!(z.iter().all(|v| v.to_f32() == 0.0));
}

crate::tests! {
    plain two_models_in_one_module_do_not_collide,
    plain mlp_params_have_one_pair_per_layer_in_order,
    plain hidden_layers_are_he_initialised_and_the_head_lecun,
    plain large_host_buffers_are_boxed_and_stay_statically_sized,
    plain cloning_large_params_never_goes_through_the_stack,
    plain f16_host_matrices_have_nalgebras_constructors,
}
