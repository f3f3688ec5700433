// `weights:` names a checkpoint of another shape (4 -> 8 -> 3) than the declaration's (the
// path as in weights_transposed.rs), and a value that is not a string.
tensorbridge::model! {
    struct Other { batch: 2, features: 4, hidden: [16], classes: 3, weights: "../../../../tests/fixtures/weights/mlp.safetensors" }
}

tensorbridge::model! {
    struct NotAString { batch: 2, features: 4, classes: 2, weights: mlp }
}

fn main() {}
