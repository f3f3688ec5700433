//! Launch geometry of the register-blocked GEMM kernels (`tb_forward`, `tb_backward`,
//! `tb_backward_inputs` in `cl/forward.cl` and `cl/backward.cl`): how many outputs each
//! work-item computes, and the NDRange that covers a layer. The kernels and this file
//! agree through the build options ([`options`]) and the constants below.

/// Batch rows per work-item (`TB_RM`: one `float16` in `cl/forward.cl`, which refuses any
/// other value). Measured on PoCL
/// 3.1 (2 cores) at mnist's first layer, alternating in one process: 16 rows (one
/// `float16`) took ~0.7x the time of 8 (one `float8`); 8 outputs (`RN`) instead of 4 with
/// 16 rows, ~1.1x.
pub(crate) const RM: usize = 16;
/// Outputs (forward) or inputs (input gradient) per work-item: `TB_RN`, passed to the
/// kernels in the build options. A multiple of 4 (the kernels read weights with `vload4`).
pub(crate) const RN: usize = 4;
/// Inputs x outputs per work-item of the weight gradient (`TB_GI`, `TB_GO`).
pub(crate) const GI: usize = 4;
pub(crate) const GO: usize = 4;
/// The local size of every GEMM launch. Measured on PoCL 3.1 (2 cores): 4x8, 4x4, 8x4,
/// 2x16 and 4x16 are within the noise of one another at the mnist and wide shapes.
pub(crate) const LOCAL: [usize; 2] = [4, 8];

/// The build options that tell the kernels [`RM`], [`RN`], [`GI`] and [`GO`] (the one place
/// they are written).
pub(crate) fn options() -> String {
    format!("-D TB_RM={RM} -D TB_RN={RN} -D TB_GI={GI} -D TB_GO={GO}")
}

fn grid(blocks: [usize; 2]) -> [usize; 2] {
    [blocks[0].div_ceil(LOCAL[0]) * LOCAL[0], blocks[1].div_ceil(LOCAL[1]) * LOCAL[1]]
}

/// `tb_forward` of a layer with `fan_out` outputs.
pub(crate) fn forward(batch: usize, fan_out: usize) -> [usize; 2] {
    grid([batch.div_ceil(RM), fan_out.div_ceil(RN)])
}

/// `tb_backward` (weights and bias) of a `fan_in` x `fan_out` layer: one extra block
/// column computes the bias gradient.
pub(crate) fn weights(fan_in: usize, fan_out: usize) -> [usize; 2] {
    grid([fan_in.div_ceil(GI) + 1, fan_out.div_ceil(GO)])
}

/// `tb_backward_inputs` of a layer with `fan_in` inputs.
pub(crate) fn inputs(batch: usize, fan_in: usize) -> [usize; 2] {
    grid([batch.div_ceil(RM), fan_in.div_ceil(RN)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_is_covered_and_the_grid_is_whole_groups() {
        for (batch, fan_in, fan_out) in [(1, 1, 1), (3, 5, 7), (128, 784, 128), (13, 33, 21), (256, 1024, 16)] {
            let f = forward(batch, fan_out);
            assert!(f[0] * RM >= batch && f[1] * RN >= fan_out, "{f:?}");
            let w = weights(fan_in, fan_out);
            assert!(w[0] > fan_in.div_ceil(GI) && w[1] * GO >= fan_out, "{w:?}");
            let i = inputs(batch, fan_in);
            assert!(i[0] * RM >= batch && i[1] * RN >= fan_in, "{i:?}");
            for g in [f, w, i] {
                assert!(g[0] % LOCAL[0] == 0 && g[1] % LOCAL[1] == 0, "{g:?}");
            }
        }
        assert_eq!(RN % 4, 0);
    }
}
