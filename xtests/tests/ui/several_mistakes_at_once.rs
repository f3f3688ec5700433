tensorbridge::model! {
    struct M { batch: 0, featurse: 4, classes: -2 }
}
fn main() {}
