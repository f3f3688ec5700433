tensorbridge::model! {
    struct M { batch: 2.5, features: "4", classes: N }
}
const N: usize = 2;
fn main() {}
