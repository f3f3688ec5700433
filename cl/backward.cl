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
