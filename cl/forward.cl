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
