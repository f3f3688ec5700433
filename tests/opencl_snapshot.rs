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
            && b.contains("#define TB_ACT_0 TB_ACT_RELU\n")
            && b.contains("#define TB_ACT_1 TB_ACT_IDENTITY\n")
            && b.contains("#define TB_ACT_IN_1 TB_ACT_RELU\n")
    );
    for kernel in ["tb_forward", "tb_loss", "tb_backward", "tb_backward_inputs", "tb_sgd", "tb_train_step"] {
        assert!(a.contains(&format!("void {kernel}(")), "{kernel}");
    }
}

/// The fused kernel's by-value batch is read only by its word-by-word copy, at constant
/// offsets, never indexed by a work-item's position: Mesa 22.3's rusticl (llvmpipe)
/// crashed compiling a kernel-argument load at an offset that varies between work-items.
fn the_by_value_batch_is_read_at_constant_offsets_only() {
    for source in [CatDog::kernel_source(), Other::kernel_source()] {
        let uses: Vec<&str> =
            source.lines().map(str::trim).filter(|l| l.contains("batch_arg") && !l.starts_with("//")).collect();
        assert_eq!(
            uses,
            [
                "__global float *logits_out, const tb_batch_words batch_arg,",
                "#define TB_ARG_COPY(i) arg_w[i] = batch_arg.w[i];",
            ],
            "every read of `batch_arg` but the copy indexes it at run time"
        );
        assert!(source.contains("    TB_ARG_LIST(TB_ARG_COPY)\n"));
    }
    assert!(CatDog::kernel_source()
        .contains("\n#define TB_ARG_LIST(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9)\n"));
}

crate::tests! {
    plain the_seed_models_source_matches_the_snapshot,
    plain the_source_is_specialised_per_shape,
    plain the_by_value_batch_is_read_at_constant_offsets_only,
}
