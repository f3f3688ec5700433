tensorbridge::model! {
    struct M { batch: 2, features: 4, classes: 1 }
}
fn main() {}
