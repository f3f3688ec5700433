// tensorbridge: the SGD update p -= lr * g over every parameter, skipped entirely when the
// step's loss (losses[loss_slot], written by tb_loss) is not finite or when the step's
// update status (losses[loss_slot + 1], cleared by tb_loss, set by tb_check_update) says
// that some parameter's update would not fit the storage, so a diverged or overflowing
// step never corrupts the parameters. NDRange: round_up(TB_PARAMS, local size).

// TB_UPDATE_LIMIT (#defined by the host, kernels.rs): |p - lr * g| from which the update no
// longer fits the storage once stored: float's infinity, or 65520 for half (halfway between
// 65504 and 2^16; ties to even give 2^16, i.e. infinity under vstore_half_rte).
// `!(fabs(v) < TB_UPDATE_LIMIT)` catches NaN too.

// The updated value of a parameter, shared by the check and the store so that both
// compute the same bits.
inline float tb_sgd_value(const float p, const float g, const float lr) {
    return p - lr * g;
}

// Whether an updated value fits the storage.
inline int tb_update_fits(const float v) {
    return fabs(v) < TB_UPDATE_LIMIT;
}

// Flags the step (status word losses[loss_slot + 1] = ~k for the smallest such k, through
// atomic_max) if the update of any parameter k would not fit the storage. Reads only.
__kernel void tb_check_update(__global const TB_P_T *params, __global const float *grads, const float lr,
                              __global float *losses, const int loss_slot) {
    const int k = get_global_id(0);
    if (k < TB_PARAMS && !tb_update_fits(tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr))) {
        atomic_max((volatile __global uint *)(losses + loss_slot + 1), ~(uint)k);
    }
}

__kernel void tb_sgd(__global TB_P_T *params, __global const float *grads, const float lr,
                     __global const float *losses, const int loss_slot) {
    const int k = get_global_id(0);
    if (k >= TB_PARAMS || !isfinite(losses[loss_slot]) || ((__global const uint *)losses)[loss_slot + 1] != 0u) {
        return;
    }
    TB_STORE_P(params, k, tb_sgd_value(TB_LOAD_P(params, k), grads[k], lr));
}
