// tensorbridge: kernels specialised for `CatDog`
#define TB_BATCH 2
#define TB_FEATURES 4
#define TB_CLASSES 2
#define TB_LAYERS 1
#define TB_PARAMS 10
#define TB_MAX_WIDTH 4
#define TB_MODE_FORWARD 0
#define TB_MODE_LOSS 1
#define TB_MODE_GRADIENTS 2
#define TB_MODE_STEP 3
#define TB_LOSS_WG 256
#define TB_UPDATE_VEC 16
#define TB_UPDATE_LIMIT INFINITY
#define TB_Y 8
#define TB_ARG_WORDS 10
#define TB_ARG_LIST(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9)
#define TB_ACTS 12
#define TB_DELTA 4
#define TB_FUSED 1
#ifndef TB_FUSED_WG
#define TB_FUSED_WG 16
#endif
#define TB_TINY 1
#define TB_TINY_CTRL 3
#define TB_TINY_STEP_WORDS 13
#define TB_TINY_STEPS 4
#define TB_TINY_OPT_STATE 0
#define TB_TINY_OPT 0
#define TB_TINY_HYPER 0
#define TB_TINY_RED 2
#define TB_TINY_WORDS 56
#define TB_TINY_ARGS const uint4 a0, const uint4 a1, const uint4 a2, const uint4 a3, const uint4 a4, const uint4 a5, const uint4 a6, const uint4 a7, const uint4 a8, const uint4 a9, const uint4 a10, const uint4 a11, const uint4 a12, const uint4 a13
#define TB_TINY_LIST(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
#define TB_TINY_ONE_WORDS 16
#define TB_TINY_ONE_ARGS const uint4 a0, const uint4 a1, const uint4 a2, const uint4 a3
#define TB_TINY_ONE_LIST(X) X(0) X(1) X(2) X(3)
#define TB_IN_0 4
#define TB_OUT_0 2
#define TB_W_0 0
#define TB_B_0 8
#define TB_ACT_0 TB_ACT_IDENTITY
#define TB_ACT_IN_0 TB_ACT_IDENTITY
#define TB_AIN_0 0
#define TB_AOUT_0 8
#define TB_AOUT_LAST 8
#define TB_LAYER_LIST(X) X(0)
#define TB_LAYER_LIST_REV(X) X(0)
#define TB_ACT_IDENTITY 0
#define TB_ACT_RELU 1
#define TB_ACT_TANH 2
#define TB_ACT_SIGMOID 3
inline float tb_act(const int kind, const float x) {
    switch (kind) {
    case 0: return x;
    case 1: return x < 0.0f ? 0.0f : x;
    case 2: return tanh(x);
    case 3: return 1.0f / (1.0f + exp(-x));
    default: return x;
    }
}
inline float tb_act_grad(const int kind, const float d, const float y) {
    switch (kind) {
    case 0: return d;
    case 1: return y > 0.0f ? d : 0.0f;
    case 2: return d * (1.0f - y * y);
    case 3: return d * (y * (1.0f - y));
    default: return d;
    }
}
inline float16 tb_act16(const int kind, const float16 x) {
    switch (kind) {
    case 0: return x;
    case 1: return select(x, (float16)(0.0f), x < (float16)(0.0f));
    case 2: return tanh(x);
    case 3: return 1.0f / (1.0f + exp(-x));
    default: return x;
    }
}
inline float16 tb_act_grad16(const int kind, const float16 d, const float16 y) {
    switch (kind) {
    case 0: return d;
    case 1: return select((float16)(0.0f), d, y > (float16)(0.0f));
    case 2: return d * (1.0f - y * y);
    case 3: return d * (y * (1.0f - y));
    default: return d;
    }
}
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
#define TB_OPT_STEP 0
// The optimizer `sgd` (src/math/optim.rs).
#define TB_OPT_MOMENTS 0
#define TB_OPT_NEGLIGIBLE 2.9802322e-8f
typedef struct {
    float lr, weight_decay, momentum, nesterov, first, one_minus_beta1, beta2, one_minus_beta2, eps,
        step_size, bias2_sqrt, decay;
} tb_coeffs;
inline tb_coeffs tb_coeffs_zero(void) {
    tb_coeffs c;
    c.lr = c.weight_decay = c.momentum = c.nesterov = c.first = 0.0f;
    c.one_minus_beta1 = c.beta2 = c.one_minus_beta2 = c.eps = c.step_size = c.bias2_sqrt = 0.0f;
    c.decay = 1.0f;
    return c;
}
inline float tb_one_minus_pow(const float b, uint t) {
    float acc = 1.0f;
    float base = b;
    for (;;) {
        if (t & 1u) {
            acc *= base;
            if (acc < TB_OPT_NEGLIGIBLE) {
                return 1.0f;
            }
        }
        t >>= 1;
        if (t == 0u) {
            return 1.0f - acc;
        }
        base *= base;
        if (base < TB_OPT_NEGLIGIBLE) {
            return 1.0f;
        }
    }
}
inline tb_coeffs tb_adam_coeffs(const float lr, const float beta1, const float beta2, const float eps, const uint t) {
    tb_coeffs c = tb_coeffs_zero();
    c.lr = lr;
    c.one_minus_beta1 = 1.0f - beta1;
    c.beta2 = beta2;
    c.one_minus_beta2 = 1.0f - beta2;
    c.eps = eps;
    c.step_size = lr / tb_one_minus_pow(beta1, t);
    c.bias2_sqrt = sqrt(tb_one_minus_pow(beta2, t));
    return c;
}
inline tb_coeffs tb_opt_coeffs(const float8 h, const uint t) {
    tb_coeffs c = tb_coeffs_zero();
    c.lr = h.s0;
    c.weight_decay = h.s1;
    return c;
}
inline float tb_adam_update(const tb_coeffs c, const float p, const float g, float *m, float *v) {
    *m = c.one_minus_beta1 < 0.5f ? *m + c.one_minus_beta1 * (g - *m) : g - (g - *m) * (1.0f - c.one_minus_beta1);
    *v = *v * c.beta2 + c.one_minus_beta2 * (g * g);
    return p - c.step_size * (*m / (sqrt(*v) / c.bias2_sqrt + c.eps));
}
inline float tb_opt_update(const tb_coeffs c, const float p, const float g_in, float *m, float *v) {
    const float g = g_in + c.weight_decay * p;
    return p - c.lr * g;
}
inline float16 tb_adam_update16(const tb_coeffs c, const float16 p, const float16 g, float16 *m, float16 *v) {
    *m = c.one_minus_beta1 < 0.5f ? *m + c.one_minus_beta1 * (g - *m) : g - (g - *m) * (1.0f - c.one_minus_beta1);
    *v = *v * c.beta2 + c.one_minus_beta2 * (g * g);
    return p - c.step_size * (*m / (sqrt(*v) / c.bias2_sqrt + c.eps));
}
inline float16 tb_opt_update16(const tb_coeffs c, const float16 p, const float16 g_in, float16 *m, float16 *v) {
    const float16 g = g_in + c.weight_decay * p;
    return p - c.lr * g;
}

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
// src/kernels.rs); TB_RN, the outputs per work-item of the GEMM kernels, comes from the
// build options (src/backend/opencl/gemm.rs), with a default in cl/forward.cl.

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

// What the fused kernel and the host agree `mode` means: TB_MODE_FORWARD, TB_MODE_LOSS,
// TB_MODE_GRADIENTS and TB_MODE_STEP are #defined by the host (kernels.rs, `Mode`).

// A label read from the batch buffer. Labels are validated on the host; the clamp only
// guarantees that no input whatever can make a kernel read outside the logits.
inline uint tb_clamp_label(const uint label) {
    return min(label, (uint)(TB_CLASSES - 1));
}

inline uint tb_label(__global const float *batch, const int r) {
    return tb_clamp_label(as_uint(batch[TB_Y + r]));
}

// The batch passed by value to the fused kernel (the host's `Upload::Arguments`): the
// same 32-bit words as the batch buffer (features, then the labels at TB_Y), for batches
// of at most TB_ARG_WORDS words (#defined by the host; 1 when the shape is too large,
// and then the argument is unused).
typedef struct {
    uint w[TB_ARG_WORDS];
} tb_batch_words;

// The last feature index the argument holds (indices are clamped to it: the argument is
// read only when it holds the whole batch, but no index may leave it even then).
#ifdef TB_STORAGE_F16
#define TB_ARG_X_MAX (2 * TB_ARG_WORDS - 1)
#define TB_LOAD_ARG_X(words, k) vload_half((k), (const half *)(words))
#else
#define TB_ARG_X_MAX (TB_ARG_WORDS - 1)
#define TB_LOAD_ARG_X(words, k) as_float((words)[k])
#endif

// The number of rows that count, clamped to 1..=TB_BATCH for the same reason.
inline int tb_rows(const int rows) {
    return clamp(rows, 1, TB_BATCH);
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
// tensorbridge: the forward pass of one dense layer as a register-blocked GEMM.
//
// z[r, o] = tb_act(TB_ACT_l, b[o] + sum_i a[r, i] * w[i, o]): the layer's activation (identity for
// the output layer; NaN is kept, as on the CPU backend, so a diverged value still surfaces as a
// non-finite loss).
//
// Every work-item computes a block of TB_RM (16) consecutive batch rows x TB_RN outputs in
// registers: the 16 rows of an activation column are one float16 (the activations are
// column-major, so the rows are contiguous), the weights of an output are contiguous over
// the inputs and are read four inputs at a time (vload4). There are no barriers and no
// local memory: on a CPU device (PoCL reports its local memory as `Global`) a local tile
// is only a copy, and the caches hold the tiles; on every device the shapes are constants
// (one inlined body per layer), so the compiler specialises each layer.
// NDRange: (ceil(TB_BATCH / TB_RM), ceil(TB_OUT_l / TB_RN)) rounded up to the local size,
// which the host picks. TB_RM and TB_RN come in the build options, from
// src/backend/opencl/gemm.rs; the row loads below are written for 16.
// Out-of-range work-items return at once (no barrier follows); partial blocks read
// clamped, in-range indices and store only their in-range outputs.

#if TB_RM != 16
#error "the row loads are float16: TB_RM must be 16"
#endif

#ifdef TB_STORAGE_F16
#define TB_LOAD_P4(p, k) vload_half4(0, (p) + (k))
#else
#define TB_LOAD_P4(p, k) vload4(0, (p) + (k))
#endif

// Rows r0..r0+15 of a column-major activation column `col` (r0 < TB_BATCH). When the batch
// is not a multiple of 16, rows past its end repeat the last row (their results are never
// stored), so nothing is read past the column.
inline float16 tb_rows16(__global const float *col, const int r0) {
#if TB_BATCH % 16 == 0
    return vload16(0, col + r0);
#else
    const int last = TB_BATCH - 1;
    float t[16];
    for (int j = 0; j < 16; ++j) {
        t[j] = col[min(r0 + j, last)];
    }
    return vload16(0, t);
#endif
}

// Stores the in-range rows of `v` (rows r0..r0+15) into the column `col`.
inline void tb_store_rows16(__global float *col, const int r0, const float16 v) {
#if TB_BATCH % 16 == 0
    vstore16(v, 0, col + r0);
#else
    float t[16];
    vstore16(v, 0, t);
    for (int j = 0; j < 16; ++j) {
        if (r0 + j < TB_BATCH) {
            col[r0 + j] = t[j];
        }
    }
#endif
}

inline float tb_hsum8(const float8 v) {
    const float4 h = v.lo + v.hi;
    const float2 q = h.lo + h.hi;
    return q.x + q.y;
}

inline void tb_dense_block(__global const TB_P_T *w, __global const TB_P_T *bias,
                           __global const float *a, __global float *z,
                           const int n_in, const int n_out, const int act) {
    const int r0 = get_global_id(0) * TB_RM;
    const int o0 = get_global_id(1) * TB_RN;
    if (r0 >= TB_BATCH || o0 >= n_out) {
        return;
    }
    int oc[TB_RN];
    float16 acc[TB_RN];
#pragma unroll
    for (int n = 0; n < TB_RN; ++n) {
        oc[n] = min(o0 + n, n_out - 1) * n_in;
        acc[n] = (float16)(TB_LOAD_P(bias, min(o0 + n, n_out - 1)));
    }
    int k = 0;
    for (; k + 4 <= n_in; k += 4) {
        const float16 a0 = tb_rows16(a + (k + 0) * TB_BATCH, r0);
        const float16 a1 = tb_rows16(a + (k + 1) * TB_BATCH, r0);
        const float16 a2 = tb_rows16(a + (k + 2) * TB_BATCH, r0);
        const float16 a3 = tb_rows16(a + (k + 3) * TB_BATCH, r0);
#pragma unroll
        for (int n = 0; n < TB_RN; ++n) {
            const float4 wv = TB_LOAD_P4(w, oc[n] + k);
            acc[n] = mad(a0, (float16)(wv.x), acc[n]);
            acc[n] = mad(a1, (float16)(wv.y), acc[n]);
            acc[n] = mad(a2, (float16)(wv.z), acc[n]);
            acc[n] = mad(a3, (float16)(wv.w), acc[n]);
        }
    }
    for (; k < n_in; ++k) {
        const float16 ak = tb_rows16(a + k * TB_BATCH, r0);
#pragma unroll
        for (int n = 0; n < TB_RN; ++n) {
            acc[n] = mad(ak, (float16)(TB_LOAD_P(w, oc[n] + k)), acc[n]);
        }
    }
#pragma unroll
    for (int n = 0; n < TB_RN; ++n) {
        if (o0 + n < n_out) {
            tb_store_rows16(z + (o0 + n) * TB_BATCH, r0, tb_act16(act, acc[n]));
        }
    }
}

// Layer `layer` of the model: reads `in + in_off`, writes `out + out_off`. The switch
// holds no barrier, so a run-time branch is safe here.
__kernel void tb_forward(__global const TB_P_T *params,
                         __global const float *in, const int in_off,
                         __global float *out, const int out_off,
                         const int layer) {
#define TB_FORWARD_CASE(l)                                                              \
    case l:                                                                             \
        tb_dense_block(params + TB_W_##l, params + TB_B_##l, in + in_off, out + out_off, \
                       TB_IN_##l, TB_OUT_##l, TB_ACT_##l);                              \
        break;
    switch (layer) {
        TB_LAYER_LIST(TB_FORWARD_CASE)
        default:
            break;
    }
#undef TB_FORWARD_CASE
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

// TB_LOSS_WG (a power of two) is #defined by the host (kernels.rs, `LOSS_MAX_WG`).

// TB_ROW_LOSS, the loss of one row and its dz, is the formula of src/math/loss.rs, emitted
// into the prelude (the fused and tiny kernels use it too).

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
// tensorbridge: the backward pass of one dense layer as register-blocked GEMMs (no
// barriers, no local memory; see cl/forward.cl for the blocking and the guards).
//
// tb_backward: gw[i, o] = sum_{r < rows} a[r, i] * dz[r, o] and gb[o] = sum_{r < rows} dz[r, o].
//   A work-item computes TB_GI inputs x TB_GO outputs, both operands read 8 rows at a time
//   (float8, contiguous), accumulated as float8 partial sums and reduced at the end. The
//   extra block column i = ceil(TB_IN_l / TB_GI) computes the bias gradient of its
//   outputs. NDRange (ceil(TB_IN_l / TB_GI) + 1, ceil(TB_OUT_l / TB_GO)), rounded up to the
//   local size. Only the first `rows` rows are read: padding rows contribute nothing
//   whatever they hold.
// tb_backward_inputs: da[r, i] = tb_act_grad16(below, sum_o dz[r, o] * w[i, o], a[r, i]), the
//   delta of the layer below (a is that layer's output, after its activation `below`),
//   TB_RM rows x TB_RN inputs a work-item, the activation's derivative fused into the store. NDRange (ceil(TB_BATCH / TB_RM),
//   ceil(TB_IN_l / TB_RN)), rounded up to the local size.
// TB_GI and TB_GO come with TB_RM and TB_RN in the build options (src/backend/opencl/gemm.rs).

inline void tb_grad_weights_block(__global const float *a, __global const float *dz,
                                  __global float *gw, const int n_in, const int n_out,
                                  const int rows) {
    const int blocks_in = (n_in + TB_GI - 1) / TB_GI;
    const int ib = get_global_id(0);
    const int o0 = get_global_id(1) * TB_GO;
    if (ib > blocks_in || o0 >= n_out) {
        return;
    }
    int oc[TB_GO];
#pragma unroll
    for (int n = 0; n < TB_GO; ++n) {
        oc[n] = min(o0 + n, n_out - 1) * TB_BATCH;
    }
    if (ib == blocks_in) {
        // The bias: gb[o] = sum_r dz[r, o], after the weights (gw + n_in * n_out).
#pragma unroll
        for (int n = 0; n < TB_GO; ++n) {
            float8 s8 = (float8)(0.0f);
            int r = 0;
            for (; r + 8 <= rows; r += 8) {
                s8 += vload8(0, dz + oc[n] + r);
            }
            float s = tb_hsum8(s8);
            for (; r < rows; ++r) {
                s += dz[oc[n] + r];
            }
            if (o0 + n < n_out) {
                gw[n_in * n_out + o0 + n] = s;
            }
        }
        return;
    }
    const int i0 = ib * TB_GI;
    int ic[TB_GI];
#pragma unroll
    for (int m = 0; m < TB_GI; ++m) {
        ic[m] = min(i0 + m, n_in - 1) * TB_BATCH;
    }
    float8 acc[TB_GI][TB_GO];
#pragma unroll
    for (int m = 0; m < TB_GI; ++m) {
#pragma unroll
        for (int n = 0; n < TB_GO; ++n) {
            acc[m][n] = (float8)(0.0f);
        }
    }
    int r = 0;
    for (; r + 8 <= rows; r += 8) {
        float8 av[TB_GI];
        float8 dv[TB_GO];
#pragma unroll
        for (int m = 0; m < TB_GI; ++m) {
            av[m] = vload8(0, a + ic[m] + r);
        }
#pragma unroll
        for (int n = 0; n < TB_GO; ++n) {
            dv[n] = vload8(0, dz + oc[n] + r);
        }
#pragma unroll
        for (int m = 0; m < TB_GI; ++m) {
#pragma unroll
            for (int n = 0; n < TB_GO; ++n) {
                acc[m][n] = mad(av[m], dv[n], acc[m][n]);
            }
        }
    }
#pragma unroll
    for (int m = 0; m < TB_GI; ++m) {
#pragma unroll
        for (int n = 0; n < TB_GO; ++n) {
            float s = tb_hsum8(acc[m][n]);
            for (int rr = r; rr < rows; ++rr) {
                s = mad(a[ic[m] + rr], dz[oc[n] + rr], s);
            }
            if (i0 + m < n_in && o0 + n < n_out) {
                gw[(o0 + n) * n_in + i0 + m] = s;
            }
        }
    }
}

inline void tb_grad_inputs_block(__global const TB_P_T *w, __global const float *dz,
                                 __global float *da, __global const float *act,
                                 const int n_in, const int n_out, const int below) {
    const int r0 = get_global_id(0) * TB_RM;
    const int i0 = get_global_id(1) * TB_RN;
    if (r0 >= TB_BATCH || i0 >= n_in) {
        return;
    }
    float16 acc[TB_RN];
#pragma unroll
    for (int n = 0; n < TB_RN; ++n) {
        acc[n] = (float16)(0.0f);
    }
    if (i0 + TB_RN <= n_in) {
        for (int o = 0; o < n_out; ++o) {
            const float16 d = tb_rows16(dz + o * TB_BATCH, r0);
            __global const TB_P_T *wr = w + o * n_in + i0;
#pragma unroll
            for (int n = 0; n < TB_RN; n += 4) {
                const float4 wv = TB_LOAD_P4(wr, n);
                acc[n + 0] = mad(d, (float16)(wv.x), acc[n + 0]);
                acc[n + 1] = mad(d, (float16)(wv.y), acc[n + 1]);
                acc[n + 2] = mad(d, (float16)(wv.z), acc[n + 2]);
                acc[n + 3] = mad(d, (float16)(wv.w), acc[n + 3]);
            }
        }
    } else {
        for (int o = 0; o < n_out; ++o) {
            const float16 d = tb_rows16(dz + o * TB_BATCH, r0);
            __global const TB_P_T *wr = w + o * n_in;
#pragma unroll
            for (int n = 0; n < TB_RN; ++n) {
                acc[n] = mad(d, (float16)(TB_LOAD_P(wr, min(i0 + n, n_in - 1))), acc[n]);
            }
        }
    }
#pragma unroll
    for (int n = 0; n < TB_RN; ++n) {
        if (i0 + n < n_in) {
            const int col = (i0 + n) * TB_BATCH;
            tb_store_rows16(da + col, r0, tb_act_grad16(below, acc[n], tb_rows16(act + col, r0)));
        }
    }
}

// dL/dw_l and dL/db_l into `grads`, from the layer's input `a + a_off` and its delta `dz`.
__kernel void tb_backward(__global const float *a, const int a_off,
                          __global const float *dz, __global float *grads,
                          const int layer, const int rows_arg) {
    const int rows = tb_rows(rows_arg);
#define TB_BACKWARD_CASE(l)                                                             \
    case l:                                                                             \
        tb_grad_weights_block(a + a_off, dz, grads + TB_W_##l, TB_IN_##l, TB_OUT_##l, rows); \
        break;
    switch (layer) {
        TB_LAYER_LIST(TB_BACKWARD_CASE)
        default:
            break;
    }
#undef TB_BACKWARD_CASE
}

// The delta of layer `layer - 1` (into `da`), from layer `layer`'s delta `dz`, its weights
// and its input `acts + a_off` (the output of the layer below, after its activation). Never launched for layer 0.
__kernel void tb_backward_inputs(__global const TB_P_T *params, __global const float *dz,
                                 __global float *da, __global const float *acts, const int a_off,
                                 const int layer) {
#define TB_BACKWARD_INPUTS_CASE(l)                                                      \
    case l:                                                                             \
        tb_grad_inputs_block(params + TB_W_##l, dz, da, acts + a_off, TB_IN_##l, TB_OUT_##l, \
                             TB_ACT_IN_##l);                                   \
        break;
    switch (layer) {
        TB_LAYER_LIST(TB_BACKWARD_INPUTS_CASE)
        default:
            break;
    }
#undef TB_BACKWARD_INPUTS_CASE
}

// ---- cl/update.cl
// tensorbridge: the SGD update p -= lr * g over every parameter, skipped entirely when the
// step's loss (losses[loss_slot], written by tb_loss) is not finite or when the step's
// update status (losses[loss_slot + 1], cleared by tb_loss, set by tb_check_update) says
// that some parameter's update would not fit the storage, so a diverged or overflowing
// step never corrupts the parameters.
//
// Both kernels give each work-item TB_UPDATE_VEC (16, #defined by the host: kernels.rs)
// consecutive parameters from k0 = 16 * get_global_id(0), loaded, updated and stored as
// one float16 (vload16 / vload_half16); the last, partial vector goes element by element.
// One work-item per parameter made PoCL 3.1 spend ~60 us on each kernel at mnist's ~100K
// parameters (~1600 work-groups, scalar code); 16 a work-item, ~10-15 us.
// NDRange: round_up(ceil(TB_PARAMS / TB_UPDATE_VEC), local size).

// TB_UPDATE_LIMIT (#defined by the host, kernels.rs): |p - lr * g| from which the update no
// longer fits the storage once stored: float's infinity, or 65520 for half (halfway between
// 65504 and 2^16; ties to even give 2^16, i.e. infinity under vstore_half_rte).
// `!(fabs(v) < TB_UPDATE_LIMIT)` catches NaN too.

#if TB_UPDATE_VEC != 16
#error "the update kernels load float16: TB_UPDATE_VEC must be 16"
#endif

#ifdef TB_STORAGE_F16
#define TB_LOAD_P16(p, k) vload_half16(0, (p) + (k))
#define TB_STORE_P16(p, k, v) vstore_half16_rte((v), 0, (p) + (k))
#else
#define TB_LOAD_P16(p, k) vload16(0, (p) + (k))
#define TB_STORE_P16(p, k, v) vstore16((v), 0, (p) + (k))
#endif

// The updated value of a parameter, shared by the check and the store so that both
// compute the same bits (a whole vector goes through tb_sgd_value16 in both, a partial
// one through tb_sgd_value in both).
inline float tb_sgd_value(const float p, const float g, const float lr) {
    return p - lr * g;
}

inline float16 tb_sgd_value16(const float16 p, const float16 g, const float lr) {
    return p - lr * g;
}

// Whether an updated value fits the storage.
inline int tb_update_fits(const float v) {
    return fabs(v) < TB_UPDATE_LIMIT;
}

// Whether all 16 comparison results are true (-1), by halving: PoCL 3.1's all() on an
// int16 made the check kernel ~3x slower.
inline int tb_all16(const int16 m) {
    const int8 a = m.lo & m.hi;
    const int4 b = a.lo & a.hi;
    const int2 c = b.lo & b.hi;
    return (c.x & c.y) != 0;
}

// Flags the step (status word losses[loss_slot + 1] = ~k for the smallest such k, through
// atomic_max) if the update of any parameter k would not fit the storage. Reads only.
__kernel void tb_check_update(__global const TB_P_T *params, __global const float *grads, const float lr,
                              __global float *losses, const int loss_slot) {
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS) {
        return;
    }
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        const float16 v = tb_sgd_value16(TB_LOAD_P16(params, k0), vload16(0, grads + k0), lr);
        // `<` is false for NaN, as in tb_update_fits.
        if (tb_all16(fabs(v) < (float16)(TB_UPDATE_LIMIT))) {
            return;
        }
        // Cold: this vector's first offending parameter (the same bits as above).
        float t[TB_UPDATE_VEC];
        vstore16(v, 0, t);
        for (int j = 0; j < TB_UPDATE_VEC; ++j) {
            if (!tb_update_fits(t[j])) {
                atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)(k0 + j));
                return;
            }
        }
        return;
    }
    for (int k = k0; k < end; ++k) {
        if (!tb_update_fits(tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr))) {
            atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)k);
            return;
        }
    }
}

__kernel void tb_sgd(__global TB_P_T *params, __global const float *grads, const float lr,
                     __global const float *losses, const int loss_slot) {
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS || !isfinite(losses[loss_slot]) || ((__global const uint *)losses)[loss_slot + 1] != 0u) {
        return;
    }
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        TB_STORE_P16(params, k0, tb_sgd_value16(TB_LOAD_P16(params, k0), vload16(0, grads + k0), lr));
        return;
    }
    for (int k = k0; k < end; ++k) {
        TB_STORE_P(params, k, tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr));
    }
}

// ---- Every other optimizer step (momentum, Adam, AdamW, SGD with weight decay): the
// formulas tb_opt_coeffs / tb_opt_update are the optimizer's, emitted into the prelude from
// src/math/optim.rs. After the step's gradients, tb_opt_check then tb_opt_apply, with the
// same arguments:
//   opt    the optimizer's state: TB_OPT_MOMENTS moment buffers of TB_PARAMS floats (m at
//          0, v at TB_PARAMS), then at word TB_OPT_STEP the count t of accepted steps, then
//          the count t + 1 the step being checked would reach (written by tb_opt_check,
//          read by tb_opt_apply: no work-item reads a word another work-item of the same
//          launch writes).
//   hyper  the hyperparameters (the optimizer's `opencl_hyper`), the step's rate first.
// A refused step (non-finite loss, or a parameter or moment that would not fit: the status
// word set as by tb_check_update) writes no parameter, no moment and no step count.
// TB_UPDATE_VEC parameters a work-item; NDRange as for tb_sgd.

// The step's new parameter k, its moments updated in m, v (0 and unread where the
// optimizer keeps fewer): the one computation both kernels share, so both get the same bits
// (a whole vector goes through tb_opt_value16 in both, a partial one through tb_opt_value).
inline float tb_opt_value(const tb_coeffs c, __global const TB_P_T *params, __global const float *grads,
                          __global const float *moments, const int k, float *m, float *v) {
#if TB_OPT_MOMENTS > 0
    *m = moments[k];
#else
    *m = 0.0f;
#endif
#if TB_OPT_MOMENTS > 1
    *v = moments[TB_PARAMS + k];
#else
    *v = 0.0f;
#endif
    return tb_opt_update(c, TB_LOAD_P(params, k), grads[k], m, v);
}

inline float16 tb_opt_value16(const tb_coeffs c, __global const TB_P_T *params, __global const float *grads,
                              __global const float *moments, const int k0, float16 *m, float16 *v) {
#if TB_OPT_MOMENTS > 0
    *m = vload16(0, moments + k0);
#else
    *m = (float16)(0.0f);
#endif
#if TB_OPT_MOMENTS > 1
    *v = vload16(0, moments + TB_PARAMS + k0);
#else
    *v = (float16)(0.0f);
#endif
    return tb_opt_update16(c, TB_LOAD_P16(params, k0), vload16(0, grads + k0), m, v);
}

// Whether a new parameter and its new moments fit.
inline int tb_opt_fits(const float p, const float m, const float v) {
    return tb_update_fits(p) && isfinite(m) && isfinite(v);
}

__kernel void tb_opt_check(__global const TB_P_T *params, __global const float *grads, __global uint *opt,
                           const float8 hyper, __global float *losses, const int loss_slot) {
    const uint t = add_sat(opt[TB_OPT_STEP], 1u);
    if (get_global_id(0) == 0) {
        opt[TB_OPT_STEP + 1] = t;
    }
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS) {
        return;
    }
    const tb_coeffs c = tb_opt_coeffs(hyper, t);
    __global const float *moments = (__global const float *)opt;
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        float16 m, v;
        const float16 p = tb_opt_value16(c, params, grads, moments, k0, &m, &v);
        // `<` is false for NaN, as in tb_update_fits.
        if (tb_all16((fabs(p) < (float16)(TB_UPDATE_LIMIT)) & isfinite(m) & isfinite(v))) {
            return;
        }
        // Cold: this vector's first offending parameter (the same bits as above).
        float tp[TB_UPDATE_VEC], tm[TB_UPDATE_VEC], tv[TB_UPDATE_VEC];
        vstore16(p, 0, tp);
        vstore16(m, 0, tm);
        vstore16(v, 0, tv);
        int j = 0;
        while (j + 1 < TB_UPDATE_VEC && tb_opt_fits(tp[j], tm[j], tv[j])) {
            ++j;
        }
        atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)(k0 + j));
        return;
    }
    for (int k = k0; k < end; ++k) {
        float m, v;
        if (!tb_opt_fits(tb_opt_value(c, params, grads, moments, k, &m, &v), m, v)) {
            atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)k);
            return;
        }
    }
}

__kernel void tb_opt_apply(__global TB_P_T *params, __global const float *grads, __global uint *opt,
                           const float8 hyper, __global const float *losses, const int loss_slot) {
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS || !isfinite(losses[loss_slot]) || ((__global const uint *)losses)[loss_slot + 1] != 0u) {
        return;
    }
    const uint t = opt[TB_OPT_STEP + 1];
    if (k0 == 0) {
        opt[TB_OPT_STEP] = t;
    }
    const tb_coeffs c = tb_opt_coeffs(hyper, t);
    __global float *moments = (__global float *)opt;
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        float16 m, v;
        TB_STORE_P16(params, k0, tb_opt_value16(c, params, grads, moments, k0, &m, &v));
#if TB_OPT_MOMENTS > 0
        vstore16(m, 0, moments + k0);
#endif
#if TB_OPT_MOMENTS > 1
        vstore16(v, 0, moments + TB_PARAMS + k0);
#endif
        return;
    }
    for (int k = k0; k < end; ++k) {
        float m, v;
        TB_STORE_P(params, k, tb_opt_value(c, params, grads, moments, k, &m, &v));
#if TB_OPT_MOMENTS > 0
        moments[k] = m;
#endif
#if TB_OPT_MOMENTS > 1
        moments[TB_PARAMS + k] = v;
#endif
    }
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

// ---- cl/tiny_step.cl
// tensorbridge: train steps of a tiny model in one work-item (TB_TINY == 1, decided from
// the shape in src/kernels.rs, `tiny_plan`).
//
// For models whose step is a few hundred multiply-adds the launch is the cost, and on a CPU
// OpenCL device (PoCL) a launch pays for every argument, a buffer argument most, and for
// local memory. So this kernel takes one buffer and `uint4`s by value, keeps everything
// else in private memory. tb_tiny_steps runs up to TB_TINY_STEPS steps one after the other
// (the host groups deferred steps; any other call sends the group first), tb_tiny_step one
// (with fewer arguments: each one costs at every launch):
//   state        the parameters (TB_P_T, from word 0); for an optimizer with moments
//                (TB_TINY_OPT_STATE), its state at word TB_TINY_OPT and its
//                hyperparameters (a float8, the rate's slot unused) at TB_TINY_HYPER, both
//                written by the host; and further on the loss record:
//                each step writes its slot there, at a word the host passes: the loss,
//                then the update status (0, or ~k of the first parameter k whose update
//                would not fit the storage; then no parameter is written). A non-finite
//                loss writes the loss, status 0, and no parameter.
//   a0, a1, ...  TB_TINY_WORDS (TB_TINY_ONE_WORDS) 32-bit words: the number of steps, then per step
//                TB_TINY_STEP_WORDS words: TB_TINY_CTRL control words (the loss word, the
//                learning rate's bits, the rows that count), then the batch in the layout
//                of the batch buffer (features, then the labels at TB_Y).
// Activations are column-major [TB_BATCH x width] at TB_AIN_l / TB_AOUT_l, as in the fused
// kernel; the loss is TB_ROW_LOSS, the update tb_sgd_value / tb_update_fits (plain SGD) or
// tb_opt_update / tb_opt_fits (the others), so the arithmetic is that of the other kernels.

#if TB_TINY

// z = act(a . W + b) for one layer (TB_ACT_l: identity for the output layer).
inline void tb_tiny_dense(__global const TB_P_T *w, __global const TB_P_T *bias, const float *a, float *z,
                          const int n_in, const int n_out, const int act) {
    for (int o = 0; o < n_out; ++o) {
        const float b = TB_LOAD_P(bias, o);
        for (int r = 0; r < TB_BATCH; ++r) {
            float acc = b;
            for (int i = 0; i < n_in; ++i) {
                acc += a[i * TB_BATCH + r] * TB_LOAD_P(w, o * n_in + i);
            }
            z[o * TB_BATCH + r] = tb_act(act, acc);
        }
    }
}

// g[w: i, o] = sum_{r < rows} a[r, i] dz[r, o], then g[b: o] = sum_{r < rows} dz[r, o];
// for l > 0, da[r, i] = tb_act_grad(below, sum_o dz[r, o] w[i, o], a[r, i]) (`a` the output of
// the layer below, after its activation `below`).
inline void tb_tiny_backward(__global const TB_P_T *w, const float *a, const float *dz, float *g,
                             float *da, const int has_below, const int below, const int n_in,
                             const int n_out, const int rows) {
    for (int o = 0; o < n_out; ++o) {
        for (int i = 0; i < n_in; ++i) {
            float acc = 0.0f;
            for (int r = 0; r < rows; ++r) {
                acc += a[i * TB_BATCH + r] * dz[o * TB_BATCH + r];
            }
            g[o * n_in + i] = acc;
        }
    }
    for (int o = 0; o < n_out; ++o) {
        float acc = 0.0f;
        for (int r = 0; r < rows; ++r) {
            acc += dz[o * TB_BATCH + r];
        }
        g[n_in * n_out + o] = acc;
    }
    if (has_below) {
        for (int i = 0; i < n_in; ++i) {
            for (int r = 0; r < TB_BATCH; ++r) {
                float acc = 0.0f;
                for (int o = 0; o < n_out; ++o) {
                    acc += dz[o * TB_BATCH + r] * TB_LOAD_P(w, o * n_in + i);
                }
                da[i * TB_BATCH + r] = tb_act_grad(below, acc, a[i * TB_BATCH + r]);
            }
        }
    }
}

// One train step on the batch and control words at `step`.
inline void tb_tiny_one_step(__global uint *state, const uint *step) {
    __global TB_P_T *params = (__global TB_P_T *)state;
    __global uint *record = state + step[0];
    const float lr = as_float(step[1]);
    const int rows = tb_rows((int)step[2]);
    const float inv_rows = 1.0f / (float)rows;
    const uint *words = step + TB_TINY_CTRL;

    float acts[TB_ACTS];
    float delta_a[TB_DELTA];
    float delta_b[TB_DELTA];
    float grads[TB_PARAMS];
    for (int k = 0; k < TB_BATCH * TB_FEATURES; ++k) {
        acts[k] = TB_LOAD_ARG_X(words, k);
    }

#define TB_TINY_FORWARD(l)                                                              \
    tb_tiny_dense(params + TB_W_##l, params + TB_B_##l, acts + TB_AIN_##l,               \
                  acts + TB_AOUT_##l, TB_IN_##l, TB_OUT_##l, TB_ACT_##l);
    TB_LAYER_LIST(TB_TINY_FORWARD)
#undef TB_TINY_FORWARD

    // The rows' losses summed in the order of the fused kernel's reduction tree (one row a
    // work-item there; the rows past the batch add exact zeros), so that both kernels
    // compute the same bits.
    const float *logits = acts + TB_AOUT_LAST;
    float red[TB_TINY_RED];
    for (int r = 0; r < TB_TINY_RED; ++r) {
        red[r] = 0.0f;
        if (r >= TB_BATCH) {
            continue;
        }
        if (r >= rows) {
            for (int c = 0; c < TB_CLASSES; ++c) {
                delta_a[c * TB_BATCH + r] = 0.0f;
            }
            continue;
        }
        TB_ROW_LOSS((logits + r), (delta_a + r), tb_clamp_label(words[TB_Y + r]), inv_rows, red[r]);
    }
    for (int half_ = TB_TINY_RED / 2; half_ > 0; half_ >>= 1) {
        for (int r = 0; r < half_; ++r) {
            red[r] += red[r + half_];
        }
    }
    const float loss = red[0] * inv_rows;
    record[0] = as_uint(loss);
    record[1] = 0u;
    if (!isfinite(loss)) {
        return;
    }

    float *dz = delta_a;
    float *dz_below = delta_b;
#define TB_TINY_BACKWARD(l)                                                             \
    tb_tiny_backward(params + TB_W_##l, acts + TB_AIN_##l, dz, grads + TB_W_##l, dz_below, \
                     l > 0, TB_ACT_IN_##l, TB_IN_##l, TB_OUT_##l, rows);                 \
    {                                                                                    \
        float *swap_ = dz;                                                               \
        dz = dz_below;                                                                   \
        dz_below = swap_;                                                                \
    }
    TB_LAYER_LIST_REV(TB_TINY_BACKWARD)
#undef TB_TINY_BACKWARD

    // All or nothing: every update is checked before any is stored.
#if TB_TINY_OPT_STATE
    // The optimizer's step (tb_opt_update, src/math/optim.rs) on its state at TB_TINY_OPT
    // (laid out as `opt` in update.cl), its hyperparameters at TB_TINY_HYPER with this
    // step's rate; a refused step writes no parameter, no moment and no step count.
    __global float *opt = (__global float *)(state + TB_TINY_OPT);
    __global uint *opt_step = state + TB_TINY_OPT + TB_OPT_STEP;
    float8 hyper = vload8(0, (__global const float *)(state + TB_TINY_HYPER));
    hyper.s0 = lr;
    const uint t = add_sat(*opt_step, 1u);
    const tb_coeffs c = tb_opt_coeffs(hyper, t);
    for (int k = 0; k < TB_PARAMS; ++k) {
        float m = opt[k];
        float v = TB_OPT_MOMENTS > 1 ? opt[TB_PARAMS + k] : 0.0f;
        if (!tb_opt_fits(tb_opt_update(c, TB_LOAD_P(params, k), grads[k], &m, &v), m, v)) {
            record[1] = ~(uint)k;
            return;
        }
    }
    for (int k = 0; k < TB_PARAMS; ++k) {
        float m = opt[k];
        float v = TB_OPT_MOMENTS > 1 ? opt[TB_PARAMS + k] : 0.0f;
        TB_STORE_P(params, k, tb_opt_update(c, TB_LOAD_P(params, k), grads[k], &m, &v));
        opt[k] = m;
        if (TB_OPT_MOMENTS > 1) {
            opt[TB_PARAMS + k] = v;
        }
    }
    *opt_step = t;
#else
    for (int k = 0; k < TB_PARAMS; ++k) {
        if (!tb_update_fits(tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr))) {
            record[1] = ~(uint)k;
            return;
        }
    }
    for (int k = 0; k < TB_PARAMS; ++k) {
        TB_STORE_P(params, k, tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr));
    }
#endif
}

#define TB_TINY_COPY(i) vstore4(a##i, i, w);

// One step: the words of a group of one (the step count, unread, then the step).
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void tb_tiny_step(__global uint *state, TB_TINY_ONE_ARGS) {
    uint w[TB_TINY_ONE_WORDS];
    TB_TINY_ONE_LIST(TB_TINY_COPY)
    tb_tiny_one_step(state, w + 1);
}

// A group of up to TB_TINY_STEPS steps, in order.
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void tb_tiny_steps(__global uint *state, TB_TINY_ARGS) {
    uint w[TB_TINY_WORDS];
    TB_TINY_LIST(TB_TINY_COPY)
    const uint steps = min(w[0], (uint)TB_TINY_STEPS);
    for (uint s = 0; s < steps; ++s) {
        tb_tiny_one_step(state, w + 1 + s * TB_TINY_STEP_WORDS);
    }
}

#else

// The model is too large for one work-item: the host runs the other kernels.
__kernel void tb_tiny_step(__global uint *state, TB_TINY_ONE_ARGS) {
}

__kernel void tb_tiny_steps(__global uint *state, TB_TINY_ARGS) {
}

#endif
