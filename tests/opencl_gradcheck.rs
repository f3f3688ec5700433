//! The OpenCL gradients against central finite differences of the OpenCL loss, on the
//! fused and the tiled kernels, for a linear model and an MLP. Expected values come from
//! the loss alone, never from the gradient code.

mod opencl_common;

use opencl_common::{noise, opencl};
use tensorbridge::{Device, Engine, HostTensor, KernelPath, Model, Params};

tensorbridge::model! {
    /// Linear head, odd sizes.
    pub struct Lin { batch: 3, features: 5, classes: 7 }
}
tensorbridge::model! {
    /// One hidden ReLU layer.
    pub struct Mlp { batch: 4, features: 3, classes: 4, hidden: [5] }
}

fn check<M: Model<Storage = f32>>(device: &Device) {
    let x = M::Input::from_flat(&(0..M::BATCH * M::FEATURES).map(|k| noise(21, k)).collect::<Vec<_>>());
    let y = M::Labels::from_flat(&(0..M::BATCH).map(|r| (r * 3 % M::CLASSES) as u32).collect::<Vec<_>>());
    let mut model = Engine::<M>::with_seed(device, 5).unwrap();
    let mut base = vec![0.0; M::Params::LEN];
    model.params().unwrap().write_flat(&mut base);
    let (_, grads) = model.gradients_rows(&x, &y, M::BATCH - 1).unwrap();
    let mut g = vec![0.0; M::Params::LEN];
    grads.write_flat(&mut g);
    // A ReLU kink inside [p - eps, p + eps] makes the central difference meaningless; the
    // forward and backward differences then disagree, and such parameters are skipped (at
    // most a tenth of them). When they agree, the central difference is off by at most
    // half of their gap.
    let eps = 4e-3f32;
    let mut skipped = 0;
    for k in 0..M::Params::LEN {
        let mut loss_at = |delta: f32| {
            let mut p = base.clone();
            p[k] += delta;
            model.set_params(&M::Params::from_flat(&p)).unwrap();
            f64::from(model.loss_rows(&x, &y, M::BATCH - 1).unwrap())
        };
        let (here, up, down) = (loss_at(0.0), loss_at(eps), loss_at(-eps));
        let e = f64::from(eps);
        let (forward, backward) = (((up - here) / e) as f32, ((here - down) / e) as f32);
        let coarse = ((up - down) / (2.0 * e)) as f32;
        let tol = |v: f32| 2e-3 + 2e-2 * v.abs();
        if (forward - backward).abs() > tol(coarse) {
            skipped += 1;
            continue;
        }
        assert!(
            (coarse - g[k]).abs() <= tol(coarse),
            "{} on {device}: dL/dp[{k}] = {} but finite differences give {coarse}",
            M::NAME,
            g[k]
        );
    }
    assert!(skipped * 10 <= M::Params::LEN, "{skipped} of {} parameters sit on a ReLU kink", M::Params::LEN);
}

#[test]
fn gradients_match_finite_differences() {
    let Some(device) = opencl() else { return };
    for d in [device.clone(), device.with_kernel_path(KernelPath::Tiled)] {
        check::<Lin>(&d);
        check::<Mlp>(&d);
    }
}
