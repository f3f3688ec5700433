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
