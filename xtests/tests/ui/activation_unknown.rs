tensorbridge::model! {
    pub struct CatDog { batch: 2, features: 4, classes: 2, hidden: [3, 3], activation: relu6 }
}

tensorbridge::model! {
    pub struct Listed { batch: 2, features: 4, classes: 2, hidden: [3, 3], activation: [tanh] }
}

fn main() {
    let _ = CatDog::new(&tensorbridge::Device::cpu());
    let _ = Listed::new(&tensorbridge::Device::cpu());
}
