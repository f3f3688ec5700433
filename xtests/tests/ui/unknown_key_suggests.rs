tensorbridge::model! {
    struct M { batch: 2, featurse: 4, classes: 2 }
}
fn main() {}
