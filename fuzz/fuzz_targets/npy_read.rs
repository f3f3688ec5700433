//! Fuzzes the `.npy` reader: any bytes must give a matrix or an error, never a panic, an
//! abort or a huge allocation; an accepted file must hold as many values as its shape.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run npy_read -- -max_total_time=300 -rss_limit_mb=512
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorbridge::npy;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = npy::matrix_from_bytes(data) {
        // Every value comes from at least one byte of the file.
        assert!(m.len() <= data.len());
        // What we accepted, written back in our format, reads back the same.
        let again = npy::matrix_from_bytes(&npy::matrix_to_bytes(&m)).expect("re-read our own output");
        assert_eq!(again.shape(), m.shape());
        assert!(again.iter().zip(m.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    if let Ok(labels) = npy::labels_from_bytes(data) {
        assert!(labels.len() <= data.len());
    }
});
