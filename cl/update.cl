// tensorbridge: the SGD update p -= lr * g over every parameter, skipped entirely when the
// step's loss (losses[loss_slot], written by tb_loss) is not finite or when the step's
// update status (losses[loss_slot + 1], cleared by tb_loss, set by tb_check_update) says
// that some parameter's update would not fit the storage, so a diverged or overflowing
// step never corrupts the parameters.
//
// Both kernels give each work-item TB_UPDATE_VEC (16, #defined by the host: kernels.rs)
// consecutive parameters from k0 = 16 * get_global_id(0), loaded, updated and stored as
// one float16 (vload16 / vload_half16); the last, partial vector goes element by element.
// One work-item per parameter made PoCL 3.1 spend ~60 us on each kernel at mnist's ~100K
// parameters (~1600 work-groups, scalar code); 16 a work-item, ~10-15 us.
// NDRange: round_up(ceil(TB_PARAMS / TB_UPDATE_VEC), local size).

// TB_UPDATE_LIMIT (#defined by the host, kernels.rs): |p - lr * g| from which the update no
// longer fits the storage once stored: float's infinity, or 65520 for half (halfway between
// 65504 and 2^16; ties to even give 2^16, i.e. infinity under vstore_half_rte).
// `!(fabs(v) < TB_UPDATE_LIMIT)` catches NaN too.

#if TB_UPDATE_VEC != 16
#error "the update kernels load float16: TB_UPDATE_VEC must be 16"
#endif

#ifdef TB_STORAGE_F16
#define TB_LOAD_P16(p, k) vload_half16(0, (p) + (k))
#define TB_STORE_P16(p, k, v) vstore_half16_rte((v), 0, (p) + (k))
#else
#define TB_LOAD_P16(p, k) vload16(0, (p) + (k))
#define TB_STORE_P16(p, k, v) vstore16((v), 0, (p) + (k))
#endif

// The updated value of a parameter, shared by the check and the store so that both
// compute the same bits (a whole vector goes through tb_sgd_value16 in both, a partial
// one through tb_sgd_value in both).
inline float tb_sgd_value(const float p, const float g, const float lr) {
    return p - lr * g;
}

inline float16 tb_sgd_value16(const float16 p, const float16 g, const float lr) {
    return p - lr * g;
}

// Whether an updated value fits the storage.
inline int tb_update_fits(const float v) {
    return fabs(v) < TB_UPDATE_LIMIT;
}

// Whether all 16 comparison results are true (-1), by halving: PoCL 3.1's all() on an
// int16 made the check kernel ~3x slower.
inline int tb_all16(const int16 m) {
    const int8 a = m.lo & m.hi;
    const int4 b = a.lo & a.hi;
    const int2 c = b.lo & b.hi;
    return (c.x & c.y) != 0;
}

// Flags the step (status word losses[loss_slot + 1] = ~k for the smallest such k, through
// atomic_max) if the update of any parameter k would not fit the storage. Reads only.
__kernel void tb_check_update(__global const TB_P_T *params, __global const float *grads, const float lr,
                              __global float *losses, const int loss_slot) {
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS) {
        return;
    }
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        const float16 v = tb_sgd_value16(TB_LOAD_P16(params, k0), vload16(0, grads + k0), lr);
        // `<` is false for NaN, as in tb_update_fits.
        if (tb_all16(fabs(v) < (float16)(TB_UPDATE_LIMIT))) {
            return;
        }
        // Cold: this vector's first offending parameter (the same bits as above).
        float t[TB_UPDATE_VEC];
        vstore16(v, 0, t);
        for (int j = 0; j < TB_UPDATE_VEC; ++j) {
            if (!tb_update_fits(t[j])) {
                atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)(k0 + j));
                return;
            }
        }
        return;
    }
    for (int k = k0; k < end; ++k) {
        if (!tb_update_fits(tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr))) {
            atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)k);
            return;
        }
    }
}

__kernel void tb_sgd(__global TB_P_T *params, __global const float *grads, const float lr,
                     __global const float *losses, const int loss_slot) {
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS || !isfinite(losses[loss_slot]) || ((__global const uint *)losses)[loss_slot + 1] != 0u) {
        return;
    }
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        TB_STORE_P16(params, k0, tb_sgd_value16(TB_LOAD_P16(params, k0), vload16(0, grads + k0), lr));
        return;
    }
    for (int k = k0; k < end; ++k) {
        TB_STORE_P(params, k, tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr));
    }
}

// ---- Every other optimizer step (momentum, Adam, AdamW, SGD with weight decay): the
// formulas tb_opt_coeffs / tb_opt_update are the optimizer's, emitted into the prelude from
// src/math/optim.rs. After the step's gradients, tb_opt_check then tb_opt_apply, with the
// same arguments:
//   opt    the optimizer's state: TB_OPT_MOMENTS moment buffers of TB_PARAMS floats (m at
//          0, v at TB_PARAMS), then at word TB_OPT_STEP the count t of accepted steps, then
//          the count t + 1 the step being checked would reach (written by tb_opt_check,
//          read by tb_opt_apply: no work-item reads a word another work-item of the same
//          launch writes).
//   hyper  the hyperparameters (the optimizer's `opencl_hyper`), the step's rate first.
// A refused step (non-finite loss, or a parameter or moment that would not fit: the status
// word set as by tb_check_update) writes no parameter, no moment and no step count.
// TB_UPDATE_VEC parameters a work-item; NDRange as for tb_sgd.

// The step's new parameter k, its moments updated in m, v (0 and unread where the
// optimizer keeps fewer): the one computation both kernels share, so both get the same bits
// (a whole vector goes through tb_opt_value16 in both, a partial one through tb_opt_value).
inline float tb_opt_value(const tb_coeffs c, __global const TB_P_T *params, __global const float *grads,
                          __global const float *moments, const int k, float *m, float *v) {
#if TB_OPT_MOMENTS > 0
    *m = moments[k];
#else
    *m = 0.0f;
#endif
#if TB_OPT_MOMENTS > 1
    *v = moments[TB_PARAMS + k];
#else
    *v = 0.0f;
#endif
    return tb_opt_update(c, TB_LOAD_P(params, k), grads[k], m, v);
}

inline float16 tb_opt_value16(const tb_coeffs c, __global const TB_P_T *params, __global const float *grads,
                              __global const float *moments, const int k0, float16 *m, float16 *v) {
#if TB_OPT_MOMENTS > 0
    *m = vload16(0, moments + k0);
#else
    *m = (float16)(0.0f);
#endif
#if TB_OPT_MOMENTS > 1
    *v = vload16(0, moments + TB_PARAMS + k0);
#else
    *v = (float16)(0.0f);
#endif
    return tb_opt_update16(c, TB_LOAD_P16(params, k0), vload16(0, grads + k0), m, v);
}

// Whether a new parameter and its new moments fit.
inline int tb_opt_fits(const float p, const float m, const float v) {
    return tb_update_fits(p) && isfinite(m) && isfinite(v);
}

__kernel void tb_opt_check(__global const TB_P_T *params, __global const float *grads, __global uint *opt,
                           const float8 hyper, __global float *losses, const int loss_slot) {
    const uint t = add_sat(opt[TB_OPT_STEP], 1u);
    if (get_global_id(0) == 0) {
        opt[TB_OPT_STEP + 1] = t;
    }
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS) {
        return;
    }
    const tb_coeffs c = tb_opt_coeffs(hyper, t);
    __global const float *moments = (__global const float *)opt;
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        float16 m, v;
        const float16 p = tb_opt_value16(c, params, grads, moments, k0, &m, &v);
        // `<` is false for NaN, as in tb_update_fits.
        if (tb_all16((fabs(p) < (float16)(TB_UPDATE_LIMIT)) & isfinite(m) & isfinite(v))) {
            return;
        }
        // Cold: this vector's first offending parameter (the same bits as above).
        float tp[TB_UPDATE_VEC], tm[TB_UPDATE_VEC], tv[TB_UPDATE_VEC];
        vstore16(p, 0, tp);
        vstore16(m, 0, tm);
        vstore16(v, 0, tv);
        int j = 0;
        while (j + 1 < TB_UPDATE_VEC && tb_opt_fits(tp[j], tm[j], tv[j])) {
            ++j;
        }
        atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)(k0 + j));
        return;
    }
    for (int k = k0; k < end; ++k) {
        float m, v;
        if (!tb_opt_fits(tb_opt_value(c, params, grads, moments, k, &m, &v), m, v)) {
            atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)k);
            return;
        }
    }
}

__kernel void tb_opt_apply(__global TB_P_T *params, __global const float *grads, __global uint *opt,
                           const float8 hyper, __global const float *losses, const int loss_slot) {
    const int k0 = TB_UPDATE_VEC * get_global_id(0);
    if (k0 >= TB_PARAMS || !isfinite(losses[loss_slot]) || ((__global const uint *)losses)[loss_slot + 1] != 0u) {
        return;
    }
    const uint t = opt[TB_OPT_STEP + 1];
    if (k0 == 0) {
        opt[TB_OPT_STEP] = t;
    }
    const tb_coeffs c = tb_opt_coeffs(hyper, t);
    __global float *moments = (__global float *)opt;
    const int end = min(k0 + TB_UPDATE_VEC, TB_PARAMS);
    if (end - k0 == TB_UPDATE_VEC) {
        float16 m, v;
        TB_STORE_P16(params, k0, tb_opt_value16(c, params, grads, moments, k0, &m, &v));
#if TB_OPT_MOMENTS > 0
        vstore16(m, 0, moments + k0);
#endif
#if TB_OPT_MOMENTS > 1
        vstore16(v, 0, moments + TB_PARAMS + k0);
#endif
        return;
    }
    for (int k = k0; k < end; ++k) {
        float m, v;
        TB_STORE_P(params, k, tb_opt_value(c, params, grads, moments, k, &m, &v));
#if TB_OPT_MOMENTS > 0
        moments[k] = m;
#endif
#if TB_OPT_MOMENTS > 1
        moments[TB_PARAMS + k] = v;
#endif
    }
}
