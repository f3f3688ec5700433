tensorbridge::model! {
    struct M { batch: 2, features: 4, hidden: 8, classes: 2 }
}
fn main() {}
