//! Issue 12: an SGD update that would store a non-finite parameter (an `f32` overflow, or a
//! value beyond `f16`'s ±65504 under `storage: f16`) is an error, and the parameters stay
//! bit for bit as they were: on the CPU and on OpenCL (fused and tiled kernels), for
//! immediate steps and for deferred ones (reported by `take_losses`, the step skipped).
//! A checkpoint saved afterwards loads.

use crate::support::{noise, scratch};
use tensorbridge::{Device, Element, Engine, Error, HostTensor, KernelPath, Model, Params, StorageElement};

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// A hidden layer, odd sizes.
    pub struct Mlp { batch: 3, features: 5, hidden: [6], classes: 4 }
}
tensorbridge::model! {
    /// The iris shape (15 parameters), as in the issue.
    pub struct Iris { batch: 16, features: 4, classes: 3 }
}
tensorbridge::model! {
    /// A first layer large enough (16 x 64 x 16 multiply-adds) for the CPU to fuse its
    /// update into the weight-gradient product.
    pub struct Fused { batch: 16, features: 64, hidden: [16], classes: 4 }
}
tensorbridge::model! {
    /// 102 parameters: six whole vectors of the tiled update kernels (16 parameters a
    /// work-item) and a partial one.
    pub struct Tail { batch: 3, features: 9, hidden: [7], classes: 4 }
}
tensorbridge::model! {
    /// The same, f16 storage.
    pub struct Tail16 { batch: 3, features: 9, hidden: [7], classes: 4, storage: f16 }
}
tensorbridge::model! {
    /// The seed's shape, f16 storage.
    pub struct Seed16 { batch: 2, features: 4, classes: 2, storage: f16 }
}
tensorbridge::model! {
    /// A hidden layer, f16 storage.
    pub struct Mlp16 { batch: 3, features: 5, hidden: [6], classes: 4, storage: f16 }
}

/// The CPU as is; on OpenCL the automatic choice, the fused and the tiled kernels.
fn devices(device: &Device) -> Vec<(String, Device)> {
    if device.is_cpu() {
        return vec![("cpu".to_string(), device.clone())];
    }
    vec![
        ("opencl".to_string(), device.clone()),
        ("opencl fused".to_string(), device.with_kernel_path(KernelPath::Fused)),
        ("opencl tiled".to_string(), device.with_kernel_path(KernelPath::Tiled)),
    ]
}

/// The parameters' bits, to compare exactly (NaN included).
fn bits<M: Model>(model: &Engine<M>) -> Vec<u32> {
    let mut flat = vec![M::Storage::ZERO; <M::Params as Params>::LEN];
    model.params().unwrap().write_flat(&mut flat);
    flat.iter().map(|v| v.to_f32().to_bits()).collect()
}

fn batch<M: Model>(scale: f32) -> (M::Input, M::Labels) {
    let x: Vec<M::Storage> =
        (0..M::BATCH * M::FEATURES).map(|k| M::Storage::from_f32(scale * (0.5 + 0.5 * noise(3, k)))).collect();
    let y: Vec<u32> = (0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect();
    (M::Input::from_flat(&x), M::Labels::from_flat(&y))
}

/// The parameters as `f32` and the gradients of the batch, from the device.
fn state<M: Model>(model: &mut Engine<M>, x: &M::Input, y: &M::Labels) -> (Vec<f32>, Vec<f32>) {
    let n = <M::Params as Params>::LEN;
    let mut flat = vec![M::Storage::ZERO; n];
    model.params().unwrap().write_flat(&mut flat);
    let mut grads = vec![0.0f32; n];
    model.gradients(x, y).unwrap().1.write_flat(&mut grads);
    (flat.iter().map(|v| v.to_f32()).collect(), grads)
}

/// A learning rate whose update sends the parameter of largest gradient to about
/// `reach` times the storage's overflow limit, and the first parameter (flat order) that
/// then overflows, computed on the host from the device's own gradients. No parameter
/// lands within 0.1% of the limit (where rounding could decide either way).
fn arm<M: Model>(model: &mut Engine<M>, x: &M::Input, y: &M::Labels, reach: f32) -> (usize, f32) {
    let limit = if M::Storage::IS_F16 { 65520.0f32 } else { f32::MAX };
    let (p, g) = state(model, x, y);
    let gmax = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut lr = reach * (limit / gmax);
    for _ in 0..100 {
        assert!(lr.is_finite(), "the gradients are too small to overflow with a finite rate");
        let v: Vec<f32> = p.iter().zip(&g).map(|(p, g)| (p - lr * g).abs()).collect();
        let borderline = v.iter().any(|&v| v.is_finite() && (v / limit - 1.0).abs() < 1e-3);
        if !borderline {
            let fits = |v: f32| if M::Storage::IS_F16 { v < 65520.0 } else { v.is_finite() };
            let first = v.iter().position(|&v| !fits(v));
            return (first.expect("the rate overflows some parameter"), lr);
        }
        lr *= 1.01;
    }
    panic!("no rate away from the limit");
}

/// The name, row and column the library gives flat parameter `k` of `M`.
fn location<M: Model>(k: usize) -> (String, usize, usize) {
    let mut offset = 0;
    for (l, pair) in M::LAYERS.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        if k < offset + fan_in * fan_out {
            let i = k - offset;
            return (format!("w{l}"), i % fan_in, i / fan_in);
        }
        offset += fan_in * fan_out;
        if k < offset + fan_out {
            return (format!("b{l}"), k - offset, 0);
        }
        offset += fan_out;
    }
    unreachable!()
}

/// One overflowing step, immediate and then deferred between two good ones, on `device`.
fn check_one<M: Model>(what: &str, device: &Device, scale: f32) {
    let (x, y) = batch::<M>(scale);
    let mut model = Engine::<M>::new(device).unwrap();
    let (k, lr) = arm(&mut model, &x, &y, 1.5);
    let before = bits(&model);

    // Immediate.
    match model.train_step(&x, &y, lr) {
        Err(Error::UpdateOverflow { what: name, row, column, storage, max }) => {
            assert_eq!((name, row, column), location::<M>(k), "{what}: the first overflowing parameter");
            assert_eq!((storage, max), (M::Storage::NAME, M::Storage::MAX), "{what}");
        }
        other => panic!("{what}: expected UpdateOverflow, got {other:?}"),
    }
    assert_eq!(bits(&model), before, "{what}: the parameters changed");
    let message = model.train_step(&x, &y, lr).unwrap_err().to_string();
    let range = if M::Storage::IS_F16 { "beyond f16 range, ±65504)" } else { "beyond f32 range, ±3.4028235e38)" };
    assert!(message.contains("the update was not applied") && message.contains(range), "{what}: {message}");

    // Deferred: good, overflowing, good. The reference applies the good steps alone.
    let mut reference = Engine::<M>::with_params(device, model.params().unwrap()).unwrap();
    let small = 1e-6;
    reference.train_step(&x, &y, small).unwrap();
    reference.train_step(&x, &y, small).unwrap();
    model.train_step_deferred(&x, &y, small).unwrap();
    model.train_step_deferred(&x, &y, lr).unwrap();
    model.train_step_deferred(&x, &y, small).unwrap();
    // The second good step starts from the first one's parameters: the overflow check of
    // the middle step is against those (still overflowing: `small` barely moves them).
    match model.take_losses() {
        Err(Error::UpdateOverflow { what: name, row, column, .. }) => {
            assert_eq!((name, row, column), location::<M>(k), "{what}: deferred");
        }
        other => panic!("{what}: deferred: expected UpdateOverflow, got {other:?}"),
    }
    assert_eq!(bits(&model), bits(&reference), "{what}: deferred: the skipped step changed the parameters");
    assert!(model.take_losses().unwrap().is_empty(), "{what}: the record is cleared");

    // Training goes on with a sane rate.
    let loss = model.train_step(&x, &y, 1e-6).unwrap();
    assert!(loss.is_finite(), "{what}");
}

fn an_f32_overflowing_update_is_refused_and_changes_nothing(device: &Device) {
    for (name, device) in devices(device) {
        check_one::<Seed>(&format!("{name} seed f32"), &device, 100.0);
        check_one::<Mlp>(&format!("{name} mlp f32"), &device, 100.0);
        check_one::<Tail>(&format!("{name} tail f32"), &device, 100.0);
        check_one::<Fused>(&format!("{name} fused f32"), &device, 100.0);
    }
}

/// The fused update's own case: the first layer's update provably fits (so the CPU applies
/// it in place) while another parameter's overflows. Nothing may change, the first layer
/// included, whether the step knows the first layer's bound (after a good step) or not
/// (the first step of a fresh model).
///
/// Hidden unit 0 alone is alive and reaches the logits through a weight of 1e-30, so the
/// first layer's gradients are about 1e-32: its update at lr 3e38 moves weights by about
/// 1e7 (visible, finite). Classes 0 and 1 both have a bias of 2e38 and every label is 1:
/// the softmax gives them 0.5 each, dL/db1[1] = -0.5, and b1[1] would become
/// 2e38 + 3e38 * 0.5 = 3.5e38, beyond f32.
fn an_overflow_beside_a_fitting_first_layer_changes_nothing(device: &Device) {
    let mut flat = vec![0.0f32; <FusedParams as Params>::LEN];
    let put = |flat: &mut Vec<f32>, what: &str, row: usize, column: usize, v: f32| {
        let k = (0..flat.len()).find(|&k| location::<Fused>(k) == (what.to_string(), row, column)).unwrap();
        flat[k] = v;
    };
    for i in 0..64 {
        put(&mut flat, "w0", i, 0, 0.01 * (1.0 + noise(5, i)));
    }
    put(&mut flat, "b0", 0, 0, 1.0);
    for unit in 1..16 {
        put(&mut flat, "b0", unit, 0, -1.0);
    }
    put(&mut flat, "w1", 0, 0, 1e-30);
    put(&mut flat, "b1", 0, 0, 2e38);
    put(&mut flat, "b1", 1, 0, 2e38);
    let params = FusedParams::from_flat(&flat);
    let (x, _) = batch::<Fused>(1.0);
    let y = <Fused as Model>::Labels::from_flat(&[1u32; 16]);
    for (name, device) in devices(device) {
        for warm in [false, true] {
            let what = format!("{name}, {}", if warm { "after a good step" } else { "first step" });
            let mut model = Engine::<Fused>::with_params(&device, &params).unwrap();
            if warm {
                model.train_step(&x, &y, 1e-30).unwrap();
            }
            let (p, g) = state(&mut model, &x, &y);
            let moved = (0..64).filter(|&i| (p[i] - 3e38 * g[i] - p[i]).abs() > 1.0).count();
            assert!(moved > 0, "{what}: the first layer's update would not show");
            let before = bits(&model);
            match model.train_step(&x, &y, 3e38) {
                Err(Error::UpdateOverflow { what: tensor, row, column, .. }) => {
                    assert_eq!((tensor.as_str(), row, column), ("b1", 1, 0), "{what}");
                }
                other => panic!("{what}: expected UpdateOverflow, got {other:?}"),
            }
            assert_eq!(bits(&model), before, "{what}: the parameters changed");
        }
    }
}

/// The CPU's fused update gives the same bits whichever way the step took (in place, when
/// it knew a bound on the first layer, or through a copy, when the parameters were just
/// set), and equals `p - lr * g` from the reported gradients to rounding.
fn the_fused_update_is_the_sgd_update_whichever_way_it_goes(device: &Device) {
    let (x, y) = batch::<Fused>(1.0);
    let lr = 0.05;
    let mut straight = Engine::<Fused>::with_seed(device, 3).unwrap();
    for _ in 0..3 {
        straight.train_step(&x, &y, lr).unwrap();
    }
    let (p, g) = state(&mut straight, &x, &y);
    // A model set to the same parameters starts without a bound: its next step checks a copy.
    let mut restarted = Engine::<Fused>::with_params(device, straight.params().unwrap()).unwrap();
    for _ in 0..3 {
        straight.train_step(&x, &y, lr).unwrap();
        restarted.train_step(&x, &y, lr).unwrap();
    }
    assert_eq!(bits(&restarted), bits(&straight), "the paths computed different bits");
    // One step against p - lr * g, to rounding (one rounding of p - lr * g in f32, either way).
    let mut one = Engine::<Fused>::with_params(device, FusedParams::from_flat(&p)).unwrap();
    one.train_step(&x, &y, lr).unwrap();
    let (after, _) = state(&mut one, &x, &y);
    for (k, ((&p, &g), &a)) in p.iter().zip(&g).zip(&after).enumerate() {
        let expected = p - lr * g;
        let tolerance = 2.0 * f32::EPSILON * p.abs().max((lr * g).abs());
        assert!((a - expected).abs() <= tolerance, "parameter {k}: {a} against {expected}");
    }
}

fn an_update_beyond_f16_range_is_refused_and_changes_nothing(device: &Device) {
    for (name, device) in devices(device) {
        check_one::<Seed16>(&format!("{name} seed f16"), &device, 1.0);
        check_one::<Mlp16>(&format!("{name} mlp f16"), &device, 1.0);
        check_one::<Tail16>(&format!("{name} tail f16"), &device, 1.0);
    }
}

fn an_update_to_just_below_f16_infinity_is_applied(device: &Device) {
    // A value of 65510 rounds to 65504, f16's largest: finite, so the step is applied.
    for (name, device) in devices(device) {
        let (x, y) = batch::<Seed16>(1.0);
        let mut model = Seed16::new(&device).unwrap();
        let (p, g) = state(&mut model, &x, &y);
        let k = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        // p_k - lr * g_k = -sign(g_k) * 65510
        let lr = (p[k] + g[k].signum() * 65510.0) / g[k];
        model.train_step(&x, &y, lr).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (after, _) = state(&mut model, &x, &y);
        assert_eq!(after[k].abs(), 65504.0, "{name}");
        assert!(after.iter().all(|v| v.is_finite()), "{name}");
    }
}

/// The case: inputs x10 and lr 1e38, then a save over a good checkpoint.
fn the_reported_f32_case_fails_cleanly_and_the_checkpoint_stays_loadable(device: &Device) {
    // (One directory per trial: the CPU's and OpenCL's run at the same time.)
    let dir = scratch(if device.is_cpu() { "overflow-cpu" } else { "overflow-opencl" });
    for (name, device) in devices(device) {
        // Iris-like measurements (up to about 8) times 10.
        let (x, y) = batch::<Iris>(80.0);
        let mut model = Iris::new(&device).unwrap();
        let before = bits(&model);
        // Without the check, this step would store infinities.
        let (p, g) = state(&mut model, &x, &y);
        let overflowing = p.iter().zip(&g).filter(|(p, g)| !(*p - 1e38 * *g).is_finite()).count();
        assert!(overflowing > 0, "{name}: the case does not overflow");
        let err = model.train_step(&x, &y, 1e38).unwrap_err();
        assert!(matches!(err, Error::UpdateOverflow { .. }), "{name}: {err:?}");
        assert_eq!(bits(&model), before, "{name}");
        let path = dir.join(format!("{}.safetensors", name.replace(' ', "-")));
        model.save(&path).unwrap();
        let loaded = Iris::load(&device, &path).unwrap();
        assert_eq!(bits(&loaded), before, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The f16 case: lr 1e5 steps until one would overflow; every step that returns
/// `Ok` leaves finite parameters, and the refused one changes nothing.
fn the_reported_f16_case_never_stores_inf(device: &Device) {
    for (name, device) in devices(device) {
        let (x, y) = batch::<Mlp16>(1.0);
        let mut model = Mlp16::new(&device).unwrap();
        let mut refused = false;
        for step in 0..200 {
            let before = bits(&model);
            match model.train_step(&x, &y, 1e5) {
                Ok(_) => {
                    let now = bits(&model);
                    assert!(now.iter().all(|b| f32::from_bits(*b).is_finite()), "{name}: step {step} stored inf");
                }
                Err(Error::UpdateOverflow { .. }) | Err(Error::NonFiniteLoss { .. }) => {
                    assert_eq!(bits(&model), before, "{name}: step {step}");
                    refused = true;
                    break;
                }
                Err(other) => panic!("{name}: {other}"),
            }
        }
        assert!(refused, "{name}: lr 1e5 never overflowed: the test does not exercise the check");
    }
}

crate::tests! {
    device an_f32_overflowing_update_is_refused_and_changes_nothing,
    device an_update_beyond_f16_range_is_refused_and_changes_nothing,
    device an_overflow_beside_a_fitting_first_layer_changes_nothing,
    device the_fused_update_is_the_sgd_update_whichever_way_it_goes,
    device an_update_to_just_below_f16_infinity_is_applied,
    device the_reported_f32_case_fails_cleanly_and_the_checkpoint_stays_loadable,
    device the_reported_f16_case_never_stores_inf,
}
