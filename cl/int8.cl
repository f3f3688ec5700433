// Int8 inference: one dense layer of the integer forward pass (src/quant.rs describes the
// scheme). One work-item per (output, row). Codes are row-major: `in[r * fan_in + i]`,
// `out[r * fan_out + o]`; weights column by column, `w[w_off + o * fan_in + i]`.
//
// acc = bias[o] + sum_i (in[i] - z_in) * w[i, o]             (int, exact: the host checked
//                                                             that it cannot overflow)
// out = clamp(z_out + round(acc * mult[o] / 2^shift[o]), lo, hi), rounding half away from
// zero, the product in 64 bits.
//
// Where the device has cl_khr_integer_dot_product, four products at a time by
// dot(uchar4, char4): sum (in + 128) * w, less (128 + z_in) * sum w; the same integers.
//
// From the host (src/kernels.rs): TB_Q_BATCH, the rows of a batch.

#if defined(cl_khr_integer_dot_product) && defined(__opencl_c_integer_dot_product_input_4x8bit)
#pragma OPENCL EXTENSION cl_khr_integer_dot_product : enable
#define TB_Q_DOT4(a, b) dot(a, b)
#elif defined(TB_Q_DOT_EMULATED)
// The packed path's arithmetic on a device without the extension (the host builds this with
// -D TB_Q_DOT_EMULATED for its tests, so that the path is checked on every device).
#define TB_Q_DOT4(a, b) ((int)(a).x * (b).x + (int)(a).y * (b).y + (int)(a).z * (b).z + (int)(a).w * (b).w)
#endif

__kernel void tb_int8_layer(__global const char *in, __global const char *w, __global const int *bias,
                            __global const int *mult, __global const uchar *shift,
                            __global char *out8, __global short *out16, int w_off, int c_off, int fan_in,
                            int fan_out, int z_in, int z_out, int lo, int hi, int head) {
    const int o = (int)get_global_id(0);
    const int r = (int)get_global_id(1);
    if (o >= fan_out || r >= TB_Q_BATCH) {
        return;
    }
    const __global char *x = in + (size_t)r * fan_in;
    const __global char *wc = w + (size_t)w_off + (size_t)o * fan_in;
    const int c = c_off + o;
    int acc = bias[c];
    int i = 0;
#ifdef TB_Q_DOT4
    int lifted = 0;
    for (; i + 4 <= fan_in; i += 4) {
        uchar4 a = as_uchar4(vload4(0, x + i) ^ (char4)(-128));
        lifted += TB_Q_DOT4(a, vload4(0, wc + i));
    }
    int head_sum = 0;
    for (int k = 0; k < i; k++) {
        head_sum += wc[k];
    }
    acc += lifted - (128 + z_in) * head_sum;
#endif
    for (; i < fan_in; i++) {
        acc += ((int)x[i] - z_in) * (int)wc[i];
    }
    const long p = (long)acc * (long)mult[c];
    const int n = (int)shift[c];
    const long rnd = (long)1 << (n - 1);
    const long q = p >= 0 ? (p + rnd) >> n : -((rnd - p) >> n);
    const long v = clamp(q + (long)z_out, (long)lo, (long)hi);
    if (head) {
        out16[(size_t)r * fan_out + o] = (short)v;
    } else {
        out8[(size_t)r * fan_out + o] = (char)v;
    }
}
