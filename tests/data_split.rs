//! Datasets: construction errors, stratified splits, standardisation and mini-batches.
//! Expected values are counted or computed by hand in each test.

use crate::support;

use tensorbridge::data::{Dataset, Standardizer};
use tensorbridge::nalgebra::DMatrix;
use tensorbridge::rng::Rng;
use tensorbridge::Error;

tensorbridge::model! {
    /// Two features, three classes, batches of four.
    pub struct Small { batch: 4, features: 2, classes: 3 }
}
tensorbridge::model! {
    /// Iris-shaped.
    pub struct IrisShape { batch: 16, features: 4, classes: 3 }
}

fn iris() -> Dataset {
    Dataset::from_npy(support::data("iris_features.npy"), support::data("iris_labels.npy")).unwrap()
}

/// Rows `r` with features `(r, 10 r)` and label `r % 3`.
fn counting(n: usize) -> Dataset {
    Dataset::new(
        DMatrix::from_fn(n, 2, |r, c| (r * if c == 0 { 1 } else { 10 }) as f32),
        (0..n).map(|r| (r % 3) as u32).collect(),
    )
    .unwrap()
}

fn labels_must_match_rows() {
    let err = Dataset::new(DMatrix::zeros(3, 2), vec![0, 1]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

fn non_finite_features_are_refused_with_their_position() {
    let mut x = DMatrix::zeros(3, 2);
    x[(2, 1)] = f32::NAN;
    match Dataset::new(x, vec![0, 1, 2]) {
        Err(Error::NonFinite { row: 2, column: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
}

fn stratified_split_keeps_class_proportions() {
    let data = iris();
    assert_eq!(counts(&data), vec![50, 50, 50]);
    let (train, test) = data.split_stratified(0.3, 0).unwrap();
    // 50 * 0.3 = 15 of each class in the test part.
    assert_eq!(counts(&test), vec![15, 15, 15]);
    assert_eq!(counts(&train), vec![35, 35, 35]);
    // Disjoint, and together every row: match rows back by their features and label.
    let mut seen = vec![0; data.len()];
    for part in [&train, &test] {
        for r in 0..part.len() {
            let k = (0..data.len())
                .find(|&k| {
                    seen[k] == 0
                        && data.labels()[k] == part.labels()[r]
                        && data.features().row(k) == part.features().row(r)
                })
                .expect("row comes from the dataset");
            seen[k] += 1;
        }
    }
    assert!(seen.iter().all(|&s| s == 1));
}

fn split_is_seeded() {
    let data = iris();
    let a = data.split_stratified(0.3, 7).unwrap();
    let b = data.split_stratified(0.3, 7).unwrap();
    let c = data.split_stratified(0.3, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.1, c.1);
}

fn impossible_splits_are_errors() {
    let data = counting(9);
    for f in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(data.split_stratified(f, 0), Err(Error::InvalidSplit { .. })), "{f}");
    }
    // Three rows per class: round(3 * 0.1) = 0 test rows of each class.
    assert!(matches!(data.split_stratified(0.1, 0), Err(Error::InvalidSplit { .. })));
    // A fraction near 1 still leaves one row of each class for training.
    let (train, test) = data.split_stratified(0.99, 0).unwrap();
    assert_eq!((counts(&train), counts(&test)), (vec![1, 1, 1], vec![2, 2, 2]));
}

fn standardizer_uses_population_statistics_of_the_training_set() {
    // Column 0: 1, 2, 3, 4 -> mean 2.5, population variance 1.25.
    // Column 1: constant 7 -> scale 1, all zeros after.
    let x = DMatrix::from_row_slice(4, 2, &[1.0, 7.0, 2.0, 7.0, 3.0, 7.0, 4.0, 7.0]);
    let train = Dataset::new(x, vec![0, 1, 0, 1]).unwrap();
    let s = Standardizer::fit(&train).unwrap();
    assert_eq!(s.mean(), &[2.5, 7.0]);
    assert!((s.scale()[0] - 1.25f32.sqrt()).abs() < 1e-7);
    assert_eq!(s.scale()[1], 1.0);
    let z = s.apply(&train).unwrap();
    let expected = [-1.5, -0.5, 0.5, 1.5].map(|v: f32| v / 1.25f32.sqrt());
    for (r, e) in expected.iter().enumerate() {
        assert!((z.features()[(r, 0)] - e).abs() < 1e-6);
        assert_eq!(z.features()[(r, 1)], 0.0, "a constant column becomes zeros, not NaN");
    }
    // Another set is standardised with the training statistics, not its own.
    let other = Dataset::new(DMatrix::from_row_slice(1, 2, &[2.5, 8.0]), vec![1]).unwrap();
    let z = s.apply(&other).unwrap();
    assert_eq!(z.features()[(0, 0)], 0.0);
    assert_eq!(z.features()[(0, 1)], 1.0);
}

fn standardizer_errors() {
    let empty = Dataset::new(DMatrix::zeros(0, 2), vec![]).unwrap();
    assert!(matches!(Standardizer::fit(&empty), Err(Error::EmptyDataset { .. })));
    let s = Standardizer::fit(&counting(6)).unwrap();
    let three = Dataset::new(DMatrix::zeros(2, 3), vec![0, 0]).unwrap();
    assert!(matches!(s.apply(&three), Err(Error::ShapeMismatch { .. })));
}

fn standardised_iris_training_set_has_zero_mean_unit_variance() {
    let (train, _) = iris().split_stratified(0.3, 0).unwrap();
    let z = Standardizer::fit(&train).unwrap().apply(&train).unwrap();
    for c in 0..4 {
        let col: Vec<f64> = z.features().column(c).iter().map(|&v| f64::from(v)).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "column {c}: mean {mean}, variance {var}");
    }
}

fn batches_cover_every_row_once_and_pad_the_last() {
    let data = counting(10);
    let batches: Vec<_> = data.batches::<Small>().unwrap().collect();
    assert_eq!(batches.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![4, 4, 2]);
    for (k, b) in batches.iter().enumerate() {
        for r in 0..4 {
            let row = k * 4 + r;
            if r < b.rows {
                assert_eq!((b.x[(r, 0)], b.x[(r, 1)], b.y[r]), (row as f32, (row * 10) as f32, (row % 3) as u32));
            } else {
                assert_eq!((b.x[(r, 0)], b.x[(r, 1)], b.y[r]), (0.0, 0.0, 0), "padding");
            }
        }
    }
    assert_eq!(data.batches::<Small>().unwrap().len(), 3);
    assert_eq!(counting(8).batches::<Small>().unwrap().map(|b| b.rows).collect::<Vec<_>>(), vec![4, 4]);
    assert_eq!(counting(1).batches::<Small>().unwrap().map(|b| b.rows).collect::<Vec<_>>(), vec![1]);
}

fn shuffled_batches_are_a_seeded_permutation() {
    let data = counting(10);
    let order = |seed| -> Vec<u32> {
        let mut rng = Rng::new(seed);
        data.shuffled_batches::<Small>(&mut rng)
            .unwrap()
            .flat_map(|b| (0..b.rows).map(move |r| b.x[(r, 0)] as u32).collect::<Vec<_>>())
            .collect()
    };
    let (a, b, c) = (order(1), order(1), order(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(a, sorted, "shuffled");
}

fn a_dataset_that_does_not_fit_the_model_is_an_error() {
    let err = iris().batches::<Small>().err().expect("4 features into a 2-feature model");
    match err {
        Error::ShapeMismatch { expected, found, .. } => {
            assert!(expected.contains('2') && found.contains('4'), "{expected} / {found}");
        }
        other => panic!("{other}"),
    }
    let bad_label = Dataset::new(DMatrix::zeros(3, 4), vec![0, 3, 1]).unwrap();
    match bad_label.batches::<IrisShape>().err() {
        Some(Error::LabelsOutOfRange { file: None, classes: 3, count: 1, rows, .. }) => assert_eq!(rows, vec![(1, 3)]),
        other => panic!("expected LabelsOutOfRange, got {other:?}"),
    }
}

fn select_and_shuffled() {
    let data = counting(5);
    let picked = data.select(&[4, 0, 4]).unwrap();
    assert_eq!(picked.labels(), &[1, 0, 1]);
    assert_eq!(picked.features()[(0, 1)], 40.0);
    assert!(matches!(data.select(&[5]), Err(Error::ShapeMismatch { .. })));
    let s = data.shuffled(3);
    assert_eq!(s, data.shuffled(3));
    let mut labels = s.labels().to_vec();
    labels.sort_unstable();
    assert_eq!(labels, vec![0, 0, 1, 1, 2]);
}

/// The class counts of classes 0, 1, 2, ... (every class present).
fn counts(data: &Dataset) -> Vec<usize> {
    let counts = data.class_counts();
    assert!(counts.keys().copied().eq(0..counts.len() as u32), "{counts:?}");
    counts.into_values().collect()
}

crate::tests! {
    plain labels_must_match_rows,
    plain non_finite_features_are_refused_with_their_position,
    plain stratified_split_keeps_class_proportions,
    plain split_is_seeded,
    plain impossible_splits_are_errors,
    plain standardizer_uses_population_statistics_of_the_training_set,
    plain standardizer_errors,
    plain standardised_iris_training_set_has_zero_mean_unit_variance,
    plain batches_cover_every_row_once_and_pad_the_last,
    plain shuffled_batches_are_a_seeded_permutation,
    plain a_dataset_that_does_not_fit_the_model_is_an_error,
    plain select_and_shuffled,
}
