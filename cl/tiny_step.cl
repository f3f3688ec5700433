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
