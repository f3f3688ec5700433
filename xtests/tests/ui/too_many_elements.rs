tensorbridge::model! {
    struct M { batch: 1048576, features: 1048576, classes: 2 }
}
fn main() {}
