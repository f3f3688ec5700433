//! Datasets on the host: rows of features with their class labels, stratified splits,
//! standardisation with training-set statistics, seeded shuffling, and mini-batches of
//! exactly a model's batch size.
//!
//! ```
//! use tensorbridge::data::{Dataset, Standardizer};
//! use tensorbridge::nalgebra::DMatrix;
//!
//! tensorbridge::model! {
//!     /// Three features, two classes, batches of four.
//!     pub struct Tiny { batch: 4, features: 3, classes: 2 }
//! }
//!
//! # fn main() -> tensorbridge::Result<()> {
//! let x = DMatrix::from_fn(10, 3, |r, c| (r * 3 + c) as f32);
//! let y = (0..10).map(|r| (r % 2) as u32).collect();
//! let data = Dataset::new(x, y)?;
//! let (train, test) = data.split_stratified(0.2, 7)?;
//! assert_eq!((train.len(), test.len()), (8, 2));
//!
//! let scaler = Standardizer::fit(&train)?;
//! let train = scaler.apply(&train)?;
//!
//! // 8 rows in batches of 4; a 10-row set would give 4 + 4 + 2 (the last one padded).
//! let rows: Vec<usize> = train.batches::<Tiny>()?.map(|b| b.rows).collect();
//! assert_eq!(rows, vec![4, 4]);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nalgebra::DMatrix;

use crate::error::{Error, Result};
use crate::model::{Element, HostTensor, Model, StorageElement};
use crate::npy;
use crate::rng::Rng;

/// `n` rows of features (`[n x features]`, `f32`, all finite) and one class label per row.
///
/// A dataset loaded from files remembers them, and which row of the files each of its rows
/// came from (through splits, shuffles, selections and standardisation), so that an error
/// about its data names the file and the file's row. Two datasets are equal when their
/// features and labels are, wherever they came from.
#[derive(Clone, Debug)]
pub struct Dataset {
    features: DMatrix<f32>,
    labels: Vec<u32>,
    source: Option<Source>,
}

/// The files a dataset was loaded from, and the file row of each of its rows.
#[derive(Clone, Debug)]
struct Source {
    features_file: Arc<Path>,
    labels_file: Arc<Path>,
    rows: Vec<usize>,
}

impl Source {
    /// The source of the rows `picked` (indices into this source's rows).
    fn pick(&self, picked: &[usize]) -> Source {
        Source {
            features_file: Arc::clone(&self.features_file),
            labels_file: Arc::clone(&self.labels_file),
            rows: picked.iter().map(|&r| self.rows[r]).collect(),
        }
    }
}

impl PartialEq for Dataset {
    fn eq(&self, other: &Dataset) -> bool {
        self.features == other.features && self.labels == other.labels
    }
}

impl Dataset {
    /// A dataset of `features` (one row per example) and `labels` (one per row).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the number of labels differs from the number of rows;
    /// [`Error::NonFinite`] (naming the row and column) for a NaN or infinite feature.
    pub fn new(features: DMatrix<f32>, labels: Vec<u32>) -> Result<Dataset> {
        if features.nrows() != labels.len() {
            return Err(Error::ShapeMismatch {
                what: "labels".to_string(),
                expected: format!("{} labels, one per row of features", features.nrows()),
                found: format!("{} labels", labels.len()),
            });
        }
        if let Some((k, &value)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            let rows = features.nrows();
            return Err(Error::NonFinite { what: "features".to_string(), row: k % rows, column: k / rows, value });
        }
        Ok(Dataset { features, labels, source: None })
    }

    /// Loads features (a 2-D float or integer array) and labels (a 1-D integer array) from
    /// two `.npy` files, as `numpy.save` writes them. The dataset remembers the files:
    /// errors about its rows later (a label the model does not have, a value `f16`
    /// storage cannot hold) name the file and its row.
    ///
    /// # Errors
    /// Those of [`npy::read_finite_matrix`] (a NaN or infinite feature is
    /// [`npy::NpyErrorKind::NonFinite`], with the file, row and column) and
    /// [`npy::read_labels`]; [`Error::ShapeMismatch`], naming both files, if they hold
    /// different numbers of rows.
    pub fn from_npy(features_path: impl AsRef<Path>, labels_path: impl AsRef<Path>) -> Result<Dataset> {
        let (features_path, labels_path) = (features_path.as_ref(), labels_path.as_ref());
        let features = npy::read_finite_matrix(features_path)?;
        let labels = npy::read_labels(labels_path)?;
        if features.nrows() != labels.len() {
            return Err(Error::ShapeMismatch {
                what: format!("labels of {}", labels_path.display()),
                expected: format!("{} labels, one per row of {}", features.nrows(), features_path.display()),
                found: format!("{} labels", labels.len()),
            });
        }
        let rows = (0..labels.len()).collect();
        let source = Source { features_file: Arc::from(features_path), labels_file: Arc::from(labels_path), rows };
        Ok(Dataset { features, labels, source: Some(source) })
    }

    /// The features file this dataset was loaded from ([`Dataset::from_npy`]); `None` for
    /// one made in memory.
    pub fn features_file(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| &*s.features_file)
    }

    /// The labels file this dataset was loaded from ([`Dataset::from_npy`]); `None` for one
    /// made in memory.
    pub fn labels_file(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| &*s.labels_file)
    }

    /// The row of the files that row `row` of this dataset came from (itself for a dataset
    /// made in memory).
    pub fn file_row(&self, row: usize) -> usize {
        self.source.as_ref().and_then(|s| s.rows.get(row).copied()).unwrap_or(row)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per row.
    pub fn n_features(&self) -> usize {
        self.features.ncols()
    }

    /// Number of classes the labels imply: the largest label plus one (0 when empty).
    pub fn n_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// How many rows each class has: `label -> count` for every label present (a class
    /// with no rows is absent). Its memory is bounded by the number of rows, whatever the
    /// label values (a label of `u32::MAX`, a common "unlabelled" marker, costs one entry).
    pub fn class_counts(&self) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for &l in &self.labels {
            *counts.entry(l).or_insert(0) += 1;
        }
        counts
    }

    /// The features, `[len x n_features]`.
    pub fn features(&self) -> &DMatrix<f32> {
        &self.features
    }

    /// The labels, one per row.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The rows at `rows`, in that order (a row may repeat).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an index `>= len()`.
    pub fn select(&self, rows: &[usize]) -> Result<Dataset> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.len()) {
            return Err(Error::ShapeMismatch {
                what: "row index".to_string(),
                expected: format!("an index below {}", self.len()),
                found: bad.to_string(),
            });
        }
        let features = DMatrix::from_fn(rows.len(), self.n_features(), |r, c| self.features[(rows[r], c)]);
        let labels = rows.iter().map(|&r| self.labels[r]).collect();
        Ok(Dataset { features, labels, source: self.source.as_ref().map(|s| s.pick(rows)) })
    }

    /// The rows in a seeded random order (Fisher-Yates with [`Rng`]): the same seed gives
    /// the same order on every machine.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut order);
        let features = DMatrix::from_fn(self.len(), self.n_features(), |r, c| self.features[(order[r], c)]);
        let labels = order.iter().map(|&r| self.labels[r]).collect();
        Dataset { features, labels, source: self.source.as_ref().map(|s| s.pick(&order)) }
    }

    /// Splits into `(train, test)` so that every class keeps its proportion: of a class's
    /// `n_c` rows, `round(n_c * test_fraction)` (at most `n_c - 1`, so every class stays in
    /// the training part) go to the test part, chosen at random with `seed`. Both parts keep
    /// the original row order.
    ///
    /// # Errors
    /// [`Error::InvalidSplit`] if `test_fraction` is not strictly between 0 and 1, or if
    /// either part would be empty.
    pub fn split_stratified(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        let invalid = |reason: &str| Error::InvalidSplit { test_fraction, reason: reason.to_string() };
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(invalid("the test fraction must be strictly between 0 and 1"));
        }
        let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (row, &label) in self.labels.iter().enumerate() {
            by_class.entry(label).or_default().push(row);
        }
        let mut rng = Rng::new(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for rows in by_class.values_mut() {
            rng.shuffle(rows);
            let n = rows.len();
            let n_test = ((n as f64 * test_fraction).round() as usize).min(n - 1);
            test.extend_from_slice(&rows[..n_test]);
            train.extend_from_slice(&rows[n_test..]);
        }
        if test.is_empty() {
            return Err(invalid("the test part would be empty (too few rows per class)"));
        }
        if train.is_empty() {
            return Err(invalid("the training part would be empty"));
        }
        train.sort_unstable();
        test.sort_unstable();
        Ok((self.select(&train)?, self.select(&test)?))
    }

    /// Checks that this dataset fits model `M`: `M::FEATURES` features per row and every
    /// label `< M::CLASSES`. `what` names the dataset in errors.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a feature-count mismatch (naming the features file of a
    /// loaded dataset); [`Error::LabelsOutOfRange`] for labels the model does not have: the
    /// labels file of a loaded dataset, how many rows, and the first few (rows of the file).
    pub fn check_fits<M: Model>(&self, what: &str) -> Result<()> {
        if self.n_features() != M::FEATURES {
            let what = match self.features_file() {
                Some(file) => format!("features of {what} ({})", file.display()),
                None => format!("features of {what}"),
            };
            return Err(Error::ShapeMismatch {
                what,
                expected: format!("{} per row, as {} declares", M::FEATURES, M::NAME),
                found: format!("{} per row", self.n_features()),
            });
        }
        if self.labels.iter().any(|&l| l as usize >= M::CLASSES) {
            // The offenders in the file's order, whatever shuffles came after loading.
            let mut rows: Vec<(usize, u32)> = (self.labels.iter().enumerate())
                .filter(|(_, &l)| l as usize >= M::CLASSES)
                .map(|(row, &label)| (self.file_row(row), label))
                .collect();
            rows.sort_unstable();
            let count = rows.len();
            rows.truncate(npy::LISTED_ROWS);
            let file = self.labels_file().map(PathBuf::from);
            return Err(Error::LabelsOutOfRange { file, model: M::NAME, classes: M::CLASSES, count, rows });
        }
        Ok(())
    }

    /// Mini-batches for model `M`, rows in dataset order. See [`Batches`].
    ///
    /// # Errors
    /// Those of [`Dataset::check_fits`]; for a model with `f16` storage,
    /// [`Error::StorageOverflow`] (naming the row and column) for a value beyond ±65504.
    pub fn batches<M: Model>(&self) -> Result<Batches<'_, M>> {
        self.batches_in_order((0..self.len()).collect())
    }

    /// Mini-batches for model `M`, rows in an order shuffled by `rng`.
    ///
    /// # Errors
    /// As [`Dataset::batches`].
    pub fn shuffled_batches<M: Model>(&self, rng: &mut Rng) -> Result<Batches<'_, M>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        rng.shuffle(&mut order);
        self.batches_in_order(order)
    }

    /// Mini-batches over the rows listed in `order` (each index `< len()`).
    pub(crate) fn batches_in_order<M: Model>(&self, order: Vec<usize>) -> Result<Batches<'_, M>> {
        self.check_fits::<M>("the dataset")?;
        if M::Storage::IS_F16 {
            self.check_storage_range::<M::Storage>()?;
        }
        Ok(Batches {
            data: self,
            order,
            next: 0,
            x: vec![M::Storage::ZERO; M::BATCH * M::FEATURES],
            y: vec![0; M::BATCH],
            _model: std::marker::PhantomData,
        })
    }
}

impl Dataset {
    /// Every feature within the range of storage `T` (the features are finite already).
    fn check_storage_range<T: StorageElement>(&self) -> Result<()> {
        let over = |v: &f32| !T::from_f32(*v).is_finite();
        match self.features.iter().enumerate().find(|(_, v)| over(v)) {
            None => Ok(()),
            Some((k, &value)) => {
                let rows = self.features.nrows();
                let what = match self.features_file() {
                    Some(file) => format!("features of {}", file.display()),
                    None => "features".to_string(),
                };
                Err(Error::StorageOverflow { what, row: self.file_row(k % rows), column: k / rows, value, max: T::MAX })
            }
        }
    }
}

/// One mini-batch of exactly `M::BATCH` rows, of which the first `rows` are data and the
/// rest padding (zero features, label 0). Pass `rows` to the engine's `*_rows` methods
/// (`train_step_rows`, `loss_rows`, `gradients_rows`) so that padding never counts.
pub struct MiniBatch<M: Model> {
    /// Features, `[BATCH x FEATURES]`.
    pub x: M::Input,
    /// Labels, `[BATCH]`.
    pub y: M::Labels,
    /// How many leading rows are real data (`1..=BATCH`).
    pub rows: usize,
}

/// Iterator over the mini-batches of a dataset: `ceil(n / BATCH)` batches, every row in
/// exactly one of them, the last one padded when `BATCH` does not divide `n`. Each batch
/// costs one copy of its rows into the statically sized host buffer.
pub struct Batches<'a, M: Model> {
    data: &'a Dataset,
    order: Vec<usize>,
    next: usize,
    x: Vec<M::Storage>,
    y: Vec<u32>,
    _model: std::marker::PhantomData<fn() -> M>,
}

impl<M: Model> Iterator for Batches<'_, M> {
    type Item = MiniBatch<M>;

    fn next(&mut self) -> Option<MiniBatch<M>> {
        let b = M::BATCH;
        let chunk = self.order.get(self.next..)?.get(..b.min(self.order.len() - self.next))?;
        if chunk.is_empty() {
            return None;
        }
        self.next += chunk.len();
        self.x.fill(M::Storage::ZERO);
        self.y.fill(0);
        let features = &self.data.features;
        for (r, &row) in chunk.iter().enumerate() {
            for f in 0..M::FEATURES {
                // Both buffers are column-major: the batch `x[f * B + r]`.
                // (`f16` storage: rounded to nearest; the range was checked up front.)
                self.x[f * b + r] = M::Storage::from_f32(features[(row, f)]);
            }
            self.y[r] = self.data.labels[row];
        }
        Some(MiniBatch { x: M::Input::from_flat(&self.x), y: M::Labels::from_flat(&self.y), rows: chunk.len() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(M::BATCH);
        (left, Some(left))
    }
}

impl<M: Model> ExactSizeIterator for Batches<'_, M> {}

pub use crate::host::Standardizer;

/// Fitting and applying to a [`Dataset`]: per-feature standardisation `(x - mean) / std`
/// with statistics of a training set (the population standard deviation, as
/// scikit-learn's `StandardScaler`). A constant column gets scale 1, so it becomes all
/// zeros rather than NaN.
impl Standardizer {
    /// Computes every column's mean and standard deviation (in `f64`, two passes).
    ///
    /// # Errors
    /// [`Error::EmptyDataset`] if `train` has no rows.
    pub fn fit(train: &Dataset) -> Result<Standardizer> {
        if train.is_empty() {
            return Err(Error::EmptyDataset { what: "the dataset given to Standardizer::fit".to_string() });
        }
        let n = train.len() as f64;
        let (mut mean, mut scale) = (Vec::new(), Vec::new());
        for column in train.features.column_iter() {
            let m = column.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = column.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / n;
            let constant = column.iter().all(|&v| v == column[0]);
            let std = var.sqrt();
            mean.push(m as f32);
            let usable = !constant && std.is_finite() && std > 0.0;
            scale.push(if usable { std as f32 } else { 1.0 });
        }
        Ok(Standardizer { mean, scale })
    }

    /// The standardised copy of `data`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `data` has another number of features than the set the
    /// statistics came from.
    pub fn apply(&self, data: &Dataset) -> Result<Dataset> {
        if data.n_features() != self.mean.len() {
            return Err(Error::ShapeMismatch {
                what: "features of the dataset to standardise".to_string(),
                expected: format!("{} per row, as in the set the statistics came from", self.mean.len()),
                found: format!("{} per row", data.n_features()),
            });
        }
        let features = DMatrix::from_fn(data.len(), data.n_features(), |r, c| {
            ((f64::from(data.features[(r, c)]) - f64::from(self.mean[c])) / f64::from(self.scale[c])) as f32
        });
        let standardised = Dataset::new(features, data.labels.clone())?;
        Ok(Dataset { source: data.source.clone(), ..standardised })
    }
}
