// tensorbridge: the whole step in one launch and one work-group, for models whose
// activations fit in local memory (TB_FUSED == 1, decided from the shape in
// src/kernels.rs; the host also checks the device's limits before using it).
//
// `mode` picks how far it goes (uniform across the work-group):
//   TB_MODE_FORWARD    logits -> logits_out
//   TB_MODE_LOSS       + mean softmax cross-entropy -> losses[loss_slot]
//   TB_MODE_GRADIENTS  + dL/dparams -> grads
//   TB_MODE_STEP       + params -= lr * grads, unless the loss is not finite or an updated
//                      parameter would not fit the storage (then the step's status word,
//                      losses[loss_slot + 1], holds ~k of the first such parameter k and
//                      nothing is written)
// The batch (from the `x`/`batch` buffer, or from `batch_arg` when `batch_in_arg`) and
// every activation and delta live in local memory; parameters and
// gradients stay in global memory. Work-items stride over each stage's outputs, with a
// barrier between stages.

#if TB_FUSED

// z = act(a . W + b) for one layer (TB_ACT_l: identity for the output layer).
inline void tb_local_dense(__global const TB_P_T *w, __global const TB_P_T *bias,
                           __local const float *a, __local float *z,
                           const int n_in, const int n_out, const int act, const int lid) {
    TB_STRIDED_FOR(k, TB_BATCH * n_out, TB_FUSED_WG, lid) {
        const int r = k % TB_BATCH;
        const int o = k / TB_BATCH;
        float acc = TB_LOAD_P(bias, o);
        for (int i = 0; i < n_in; ++i) {
            acc += a[i * TB_BATCH + r] * TB_LOAD_P(w, o * n_in + i);
        }
        z[k] = tb_act(act, acc);
    }
}

// gw[i, o] = sum_{r < rows} a[r, i] dz[r, o]; gb[o] = sum_{r < rows} dz[r, o] (gb follows gw).
inline void tb_local_grad_weights(__local const float *a, __local const float *dz,
                                  __global float *gw, const int n_in, const int n_out,
                                  const int rows, const int lid) {
    TB_STRIDED_FOR(k, n_in * n_out + n_out, TB_FUSED_WG, lid) {
        float acc = 0.0f;
        if (k < n_in * n_out) {
            const int o = k / n_in;
            const int i = k % n_in;
            for (int r = 0; r < rows; ++r) {
                acc += a[i * TB_BATCH + r] * dz[o * TB_BATCH + r];
            }
        } else {
            const int o = k - n_in * n_out;
            for (int r = 0; r < rows; ++r) {
                acc += dz[o * TB_BATCH + r];
            }
        }
        gw[k] = acc;
    }
}

// da[r, i] = tb_act_grad(below, sum_o dz[r, o] w[i, o], a[r, i]), a being the output of
// the layer below, after its activation `below`.
inline void tb_local_grad_inputs(__global const TB_P_T *w, __local const float *dz,
                                 __local float *da, __local const float *a,
                                 const int n_in, const int n_out, const int below, const int lid) {
    TB_STRIDED_FOR(k, TB_BATCH * n_in, TB_FUSED_WG, lid) {
        const int r = k % TB_BATCH;
        const int i = k / TB_BATCH;
        float acc = 0.0f;
        for (int o = 0; o < n_out; ++o) {
            acc += dz[o * TB_BATCH + r] * TB_LOAD_P(w, o * n_in + i);
        }
        da[k] = tb_act_grad(below, acc, a[k]);
    }
}

__kernel __attribute__((reqd_work_group_size(TB_FUSED_WG, 1, 1)))
void tb_train_step(__global TB_P_T *params, __global float *grads,
                   __global const TB_X_T *x, __global const float *batch,
                   const int rows_arg, const float lr, const int mode,
                   __global float *losses, const int loss_slot,
                   __global float *logits_out, const tb_batch_words batch_arg,
                   const int batch_in_arg) {
    __local float acts[TB_ACTS];
    __local float delta_a[TB_DELTA];
    __local float delta_b[TB_DELTA];
    __local float red[TB_FUSED_WG];
    __local uint labels[TB_BATCH];
    __local uint overflow;
    // The by-value batch, copied word by word at constant offsets before any control flow;
    // below, only this private copy is indexed by the work-item's position. Indexing the
    // argument itself there (a kernel-argument load at an offset that differs between
    // work-items) crashed Mesa 22.3's rusticl on llvmpipe in its compiler (SIGSEGV in
    // LLVMBuildBitCast at the first launch), whose llvmpipe code generator emits such loads
    // only at offsets uniform across the work-items.
    uint arg_w[TB_ARG_WORDS];
#define TB_ARG_COPY(i) arg_w[i] = batch_arg.w[i];
    TB_ARG_LIST(TB_ARG_COPY)
#undef TB_ARG_COPY
    const int lid = get_local_id(0);
    if (lid == 0) {
        overflow = 0u;
    }
    const int rows = tb_rows(rows_arg);
    const float inv_rows = 1.0f / (float)rows;

    // The batch, from the argument or from the buffer (`batch_in_arg` and `mode` are
    // uniform; the loops' trip counts too). A forward pass has no labels. Written without
    // branches around the loops: the same loops inside `if (batch_in_arg) {...} else
    // {...}` made PoCL 3.1 compute wrong gradients at batch 13 (work-group 256).
    TB_STRIDED_FOR(k, TB_BATCH * TB_FEATURES, TB_FUSED_WG, lid) {
        acts[k] = batch_in_arg ? TB_LOAD_ARG_X(arg_w, min(k, TB_ARG_X_MAX)) : TB_LOAD_X(x, k);
    }
    const int n_labels = (mode == TB_MODE_FORWARD) ? 0 : TB_BATCH;
    TB_STRIDED_FOR(k, n_labels, TB_FUSED_WG, lid) {
        labels[k] = batch_in_arg ? tb_clamp_label(arg_w[min(TB_Y + k, TB_ARG_WORDS - 1)])
                                 : tb_label(batch, k);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

#define TB_FUSED_FORWARD(l)                                                            \
    tb_local_dense(params + TB_W_##l, params + TB_B_##l, acts + TB_AIN_##l,             \
                   acts + TB_AOUT_##l, TB_IN_##l, TB_OUT_##l, TB_ACT_##l, lid);         \
    barrier(CLK_LOCAL_MEM_FENCE);
    TB_LAYER_LIST(TB_FUSED_FORWARD)
#undef TB_FUSED_FORWARD

    __local const float *logits = acts + TB_AOUT_LAST;
    if (mode == TB_MODE_FORWARD) {
        TB_STRIDED_FOR(k, TB_BATCH * TB_CLASSES, TB_FUSED_WG, lid) {
            logits_out[k] = logits[k];
        }
        return;
    }

    float part = 0.0f;
    TB_STRIDED_FOR(r, TB_BATCH, TB_FUSED_WG, lid) {
        if (r >= rows) {
            for (int c = 0; c < TB_CLASSES; ++c) {
                delta_a[c * TB_BATCH + r] = 0.0f;
            }
            continue;
        }
        float row_loss;
        TB_ROW_LOSS((logits + r), (delta_a + r), labels[r], inv_rows, row_loss);
        part += row_loss;
    }
    red[lid] = part;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = TB_FUSED_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float loss = red[0] * inv_rows;
    if (lid == 0) {
        losses[loss_slot] = loss;
        losses[loss_slot + 1] = 0.0f;
    }
    if (mode == TB_MODE_LOSS) {
        return;
    }

    __local float *dz = delta_a;
    __local float *dz_below = delta_b;
#define TB_FUSED_BACKWARD(l)                                                           \
    tb_local_grad_weights(acts + TB_AIN_##l, dz, grads + TB_W_##l, TB_IN_##l,           \
                          TB_OUT_##l, rows, lid);                                       \
    if (l > 0) {                                                                        \
        tb_local_grad_inputs(params + TB_W_##l, dz, dz_below, acts + TB_AIN_##l,        \
                             TB_IN_##l, TB_OUT_##l, TB_ACT_IN_##l, lid);                \
        barrier(CLK_LOCAL_MEM_FENCE);                                                   \
        __local float *swap_ = dz;                                                      \
        dz = dz_below;                                                                  \
        dz_below = swap_;                                                               \
    }
    TB_LAYER_LIST_REV(TB_FUSED_BACKWARD)
#undef TB_FUSED_BACKWARD

    // Every work-item reaches this barrier, whatever the mode: barriers stay out of
    // run-time conditions, which PoCL 3.1 handles badly.
    barrier(CLK_GLOBAL_MEM_FENCE);
    // Check every update before writing any: ~k of this work-item's first parameter k that
    // would not fit the storage (0 if none), the work-group's largest (the smallest k) in
    // `overflow` through a local atomic taken only on that cold path.
    const int step = mode == TB_MODE_STEP && isfinite(loss);
    uint first = 0u;
    if (step) {
        TB_STRIDED_FOR(k, TB_PARAMS, TB_FUSED_WG, lid) {
            if (first == 0u && !tb_update_fits(tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr))) {
                first = ~(uint)k;
            }
        }
    }
    if (first != 0u) {
        atomic_max(&overflow, first);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (step && overflow == 0u) {
        TB_STRIDED_FOR(k, TB_PARAMS, TB_FUSED_WG, lid) {
            TB_STORE_P(params, k, tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr));
        }
    }
    if (step && lid == 0) {
        ((__global uint *)losses)[loss_slot + 1] = overflow;
    }
}

#else

// The model is too large for one work-group: the host runs the tiled kernels instead.
__kernel void tb_train_step(__global float *params) {
}

#endif
