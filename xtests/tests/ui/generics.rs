tensorbridge::model! {
    struct M<T> { batch: 2, features: 4, classes: 2 }
}
fn main() {}
