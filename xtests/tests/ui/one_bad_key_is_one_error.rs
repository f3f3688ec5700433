// One misspelled key: one error at the key. The macro still generates the model (from what
// validated, `featurse`'s value taken for `features`), so the uses below raise no errors.
use tensorbridge::nalgebra::SMatrix;
use tensorbridge::Model;

tensorbridge::model! {
    pub struct CatDog { batch: 2, featurse: 4, classes: 2, hidden: [3] }
}

fn main() {
    let device = tensorbridge::Device::cpu();
    let mut model = CatDog::new(&device).unwrap();
    let x = SMatrix::<f32, 2, 4>::zeros();
    let y = tensorbridge::nalgebra::SVector::<u32, 2>::zeros();
    let _ = model.train_step(&x, &y, 0.1);
    let params: CatDogParams = model.params().unwrap();
    let _ = (params.w0, params.b1, CatDog::LAYERS, CatDog::ACTIVATIONS);
}
