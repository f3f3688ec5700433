tensorbridge::model! {
    struct M { batch: 2, features: 4 }
}
fn main() {}
