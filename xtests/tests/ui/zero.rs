tensorbridge::model! {
    struct M { batch: 0, features: 4, classes: 2 }
}
fn main() {}
