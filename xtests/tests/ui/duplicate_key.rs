tensorbridge::model! {
    struct M { batch: 2, features: 4, classes: 2, batch: 8 }
}
fn main() {}
