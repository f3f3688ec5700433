//! Fuzzes the ONNX readers (the `f32` model's and the int8 model's QDQ form): any bytes
//! must give a model's parameters or an error, never a panic, an abort or a huge
//! allocation. Seed it with the repository's ONNX fixtures:
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run onnx_read ../tests/fixtures/interop -- -max_total_time=300 -rss_limit_mb=512
//! ```
//!
//! The test suite runs a bounded, seeded stand-in (`interop::onnx_reader_survives_corruption`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorbridge::{Model, Params};

tensorbridge::model! {
    /// The shape of the fixtures' models: 4 -> 8 -> 3.
    pub struct Mlp { batch: 1, features: 4, hidden: [8], classes: 3 }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((flat, standardizer)) = tensorbridge::onnx::__read_onnx::<Mlp>(data) {
        assert_eq!(flat.len(), <<Mlp as Model>::Params as Params>::LEN);
        if let Some(s) = standardizer {
            assert_eq!(s.len(), Mlp::FEATURES);
        }
    }
    // The int8 model's QDQ reader, on the same bytes.
    if let Ok((weights, biases, weight_scales, act_scales, act_zeros)) =
        tensorbridge::onnx::__read_onnx_int8::<Mlp>(data)
    {
        assert_eq!((weights.len(), biases.len(), weight_scales.len()), (4 * 8 + 8 * 3, 11, 11));
        assert_eq!((act_scales.len(), act_zeros.len()), (3, 3));
    }
});
