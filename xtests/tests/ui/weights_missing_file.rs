// `weights:` names a file that is not there.
tensorbridge::model! {
    struct Missing { batch: 2, features: 4, classes: 2, weights: "no/such/file.safetensors" }
}

fn main() {}
