//! The generated OpenCL source of the seed's model, pinned in
//! `tests/snapshots/seed_kernels.cl`. After an intended change, regenerate it with
//! `TENSORBRIDGE_UPDATE_SNAPSHOTS=1 cargo test --test suite -- opencl_snapshot` and review the diff.

tensorbridge::model! {
    /// The seed's cat-vs-dog head.
    pub struct CatDog { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// Another shape.
    pub struct Other { batch: 3, features: 5, classes: 7, hidden: [6] }
}

fn the_seed_models_source_matches_the_snapshot() {
    let path = crate::support::repo().join("tests/snapshots/seed_kernels.cl");
    let source = CatDog::kernel_source();
    if std::env::var("TENSORBRIDGE_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, source).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert!(source == expected, "kernel source changed; see the module docs to update {}", path.display());
}

fn the_source_is_specialised_per_shape() {
    let (a, b) = (CatDog::kernel_source(), Other::kernel_source());
    assert_ne!(a, b);
    assert!(a.contains("#define TB_BATCH 2\n") && a.contains("#define TB_FEATURES 4\n"));
    assert!(
        b.contains("#define TB_CLASSES 7\n")
            && b.contains("#define TB_RELU_0 1\n")
            && b.contains("#define TB_RELU_1 0\n")
    );
    for kernel in ["tb_forward", "tb_loss", "tb_backward", "tb_backward_inputs", "tb_sgd", "tb_train_step"] {
        assert!(a.contains(&format!("void {kernel}(")), "{kernel}");
    }
}

crate::tests! {
    plain the_seed_models_source_matches_the_snapshot,
    plain the_source_is_specialised_per_shape,
}
