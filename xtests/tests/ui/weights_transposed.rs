// `weights:` names a checkpoint whose first weight is in PyTorch's [out, in] layout
// (tests/fixtures/weights.py). The path is relative to the declaring crate's Cargo.toml: here
// the project trybuild builds, `target/tests/trybuild/tensorbridge-xtests/`.
tensorbridge::model! {
    struct Transposed { batch: 2, features: 4, hidden: [8], classes: 3, weights: "../../../../tests/fixtures/weights/transposed.safetensors" }
}

fn main() {}
