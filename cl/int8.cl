// Int8 inference: the dense layers of the integer forward pass (src/quant.rs describes the
// scheme). A block is TB_Q_LANES outputs of TB_Q_ROWS rows, computed by one work-item in
// vectors across the outputs: each load of weights serves the block's rows, each row's
// operands are broadcast to every output's lane. `tb_int8_layers` runs one layer a launch
// (the work-items across the blocks), or on a CPU device every layer in one launch (a
// work-item a block of rows, its blocks of outputs one after another).
//
// Without the dot product the products are 16-bit pairs: a lane holds an output's weights
// of two inputs, multiplied by the row's two operands and added into the lane's 32-bit
// sum, which a CPU compiles to one widening multiply-add (`vpmaddwd`, TB_Q_MADD below);
// with it, `dot(uchar4, char4)` per output.
//
// Layouts (the host packs them, src/backend/opencl/int8.rs):
// - weights by blocks of TB_Q_LANES outputs, from `w_off` (in `char4`s), the inputs past
//   fan_in and the outputs past fan_out padded with zero weights (so a padding operand,
//   whatever it holds, adds nothing). Block b's weights start at `b * quads * TB_Q_LANES`;
//   with the dot product, by quad q of inputs, then output j: `char4` q * TB_Q_LANES + j
//   holds w[4q..4q+3, j]; without it, by pair p of inputs, then output j, then input:
//   `char2` p * TB_Q_LANES + j holds w[2p..2p+1, j].
// - operands row-major, `quads` quads a row (the input's in `input`, a hidden layer's in
//   `ops` from the layer's offset): quad
//   `r * quads + q` holds the row's operands 4q..4q+3. Without the dot product, the
//   operands are the codes minus their zero point (`short`: |code - z| <= 255); with it,
//   the codes plus 128 (`uchar`). Each layer writes the next layer's operands in the same
//   form (`out_stride` quads a row); the head writes its `short` codes, `fan_out` a row.
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
// (each partial sum is bounded by the same fan_in * 255 * 127 as acc's). `tb_int8_form`
// tells the host which operands the kernel takes.
//
// TB_Q_M_*: the index of each value of a layer's description in `meta` (src/kernels.rs
// writes them).
//
// From the host: TB_Q_BATCH, the rows of a batch (src/kernels.rs), TB_Q_ROWS, the rows of
// a work-item's block, and TB_Q_LANES, its outputs (src/backend/opencl/int8.rs); the row
// buffers hold the batch rounded up to a multiple of TB_Q_ROWS rows.

#if defined(cl_khr_integer_dot_product) && defined(__opencl_c_integer_dot_product_input_4x8bit)
#pragma OPENCL EXTENSION cl_khr_integer_dot_product : enable
#define TB_Q_DOT4(a, b) dot(a, b)
#elif defined(TB_Q_DOT_EMULATED)
// The packed path's arithmetic on a device without the extension (the host builds this with
// -D TB_Q_DOT_EMULATED for its tests, so that the path is checked on every device).
#define TB_Q_DOT4(a, b) ((int)(a).x * (b).x + (int)(a).y * (b).y + (int)(a).z * (b).z + (int)(a).w * (b).w)
#endif

// The products without the dot product: by the processor's own widening multiply-add
// (`vpmaddwd`) on a CPU device that has it, 512 or 256 bits wide, else (0) in OpenCL C's
// vectors alone. The host's tests build each form the device can run (-D TB_Q_MADD=...).
#ifndef TB_Q_MADD
#if defined(__AVX512BW__)
#define TB_Q_MADD 512
#elif defined(__AVX2__)
#define TB_Q_MADD 256
#else
#define TB_Q_MADD 0
#endif
#endif

// The plain path's vectors are 16 outputs wide.
#if !defined(TB_Q_DOT4) && TB_Q_LANES != 16
#error "TB_Q_LANES is 16 without the dot product"
#endif

#ifdef TB_Q_DOT4
// Operands: the codes plus 128.
typedef uchar4 tb_q_operands;
typedef uchar tb_q_operand;
#define TB_Q_OPERAND(v, z_out) ((uchar)((v) + 128))
#else
// Operands: the codes minus their zero point.
typedef short4 tb_q_operands;
typedef short tb_q_operand;
#define TB_Q_OPERAND(v, z_out) ((short)((v) - (z_out)))
#endif

// Which operands the layers take, `form[0]`: 1 with the dot product (codes plus 128,
// `uchar`), 0 without (codes minus their zero point, `short`); and `form[1]`, the form of
// the products without it (TB_Q_MADD).
__kernel void tb_int8_form(__global int *form) {
#ifdef TB_Q_DOT4
    form[0] = 1;
#else
    form[0] = 0;
#endif
    form[1] = TB_Q_MADD;
}

// Block `b` of the outputs of the layer that `m` describes (TB_Q_M_* index it), rows r0 to
// r0 + TB_Q_ROWS - 1, its operands `in`: its sums, requantised into the next layer's
// operands in `ops` (or the head's codes).
static void tb_int8_block(const __global tb_q_operands *in, __global tb_q_operand *ops, __global const char4 *w, __global const int *bias,
                          __global const int *wsum, __global const int *mult, __global const uchar *shift,
                          __global short *out16, __global const int *m, int b, int r0) {
    const int w_off = m[TB_Q_M_W_OFF], c_off = m[TB_Q_M_C_OFF], quads = m[TB_Q_M_QUADS];
    const int fan_out = m[TB_Q_M_FAN_OUT], out_stride = m[TB_Q_M_OUT_STRIDE];
    const int z_in = m[TB_Q_M_Z_IN], z_out = m[TB_Q_M_Z_OUT], lo = m[TB_Q_M_LO], hi = m[TB_Q_M_HI];
    const int head = m[TB_Q_M_HEAD];
    __global tb_q_operand *out_ops = ops + m[TB_Q_M_OUT];
    const __global char4 *wb = w + (size_t)w_off + (size_t)b * quads * TB_Q_LANES;
    const __global tb_q_operands *x = in + (size_t)r0 * quads;
    // acc[k][j]: row r0 + k, output b * TB_Q_LANES + j.
    int acc[TB_Q_ROWS][TB_Q_LANES];
#ifdef TB_Q_DOT4
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        #pragma unroll
        for (int j = 0; j < TB_Q_LANES; j++) {
            acc[k][j] = 0;
        }
    }
    for (int q = 0; q < quads; q++) {
        char4 wq[TB_Q_LANES];
        #pragma unroll
        for (int j = 0; j < TB_Q_LANES; j++) {
            wq[j] = wb[q * TB_Q_LANES + j];
        }
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const uchar4 xq = x[k * quads + q];
            #pragma unroll
            for (int j = 0; j < TB_Q_LANES; j++) {
                acc[k][j] += TB_Q_DOT4(xq, wq[j]);
            }
        }
    }
#else
    // 16 outputs a vector, inputs by pairs: the 16 outputs' weights of inputs 2p and 2p + 1
    // (`wp[p]`, 32 codes, two a lane) against the row's operands 2p and 2p + 1 (`xp`, one
    // pair of `short`s broadcast to every lane), the two 16-bit products of a lane added
    // into its 32-bit sum (exact: |product| <= 255 * 127).
    const __global int8 *wp = (const __global int8 *)wb;
    const __global int *xp = (const __global int *)x;
#if TB_Q_MADD == 512
    // On an AVX-512 CPU, by `vpmaddwd` itself on 512 bits (no pattern in OpenCL C compiles
    // to it).
    typedef char tb_v32qi __attribute__((vector_size(32)));
    typedef short tb_v32hi __attribute__((vector_size(64)));
    typedef int tb_v16si __attribute__((vector_size(64)));
    tb_v16si sums[TB_Q_ROWS];
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        sums[k] = (tb_v16si)((int16)(0));
    }
    for (int p = 0; p < 2 * quads; p++) {
        const tb_v32hi wv = __builtin_convertvector((tb_v32qi)wp[p], tb_v32hi);
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const tb_v16si xv = (tb_v16si)((int16)(xp[k * 2 * quads + p]));
            sums[k] += __builtin_ia32_pmaddwd512((tb_v32hi)xv, wv);
        }
    }
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        #pragma unroll
        for (int j = 0; j < 16; j++) {
            acc[k][j] = sums[k][j];
        }
    }
#elif TB_Q_MADD == 256
    // On an AVX2 CPU, by `vpmaddwd` on 256 bits: outputs 0-7, then 8-15.
    typedef char tb_v16qi __attribute__((vector_size(16)));
    typedef short tb_v16hi __attribute__((vector_size(32)));
    typedef int tb_v8si __attribute__((vector_size(32)));
    tb_v8si first[TB_Q_ROWS], second[TB_Q_ROWS];
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        first[k] = (tb_v8si)((int8)(0));
        second[k] = (tb_v8si)((int8)(0));
    }
    for (int p = 0; p < 2 * quads; p++) {
        const int8 pair = wp[p];
        const tb_v16hi wa = __builtin_convertvector((tb_v16qi)pair.lo, tb_v16hi);
        const tb_v16hi wb = __builtin_convertvector((tb_v16qi)pair.hi, tb_v16hi);
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const tb_v16hi xv = (tb_v16hi)((int8)(xp[k * 2 * quads + p]));
            first[k] += __builtin_ia32_pmaddwd256(xv, wa);
            second[k] += __builtin_ia32_pmaddwd256(xv, wb);
        }
    }
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            acc[k][j] = first[k][j];
            acc[k][8 + j] = second[k][j];
        }
    }
#else
    // first[k]: outputs 0-7 of row r0 + k; second[k]: outputs 8-15.
    int8 first[TB_Q_ROWS], second[TB_Q_ROWS];
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        first[k] = (int8)(0);
        second[k] = (int8)(0);
    }
    for (int p = 0; p < 2 * quads; p++) {
        const int8 pair = wp[p];
        const short16 wa = convert_short16(as_char16(pair.lo));
        const short16 wb = convert_short16(as_char16(pair.hi));
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const short2 xv = as_short2(xp[k * 2 * quads + p]);
            first[k] += convert_int8(wa.even) * (int)xv.x + convert_int8(wa.odd) * (int)xv.y;
            second[k] += convert_int8(wb.even) * (int)xv.x + convert_int8(wb.odd) * (int)xv.y;
        }
    }
    #pragma unroll
    for (int k = 0; k < TB_Q_ROWS; k++) {
        vstore8(first[k], 0, acc[k]);
        vstore8(second[k], 1, acc[k]);
    }
#endif
#endif
    for (int j = 0; j < TB_Q_LANES; j++) {
        const int o = b * TB_Q_LANES + j;
        if (o >= fan_out) {
            break;
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
        #pragma unroll
        for (int k = 0; k < TB_Q_ROWS; k++) {
            const int r = r0 + k;
            const long p = (long)(bias[c] + (acc[k][j] - lift)) * m;
            const long qv = p >= 0 ? (p + rnd) >> n : -((rnd - p) >> n);
            const int v = (int)clamp(qv + (long)z_out, (long)lo, (long)hi);
            if (head) {
                out16[(size_t)r * fan_out + o] = (short)v;
            } else {
                out_ops[((size_t)r * out_stride) * 4 + o] = TB_Q_OPERAND(v, z_out);
            }
        }
    }
}

// Layers `first` to `last - 1` (described by `meta`, TB_Q_M_COUNT values a layer) of rows
// TB_Q_ROWS * get_global_id(1) onwards, output blocks get_global_id(0) onwards, every
// get_global_size(0)-th. The host launches every layer at once on a CPU device (one
// work-item a block of rows does every block of outputs, layer after layer: it reads back
// only what it wrote itself), else one launch a layer (the grid across the blocks).
// `input` holds the input's operands, `ops` each hidden layer's.
__kernel void tb_int8_layers(__global const tb_q_operands *input, __global tb_q_operand *ops, __global const char4 *w, __global const int *bias,
                             __global const int *wsum, __global const int *mult, __global const uchar *shift,
                             __global short *out16, __global const int *meta, int first, int last) {
    const int r0 = (int)get_global_id(1) * TB_Q_ROWS;
    if (r0 >= TB_Q_BATCH) {
        return;
    }
    for (int l = first; l < last; l++) {
        const __global int *m = meta + l * TB_Q_M_COUNT;
        const __global tb_q_operands *in = l == 0 ? input : (const __global tb_q_operands *)(ops + m[TB_Q_M_IN]);
        for (int b = (int)get_global_id(0); b * TB_Q_LANES < m[TB_Q_M_FAN_OUT]; b += (int)get_global_size(0)) {
            tb_int8_block(in, ops, w, bias, wsum, mult, shift, out16, m, b, r0);
        }
    }
}
