use tensorbridge::nalgebra::SMatrix;
tensorbridge::model! {
    struct M { batch: 2, features: 4, classes: 2 }
}
fn main() {
    let mut model = M::new(&tensorbridge::Device::cpu()).unwrap();
    let x = SMatrix::<f32, 2, 5>::zeros();
    let _ = model.logits(&x);
}
