// tensorbridge: kernels specialised for `CatDog`
#define TB_BATCH 2
#define TB_FEATURES 4
#define TB_CLASSES 2
#define TB_LAYERS 1
#define TB_PARAMS 10
#define TB_MAX_WIDTH 4
#define TB_Y 8
#define TB_ACTS 12
#define TB_DELTA 4
#define TB_FUSED 1
#define TB_FUSED_WG 16
#define TB_IN_0 4
#define TB_OUT_0 2
#define TB_W_0 0
#define TB_B_0 8
#define TB_RELU_0 0
#define TB_AIN_0 0
#define TB_AOUT_0 8
#define TB_AOUT_LAST 8
#define TB_LAYER_LIST(X) X(0)
#define TB_LAYER_LIST_REV(X) X(0)

// ---- cl/common.cl
// tensorbridge: helpers shared by every kernel.
//
// Layouts (column-major, as nalgebra stores them):
//   batch x      [TB_BATCH x TB_FEATURES]  x[f * TB_BATCH + r]
//   labels       TB_BATCH uints stored as raw bits after x in the batch buffer, at the
//                32-bit word TB_Y (x is TB_X_T: float, or half two a word)
//   activations  layer l reads [TB_BATCH x TB_IN_l] at TB_AIN_l and writes
//                [TB_BATCH x TB_OUT_l] at TB_AOUT_l of the activation scratch
//   parameters   per layer: w_l [TB_IN_l x TB_OUT_l] at TB_W_l (w[o * in + i]),
//                then b_l [TB_OUT_l] at TB_B_l = TB_W_l + TB_IN_l * TB_OUT_l
//   gradients    the same layout as the parameters
//
// The shape constants are #defined in front of this file (see `defines` in
// src/kernels.rs); TB_TILE comes from the build options (the host picks it from the
// device's work-group limit), with a default here.

#ifndef TB_TILE
#define TB_TILE 16
#endif
// Row stride of a local tile: one spare column avoids bank conflicts on GPUs.
#define TB_TILE_STRIDE (TB_TILE + 1)

// `for (K = LID; K < N; K += WG)` in a form PoCL 3.1 compiles correctly: a trip count that
// is the same for every work-item, and the bound checked inside. The plain form, after a
// barrier, made PoCL's work-item loops run past N (it wrote past the end of the parameter
// buffer: heap corruption at iris's shape). A `continue` in the body moves to the next K.
#define TB_STRIDED_FOR(K, N, WG, LID)                                  \
    for (int K##_base_ = 0; K##_base_ < (N); K##_base_ += (WG))       \
        if (K##_base_ + (LID) < (N))                                   \
            for (int K = K##_base_ + (LID), K##_once_ = 1; K##_once_; K##_once_ = 0)

// Storage of the batch's features and of the parameters: `float`, or `half` when the host
// #defines TB_STORAGE_F16 (`storage: f16`). Half values are only ever loaded and stored,
// through the core vload_half / vstore_half_rte (round to nearest even, as the host's
// half::f16::from_f32), so no cl_khr_fp16 is needed; every arithmetic operation and
// every accumulator is float. Gradients, activations, logits and losses are always float.
#ifdef TB_STORAGE_F16
#define TB_X_T half
#define TB_P_T half
#define TB_LOAD_X(p, k) vload_half((k), (p))
#define TB_LOAD_P(p, k) vload_half((k), (p))
#define TB_STORE_P(p, k, v) vstore_half_rte((v), (k), (p))
#else
#define TB_X_T float
#define TB_P_T float
#define TB_LOAD_X(p, k) ((p)[k])
#define TB_LOAD_P(p, k) ((p)[k])
#define TB_STORE_P(p, k, v) ((p)[k] = (v))
#endif

// What the fused kernel and the host agree `mode` means.
#define TB_MODE_FORWARD 0
#define TB_MODE_LOSS 1
#define TB_MODE_GRADIENTS 2
#define TB_MODE_STEP 3

// A label read from the batch buffer. Labels are validated on the host; the clamp only
// guarantees that no input whatever can make a kernel read outside the logits.
inline uint tb_label(__global const float *batch, const int r) {
    return min(as_uint(batch[TB_Y + r]), (uint)(TB_CLASSES - 1));
}

// The number of rows that count, clamped to 1..=TB_BATCH for the same reason.
inline int tb_rows(const int rows) {
    return clamp(rows, 1, TB_BATCH);
}

// The shape of layer `layer`, looked up at run time by the tiled kernels. The lookup is a
// switch over constants, and the kernels call their tiled bodies after it, outside any
// branch: a barrier inside a switch is legal when uniform, but some compilers handle it
// badly (PoCL 3.1 corrupted memory in a probe).
typedef struct {
    int n_in;
    int n_out;
    int w;
    int relu;
} tb_layer;

inline tb_layer tb_layer_shape(const int layer) {
    tb_layer s = {0, 0, 0, 0};
#define TB_SHAPE_CASE(l)    \
    case l:                 \
        s.n_in = TB_IN_##l;   \
        s.n_out = TB_OUT_##l; \
        s.w = TB_W_##l;       \
        s.relu = TB_RELU_##l; \
        break;
    switch (layer) {
        TB_LAYER_LIST(TB_SHAPE_CASE)
        default:
            break;
    }
#undef TB_SHAPE_CASE
    return s;
}

// f16 storage, tiled path: the batch widened to float at the start of the activation
// scratch, where the tiled kernels read layer 0's input. NDRange: round_up(TB_BATCH *
// TB_FEATURES, local size). Never launched for f32 storage.
__kernel void tb_widen_x(__global const TB_X_T *x, __global float *out) {
    const int k = get_global_id(0);
    if (k < TB_BATCH * TB_FEATURES) {
        out[k] = TB_LOAD_X(x, k);
    }
}

// ---- cl/forward.cl
// tensorbridge: the forward pass of one dense layer, tiled through local memory.
//
// z[r, o] = b[o] + sum_i a[r, i] * w[i, o], then ReLU for hidden layers (NaN is kept, as
// on the CPU backend, so a diverged value still surfaces as a non-finite loss).
// NDRange: (round_up(TB_BATCH, TB_TILE), round_up(TB_OUT_l, TB_TILE)), local
// (TB_TILE, TB_TILE). Out-of-range items load zeros and store nothing.

inline void tb_tiled_dense(__global const TB_P_T *w, __global const TB_P_T *bias,
                           __global const float *a, __global float *z,
                           const int n_in, const int n_out, const int relu,
                           __local float *ta, __local float *tw) {
    const int lr = get_local_id(0);
    const int lc = get_local_id(1);
    const int r = get_group_id(0) * TB_TILE + lr;
    const int o = get_group_id(1) * TB_TILE + lc;
    float acc = (r < TB_BATCH && o < n_out) ? TB_LOAD_P(bias, o) : 0.0f;
    for (int k0 = 0; k0 < n_in; k0 += TB_TILE) {
        // ta[kk][rr] = a(row0 + rr, k0 + kk); tw[oo][kk] = w(k0 + kk, col0 + oo).
        const int ka = k0 + lc;
        ta[lc * TB_TILE_STRIDE + lr] = (r < TB_BATCH && ka < n_in) ? a[ka * TB_BATCH + r] : 0.0f;
        const int kw = k0 + lr;
        tw[lc * TB_TILE_STRIDE + lr] = (o < n_out && kw < n_in) ? TB_LOAD_P(w, o * n_in + kw) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TB_TILE; ++kk) {
            acc += ta[kk * TB_TILE_STRIDE + lr] * tw[lc * TB_TILE_STRIDE + kk];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (r < TB_BATCH && o < n_out) {
        if (relu && acc < 0.0f) {
            acc = 0.0f;
        }
        z[o * TB_BATCH + r] = acc;
    }
}

// Layer `layer` of the model: reads `in + in_off`, writes `out + out_off`.
__kernel __attribute__((reqd_work_group_size(TB_TILE, TB_TILE, 1)))
void tb_forward(__global const TB_P_T *params,
                __global const float *in, const int in_off,
                __global float *out, const int out_off,
                const int layer) {
    __local float ta[TB_TILE * TB_TILE_STRIDE];
    __local float tw[TB_TILE * TB_TILE_STRIDE];
    const tb_layer s = tb_layer_shape(layer);
    tb_tiled_dense(params + s.w, params + s.w + s.n_in * s.n_out, in + in_off, out + out_off,
                   s.n_in, s.n_out, s.relu, ta, tw);
}

// ---- cl/loss.cl
// tensorbridge: mean softmax cross-entropy over the first `rows` rows, and its gradient
// with respect to the logits.
//
// One work-group (any power-of-two size up to TB_LOSS_WG) strides over the rows. Per row,
// stably: m = max_c z[c], s = sum_c exp(z[c] - m), loss_r = (m - z[label]) + log(s);
// dz[c] = exp(z[c] - m) / s / rows - [c == label] / rows; padding rows get dz = 0.
// A NaN logit makes the loss NaN (never silently finite), so the update is skipped.
// The mean goes to losses[loss_slot]; losses[loss_slot + 1] (the step's update status) is
// cleared.

#define TB_LOSS_WG 256

// The loss of row r (r < rows), writing that row's dz. Shared with the fused kernel
// through this macro, so both compute exactly the same arithmetic. The row's maximum
// contributes exp(0) = 1 exactly, so log(sum) = log1p(rest), which keeps a confident row's
// tiny loss accurate (as the CPU backend does).
#define TB_ROW_LOSS(Z, DZ, LABEL, INV_ROWS, OUT_LOSS)                     \
    do {                                                                  \
        int top_ = 0;                                                     \
        for (int c_ = 1; c_ < TB_CLASSES; ++c_) {                         \
            if (Z[c_ * TB_BATCH] > Z[top_ * TB_BATCH]) {                  \
                top_ = c_;                                                \
            }                                                             \
        }                                                                 \
        const float m_ = Z[top_ * TB_BATCH];                              \
        float rest_ = 0.0f;                                               \
        for (int c_ = 0; c_ < TB_CLASSES; ++c_) {                         \
            const float e_ = (c_ == top_) ? 1.0f : exp(Z[c_ * TB_BATCH] - m_); \
            DZ[c_ * TB_BATCH] = e_;                                       \
            if (c_ != top_) {                                             \
                rest_ += e_;                                              \
            }                                                             \
        }                                                                 \
        OUT_LOSS = (m_ - Z[(LABEL) * TB_BATCH]) + log1p(rest_);          \
        const float scale_ = (INV_ROWS) / (1.0f + rest_);                 \
        for (int c_ = 0; c_ < TB_CLASSES; ++c_) {                         \
            DZ[c_ * TB_BATCH] *= scale_;                                  \
        }                                                                 \
        DZ[(LABEL) * TB_BATCH] -= (INV_ROWS);                             \
    } while (0)

__kernel void tb_loss(__global const float *logits, const int logits_off,
                      __global const float *batch, const int rows_arg,
                      __global float *dz,
                      __global float *losses, const int loss_slot) {
    __local float red[TB_LOSS_WG];
    const int lid = get_local_id(0);
    const int wg = min((int)get_local_size(0), TB_LOSS_WG);
    const int rows = tb_rows(rows_arg);
    const float inv_rows = 1.0f / (float)rows;
    __global const float *z = logits + logits_off;
    float part = 0.0f;
    TB_STRIDED_FOR(r, TB_BATCH, wg, lid) {
        if (r >= rows) {
            for (int c = 0; c < TB_CLASSES; ++c) {
                dz[c * TB_BATCH + r] = 0.0f;
            }
            continue;
        }
        float row_loss;
        TB_ROW_LOSS((z + r), (dz + r), tb_label(batch, r), inv_rows, row_loss);
        part += row_loss;
    }
    if (lid < TB_LOSS_WG) {
        red[lid] = part;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = wg / 2; s > 0; s >>= 1) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        losses[loss_slot] = red[0] * inv_rows;
        // The step's update status (see update.cl): clear until tb_check_update flags it.
        losses[loss_slot + 1] = 0.0f;
    }
}

// ---- cl/backward.cl
// tensorbridge: the backward pass of one dense layer, tiled through local memory.
//
// tb_grad_weights: gw[i, o] = sum_{r < rows} a[r, i] * dz[r, o] and gb[o] = sum_r dz[r, o]
//   (the bias is input i = TB_IN_l with a == 1). NDRange (round_up(TB_IN_l + 1, TB_TILE),
//   round_up(TB_OUT_l, TB_TILE)). Only the first `rows` rows are read: padding rows
//   contribute nothing whatever they hold.
// tb_grad_inputs: da[r, i] = (sum_o dz[r, o] * w[i, o]) * (a[r, i] > 0), the delta of the
//   layer below (a is that layer's ReLU output). NDRange (round_up(TB_BATCH, TB_TILE),
//   round_up(TB_IN_l, TB_TILE)).

inline void tb_tiled_grad_weights(__global const float *a, __global const float *dz,
                                  __global float *gw, const int n_in, const int n_out,
                                  const int rows, __local float *ta, __local float *tz) {
    const int li = get_local_id(0);
    const int lo = get_local_id(1);
    const int i0 = get_group_id(0) * TB_TILE;
    const int o0 = get_group_id(1) * TB_TILE;
    const int i = i0 + li;
    const int o = o0 + lo;
    float acc = 0.0f;
    for (int r0 = 0; r0 < rows; r0 += TB_TILE) {
        // ta[kk][ii] = a(r0 + kk, i0 + ii) (1 for the bias column); tz[oo][kk] = dz(r0 + kk, o0 + oo).
        const int r = r0 + li;
        const int ia = i0 + lo;
        float av = 0.0f;
        if (r < rows) {
            if (ia < n_in) {
                av = a[ia * TB_BATCH + r];
            } else if (ia == n_in) {
                av = 1.0f;
            }
        }
        ta[li * TB_TILE_STRIDE + lo] = av;
        tz[lo * TB_TILE_STRIDE + li] = (r < rows && o < n_out) ? dz[o * TB_BATCH + r] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TB_TILE; ++kk) {
            acc += ta[kk * TB_TILE_STRIDE + li] * tz[lo * TB_TILE_STRIDE + kk];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (o < n_out) {
        if (i < n_in) {
            gw[o * n_in + i] = acc;
        } else if (i == n_in) {
            gw[n_in * n_out + o] = acc;
        }
    }
}

inline void tb_tiled_grad_inputs(__global const TB_P_T *w, __global const float *dz,
                                 __global float *da, __global const float *a,
                                 const int n_in, const int n_out,
                                 __local float *td, __local float *tw) {
    const int lr = get_local_id(0);
    const int li = get_local_id(1);
    const int r = get_group_id(0) * TB_TILE + lr;
    const int i0 = get_group_id(1) * TB_TILE;
    const int i = i0 + li;
    float acc = 0.0f;
    for (int o0 = 0; o0 < n_out; o0 += TB_TILE) {
        // td[kk][rr] = dz(row0 + rr, o0 + kk); tw[kk][ii] = w(i0 + ii, o0 + kk).
        const int od = o0 + li;
        td[li * TB_TILE_STRIDE + lr] = (r < TB_BATCH && od < n_out) ? dz[od * TB_BATCH + r] : 0.0f;
        const int iw = i0 + lr;
        tw[li * TB_TILE_STRIDE + lr] = (od < n_out && iw < n_in) ? TB_LOAD_P(w, od * n_in + iw) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TB_TILE; ++kk) {
            acc += td[kk * TB_TILE_STRIDE + lr] * tw[kk * TB_TILE_STRIDE + li];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (r < TB_BATCH && i < n_in) {
        const int k = i * TB_BATCH + r;
        da[k] = (a[k] <= 0.0f) ? 0.0f : acc;
    }
}

// dL/dw_l and dL/db_l into `grads`, from the layer's input `a + a_off` and its delta `dz`.
__kernel __attribute__((reqd_work_group_size(TB_TILE, TB_TILE, 1)))
void tb_backward(__global const float *a, const int a_off,
                 __global const float *dz, __global float *grads,
                 const int layer, const int rows_arg) {
    __local float ta[TB_TILE * TB_TILE_STRIDE];
    __local float tz[TB_TILE * TB_TILE_STRIDE];
    const tb_layer s = tb_layer_shape(layer);
    tb_tiled_grad_weights(a + a_off, dz, grads + s.w, s.n_in, s.n_out, tb_rows(rows_arg), ta, tz);
}

// The delta of layer `layer - 1` (into `da`), from layer `layer`'s delta `dz`, its weights
// and its input `acts + a_off` (the ReLU output below). Never launched for layer 0.
__kernel __attribute__((reqd_work_group_size(TB_TILE, TB_TILE, 1)))
void tb_backward_inputs(__global const TB_P_T *params, __global const float *dz,
                        __global float *da, __global const float *acts, const int a_off,
                        const int layer) {
    __local float td[TB_TILE * TB_TILE_STRIDE];
    __local float tw[TB_TILE * TB_TILE_STRIDE];
    const tb_layer s = tb_layer_shape(layer);
    tb_tiled_grad_inputs(params + s.w, dz, da, acts + a_off, s.n_in, s.n_out, td, tw);
}

// ---- cl/update.cl
// tensorbridge: the SGD update p -= lr * g over every parameter, skipped entirely when the
// step's loss (losses[loss_slot], written by tb_loss) is not finite or when the step's
// update status (losses[loss_slot + 1], cleared by tb_loss, set by tb_check_update) says
// that some parameter's update would not fit the storage, so a diverged or overflowing
// step never corrupts the parameters. NDRange: round_up(TB_PARAMS, local size).

// |p - lr * g| from which the update no longer fits the storage once stored: float's
// infinity, or 65520 for half (halfway between 65504 and 2^16; ties to even give 2^16,
// i.e. infinity under vstore_half_rte). `!(fabs(v) < TB_UPDATE_LIMIT)` catches NaN too.
#ifdef TB_STORAGE_F16
#define TB_UPDATE_LIMIT 65520.0f
#else
#define TB_UPDATE_LIMIT INFINITY
#endif

// The updated value of a parameter, shared by the check and the store so that both
// compute the same bits.
inline float tb_sgd_value(const float p, const float g, const float lr) {
    return p - lr * g;
}

// Whether an updated value fits the storage.
inline int tb_update_fits(const float v) {
    return fabs(v) < TB_UPDATE_LIMIT;
}

// Flags the step (status word losses[loss_slot + 1] = ~k for the smallest such k, through
// atomic_max) if the update of any parameter k would not fit the storage. Reads only.
__kernel void tb_check_update(__global const TB_P_T *params, __global const float *grads, const float lr,
                              __global float *losses, const int loss_slot) {
    const int k = get_global_id(0);
    if (k < TB_PARAMS && !tb_update_fits(tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr))) {
        atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)k);
    }
}

__kernel void tb_sgd(__global TB_P_T *params, __global const float *grads, const float lr,
                     __global const float *losses, const int loss_slot) {
    const int k = get_global_id(0);
    if (k >= TB_PARAMS || !isfinite(losses[loss_slot]) || ((__global const uint *)losses)[loss_slot + 1] != 0u) {
        return;
    }
    TB_STORE_P(params, k, tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr));
}

// ---- cl/train_step.cl
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
// The batch and every activation and delta live in local memory; parameters and
// gradients stay in global memory. Work-items stride over each stage's outputs, with a
// barrier between stages.

#if TB_FUSED

// z = a . W + b for one layer, ReLU for hidden ones.
inline void tb_local_dense(__global const TB_P_T *w, __global const TB_P_T *bias,
                           __local const float *a, __local float *z,
                           const int n_in, const int n_out, const int relu, const int lid) {
    TB_STRIDED_FOR(k, TB_BATCH * n_out, TB_FUSED_WG, lid) {
        const int r = k % TB_BATCH;
        const int o = k / TB_BATCH;
        float acc = TB_LOAD_P(bias, o);
        for (int i = 0; i < n_in; ++i) {
            acc += a[i * TB_BATCH + r] * TB_LOAD_P(w, o * n_in + i);
        }
        if (relu && acc < 0.0f) {
            acc = 0.0f;
        }
        z[k] = acc;
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

// da[r, i] = (sum_o dz[r, o] w[i, o]) * (a[r, i] > 0).
inline void tb_local_grad_inputs(__global const TB_P_T *w, __local const float *dz,
                                 __local float *da, __local const float *a,
                                 const int n_in, const int n_out, const int lid) {
    TB_STRIDED_FOR(k, TB_BATCH * n_in, TB_FUSED_WG, lid) {
        const int r = k % TB_BATCH;
        const int i = k / TB_BATCH;
        float acc = 0.0f;
        for (int o = 0; o < n_out; ++o) {
            acc += dz[o * TB_BATCH + r] * TB_LOAD_P(w, o * n_in + i);
        }
        da[k] = (a[k] <= 0.0f) ? 0.0f : acc;
    }
}

__kernel __attribute__((reqd_work_group_size(TB_FUSED_WG, 1, 1)))
void tb_train_step(__global TB_P_T *params, __global float *grads,
                   __global const TB_X_T *x, __global const float *batch,
                   const int rows_arg, const float lr, const int mode,
                   __global float *losses, const int loss_slot,
                   __global float *logits_out) {
    __local float acts[TB_ACTS];
    __local float delta_a[TB_DELTA];
    __local float delta_b[TB_DELTA];
    __local float red[TB_FUSED_WG];
    __local uint overflow;
    const int lid = get_local_id(0);
    if (lid == 0) {
        overflow = 0u;
    }
    const int rows = tb_rows(rows_arg);
    const float inv_rows = 1.0f / (float)rows;

    TB_STRIDED_FOR(k, TB_BATCH * TB_FEATURES, TB_FUSED_WG, lid) {
        acts[k] = TB_LOAD_X(x, k);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

#define TB_FUSED_FORWARD(l)                                                            \
    tb_local_dense(params + TB_W_##l, params + TB_B_##l, acts + TB_AIN_##l,             \
                   acts + TB_AOUT_##l, TB_IN_##l, TB_OUT_##l, TB_RELU_##l, lid);        \
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
        TB_ROW_LOSS((logits + r), (delta_a + r), tb_label(batch, r), inv_rows, row_loss);
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
                             TB_IN_##l, TB_OUT_##l, lid);                               \
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
