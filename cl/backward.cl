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
