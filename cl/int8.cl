// Int8 inference: one dense layer of the integer forward pass (src/quant.rs describes the
// scheme). One work-item per output `o` and block of TB_Q_ROWS rows: each weight quad it
// loads serves every row of its block, in TB_Q_ROWS int accumulators.
//
// Layouts (the host packs them, src/backend/opencl/int8.rs):
// - codes row-major, rows padded to a multiple of 4 codes (`stride` quads): `in[r * stride + q]`
//   holds the row's codes 4q..4q+3; the padding's codes meet zero weights;
// - weights in quads of 4 inputs, output after output: `w[w_off + q * fan_out + o]` holds
//   w[4q..4q+3, o] (zero past fan_in), so that neighbouring work-items read neighbouring
//   quads and every work-item of a group reads the same input quad;
// - `wsum[c]`: the sum of output channel c's weight codes.
//
// acc = bias[o] + sum_i (in[i] - z_in) * w[i, o]             (int, exact: the host checked
//                                                             that it cannot overflow)
// out = clamp(z_out + round(acc * mult[o] / 2^shift[o]), lo, hi), rounding half away from
// zero, the product in 64 bits.
//
// Where the device has cl_khr_integer_dot_product, four products at a time by
// dot(uchar4, char4): sum (in + 128) * w, less (128 + z_in) * sum w; the same integers
// (each partial sum is bounded by the same fan_in * 255 * 127 as acc's).
//
// From the host: TB_Q_BATCH, the rows of a batch (src/kernels.rs), and TB_Q_ROWS, the rows
// of a work-item's block (src/backend/opencl/int8.rs); the row buffers hold the batch
// rounded up to a multiple of TB_Q_ROWS rows.

#if defined(cl_khr_integer_dot_product) && defined(__opencl_c_integer_dot_product_input_4x8bit)
#pragma OPENCL EXTENSION cl_khr_integer_dot_product : enable
#define TB_Q_DOT4(a, b) dot(a, b)
#elif defined(TB_Q_DOT_EMULATED)
// The packed path's arithmetic on a device without the extension (the host builds this with
// -D TB_Q_DOT_EMULATED for its tests, so that the path is checked on every device).
#define TB_Q_DOT4(a, b) ((int)(a).x * (b).x + (int)(a).y * (b).y + (int)(a).z * (b).z + (int)(a).w * (b).w)
#endif

__kernel void tb_int8_layer(__global const char4 *in, __global const char4 *w, __global const int *bias,
                            __global const int *wsum, __global const int *mult, __global const uchar *shift,
                            __global char *out8, __global short *out16, int w_off, int c_off, int quads,
                            int fan_out, int out_stride, int z_in, int z_out, int lo, int hi, int head) {
    const int o = (int)get_global_id(0);
    const int r0 = (int)get_global_id(1) * TB_Q_ROWS;
    if (o >= fan_out || r0 >= TB_Q_BATCH) {
        return;
    }
    const __global char4 *wc = w + (size_t)w_off + o;
    const __global char4 *x = in + (size_t)r0 * quads;
    int acc[TB_Q_ROWS];
    for (int k = 0; k < TB_Q_ROWS; k++) {
        acc[k] = 0;
    }
    for (int q = 0; q < quads; q++) {
        const char4 wq = wc[(size_t)q * fan_out];
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const char4 xq = x[(size_t)k * quads + q];
#ifdef TB_Q_DOT4
            acc[k] += TB_Q_DOT4(as_uchar4(xq ^ (char4)(-128)), wq);
#else
            acc[k] += ((int)xq.x - z_in) * wq.x + ((int)xq.y - z_in) * wq.y + ((int)xq.z - z_in) * wq.z +
                      ((int)xq.w - z_in) * wq.w;
#endif
        }
    }
    const int c = c_off + o;
#ifdef TB_Q_DOT4
    const int lift = (128 + z_in) * wsum[c];
#else
    const int lift = 0;
#endif
    const long m = (long)mult[c];
    const int n = (int)shift[c];
    const long rnd = (long)1 << (n - 1);
    for (int k = 0; k < TB_Q_ROWS; k++) {
        const int r = r0 + k;
        const long p = (long)(bias[c] + (acc[k] - lift)) * m;
        const long q = p >= 0 ? (p + rnd) >> n : -((rnd - p) >> n);
        const long v = clamp(q + (long)z_out, (long)lo, (long)hi);
        if (head) {
            out16[(size_t)r * fan_out + o] = (short)v;
        } else {
            out8[(size_t)r * out_stride + o] = (char)v;
        }
    }
}
