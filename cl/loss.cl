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

// The loss of row r (r < rows), writing that row's dz. Shared with the fused kernel
// through this macro, so both compute exactly the same arithmetic. The row's maximum
// contributes exp(0) = 1 exactly, so log(sum) = log1p(rest), which keeps a confident row's
// tiny loss accurate (as the CPU backend does).
#define TB_ROW_LOSS(Z, DZ, LABEL, INV_ROWS, OUT_LOSS)                     \
    do {                                                                  \
        int top_ = 0;                                                     \
        for (int c_ = 1; c_ < TB_CLASSES; ++c_) {                         \
            if (Z[c_ * TB_BATCH] > Z[top_ * TB_BATCH]) {                  \
                top_ = c_;                                                \
            }                                                             \
        }                                                                 \
        const float m_ = Z[top_ * TB_BATCH];                              \
        float rest_ = 0.0f;                                               \
        for (int c_ = 0; c_ < TB_CLASSES; ++c_) {                         \
            const float e_ = (c_ == top_) ? 1.0f : exp(Z[c_ * TB_BATCH] - m_); \
            DZ[c_ * TB_BATCH] = e_;                                       \
            if (c_ != top_) {                                             \
                rest_ += e_;                                              \
            }                                                             \
        }                                                                 \
        OUT_LOSS = (m_ - Z[(LABEL) * TB_BATCH]) + log1p(rest_);          \
        const float scale_ = (INV_ROWS) / (1.0f + rest_);                 \
        for (int c_ = 0; c_ < TB_CLASSES; ++c_) {                         \
            DZ[c_ * TB_BATCH] *= scale_;                                  \
        }                                                                 \
        DZ[(LABEL) * TB_BATCH] -= (INV_ROWS);                             \
    } while (0)

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
