tensorbridge::model! {
    struct M { batch: 2, features: 4, hidden: [8, 0], classes: 2 }
}
fn main() {}
