// tensorbridge: mean softmax cross-entropy over the first `rows` rows, and its gradient
// with respect to the logits.
//
// One work-group (any power-of-two size up to TB_LOSS_WG) strides over the rows. Per row,
// stably: m = max_c z[c], s = sum_c exp(z[c] - m), loss_r = (m - z[label]) + log(s);
// dz[c] = exp(z[c] - m) / s / rows - [c == label] / rows; padding rows get dz = 0.
// A NaN logit makes the loss NaN (never silently finite), so the update is skipped.
// The mean goes to losses[loss_slot]; losses[loss_slot + 1] (the step's update status) is
// cleared.

// TB_LOSS_WG (a power of two) is #defined by the host (kernels.rs, `LOSS_MAX_WG`).

// TB_ROW_LOSS, the loss of one row and its dz, is the formula of src/math/loss.rs, emitted
// into the prelude (the fused and tiny kernels use it too).

__kernel void tb_loss(__global const float *logits, const int logits_off,
                      __global const float *batch, const int rows_arg,
                      __global float *dz,
                      __global float *losses, const int loss_slot) {
    __local float red[TB_LOSS_WG];
    const int lid = get_local_id(0);
    const int wg = min((int)get_local_size(0), TB_LOSS_WG);
    const int rows = tb_rows(rows_arg);
    const float inv_rows = 1.0f / (float)rows;
    __global const float *z = logits + logits_off;
    float part = 0.0f;
    TB_STRIDED_FOR(r, TB_BATCH, wg, lid) {
        if (r >= rows) {
            for (int c = 0; c < TB_CLASSES; ++c) {
                dz[c * TB_BATCH + r] = 0.0f;
            }
            continue;
        }
        float row_loss;
        TB_ROW_LOSS((z + r), (dz + r), tb_label(batch, r), inv_rows, row_loss);
        part += row_loss;
    }
    if (lid < TB_LOSS_WG) {
        red[lid] = part;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = wg / 2; s > 0; s >>= 1) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        losses[loss_slot] = red[0] * inv_rows;
        // The step's update status (see update.cl): clear until tb_check_update flags it.
        losses[loss_slot + 1] = 0.0f;
    }
}
