tensorbridge::model! {
    struct M { batch: 2, features: 4, classes: 2000000 }
}
fn main() {}
