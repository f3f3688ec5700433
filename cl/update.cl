// tensorbridge: the SGD update p -= lr * g over every parameter, skipped entirely when the
// step's loss (losses[loss_slot], written by tb_loss) is not finite, so a diverged step
// never corrupts the parameters. NDRange: round_up(TB_PARAMS, local size).

__kernel void tb_sgd(__global TB_P_T *params, __global const float *grads, const float lr,
                     __global const float *losses, const int loss_slot) {
    const int k = get_global_id(0);
    if (k >= TB_PARAMS || !isfinite(losses[loss_slot])) {
        return;
    }
    TB_STORE_P(params, k, TB_LOAD_P(params, k) - lr * grads[k]);
}
