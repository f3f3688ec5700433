tensorbridge::model! {
    struct M { batch: , features: 4, classes: 2 }
}
fn main() {}
