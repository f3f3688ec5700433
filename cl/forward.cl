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
