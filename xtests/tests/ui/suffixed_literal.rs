tensorbridge::model! {
    struct M { batch: 2u8, features: 4, classes: 2 }
}
fn main() {}
