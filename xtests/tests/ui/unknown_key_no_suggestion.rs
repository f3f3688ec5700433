tensorbridge::model! {
    struct M { batch: 2, features: 4, classes: 2, learning_rate: 1 }
}
fn main() {}
