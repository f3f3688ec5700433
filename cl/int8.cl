// Int8 inference: one dense layer of the integer forward pass (src/quant.rs describes the
// scheme). One work-item per output `o` and block of TB_Q_ROWS rows: each block of 16
// weights it loads serves every row of its block, in TB_Q_ROWS accumulators, and its
// products are 16-wide vector operations (on a CPU device, one instruction for many).
//
// Layouts (the host packs them, src/backend/opencl/int8.rs):
// - codes row-major, each row padded to whole blocks of 16 codes (`blocks` of them):
//   `in[r * blocks + q]` holds the row's codes 16q..16q+15;
// - weights output after output, each output's padded to whole blocks with zeros (so a
//   padding code, whatever it holds, adds nothing): `w[w_off + o * blocks + q]` holds
//   w[16q..16q+15, o];
// - `wsum[c]`: the sum of output channel c's weight codes.
//
// acc = bias[o] + sum_i (in[i] - z_in) * w[i, o]             (int, exact: the host checked
//                                                             that it cannot overflow; each
//                                                             product fits a short: |(in - z_in)
//                                                             * w| <= 255 * 127)
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

__kernel void tb_int8_layer(__global const char16 *in, __global const char16 *w, __global const int *bias,
                            __global const int *wsum, __global const int *mult, __global const uchar *shift,
                            __global char *out8, __global short *out16, int w_off, int c_off, int blocks,
                            int fan_out, int out_stride, int z_in, int z_out, int lo, int hi, int head) {
    const int o = (int)get_global_id(0);
    const int r0 = (int)get_global_id(1) * TB_Q_ROWS;
    if (o >= fan_out || r0 >= TB_Q_BATCH) {
        return;
    }
    const __global char16 *wc = w + (size_t)w_off + (size_t)o * blocks;
    const __global char16 *x = in + (size_t)r0 * blocks;
#ifdef TB_Q_DOT4
    int acc[TB_Q_ROWS];
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        acc[k] = 0;
    }
    for (int q = 0; q < blocks; q++) {
        const char16 wq = wc[q];
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const uchar16 xq = as_uchar16(x[k * blocks + q] ^ (char16)(-128));
            acc[k] += TB_Q_DOT4(xq.s0123, wq.s0123) + TB_Q_DOT4(xq.s4567, wq.s4567) +
                      TB_Q_DOT4(xq.s89ab, wq.s89ab) + TB_Q_DOT4(xq.scdef, wq.scdef);
        }
    }
    const int lift = (128 + z_in) * wsum[c_off + o];
#else
    int16 acc16[TB_Q_ROWS];
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        acc16[k] = (int16)(0);
    }
    const short16 z = (short16)((short)z_in);
    for (int q = 0; q < blocks; q++) {
        const short16 wq = convert_short16(wc[q]);
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            acc16[k] += convert_int16((convert_short16(x[k * blocks + q]) - z) * wq);
        }
    }
    int acc[TB_Q_ROWS];
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        const int8 h8 = acc16[k].lo + acc16[k].hi;
        const int4 h4 = h8.lo + h8.hi;
        const int2 h2 = h4.lo + h4.hi;
        acc[k] = h2.x + h2.y;
    }
    const int lift = 0;
#endif
    const int c = c_off + o;
    const long m = (long)mult[c];
    const int n = (int)shift[c];
    const long rnd = (long)1 << (n - 1);
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        const int r = r0 + k;
        const long p = (long)(bias[c] + (acc[k] - lift)) * m;
        const long qv = p >= 0 ? (p + rnd) >> n : -((rnd - p) >> n);
        const long v = clamp(qv + (long)z_out, (long)lo, (long)hi);
        if (head) {
            out16[(size_t)r * fan_out + o] = (short)v;
        } else {
            out8[(size_t)r * out_stride + o] = (char)v;
        }
    }
}
