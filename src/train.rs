//! The training loop on the host: [`Engine::fit`] runs one epoch per entry of a
//! learning-rate list (the seed's "learning-rate list", a plain host slice), shuffling the
//! rows every epoch; [`Engine::fit_schedule`] takes an optimizer and a learning rate per
//! step ([`Schedule`]), and either stops early when [`FitOptions::on_epoch`] returns
//! [`Flow::Stop`] ([`History::stopped`]); [`Engine::evaluate`] measures accuracy, loss and the confusion matrix.
//! Every row of a dataset counts exactly once in each epoch's steps and in every metric: a
//! short last batch is padded and masked (see [`crate::data::Batches`]), never dropped.
//!
//! What training detects: a step whose loss is not finite ([`Error::NonFiniteLoss`]) or
//! whose update would store a non-finite parameter ([`Error::UpdateOverflow`]: beyond
//! `f32`'s range, or `f16`'s ±65504) is refused, and its update skipped. What it does not:
//! a loss that grows epoch after epoch while staying finite is not an error (it is a
//! learning rate too large, or data that needs standardising). Watch
//! [`EpochStats::step_loss`] and [`EpochStats::loss`] (e.g. with [`FitOptions::on_epoch`]),
//! or the losses of [`Engine::take_losses`], and stop or lower the rate yourself.

mod plot;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use nalgebra::DMatrix;

use crate::check;
use crate::cpu::argmax_column_major;
use crate::data::{Dataset, MiniBatch};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{HostTensor, Model, Params};
use crate::rng::Rng;

/// What happened in one epoch of [`Engine::fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// The learning rate of this epoch (with a per-step [`Schedule`], that of its last
    /// step).
    pub learning_rate: f32,
    /// Mean over the epoch's rows of the loss each batch had just before its step.
    pub step_loss: f32,
    /// Mean loss on the whole training set after the epoch.
    pub loss: f32,
    /// Accuracy on the whole training set after the epoch.
    pub accuracy: f64,
    /// Metrics on the validation set after the epoch, if [`FitOptions::validation`] gave one.
    pub validation: Option<Metrics>,
}

/// The per-epoch record [`Engine::fit`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// One entry per epoch, in order.
    pub epochs: Vec<EpochStats>,
    /// Why training ended.
    pub stopped: Stopped,
}

/// Why [`Engine::fit`] ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stopped {
    /// Every epoch asked for ran.
    #[default]
    Completed,
    /// The [`FitOptions::on_epoch`] callback returned [`Flow::Stop`] after this epoch
    /// (1-based): early stopping.
    Early {
        /// The last epoch that ran.
        epoch: usize,
    },
}

/// What an [`FitOptions::on_epoch`] callback tells the loop: go on, or stop after this
/// epoch. A callback returning `()` always goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next epoch.
    Continue,
    /// Stop now; [`History::stopped`] records it.
    Stop,
}

/// What an [`FitOptions::on_epoch`] callback may return: `()` (go on) or a [`Flow`].
pub trait IntoFlow {
    /// The decision.
    fn into_flow(self) -> Flow;
}

impl IntoFlow for () {
    fn into_flow(self) -> Flow {
        Flow::Continue
    }
}

impl IntoFlow for Flow {
    fn into_flow(self) -> Flow {
        self
    }
}

/// The learning rate of every step of [`Engine::fit_schedule`]: one per epoch, one per
/// step from a list, or from a closure.
pub struct Schedule<'a> {
    rate: Box<dyn FnMut(usize, usize) -> f32 + 'a>,
    /// The steps a list covers (`None`: any number).
    steps: Option<usize>,
}

impl<'a> Schedule<'a> {
    /// The same rate at every step.
    pub fn constant(lr: f32) -> Self {
        Schedule { rate: Box::new(move |_, _| lr), steps: None }
    }

    /// Epoch `e` (0-based) at `rates[e]`: [`Engine::fit`]'s list. Covers `rates.len()`
    /// epochs.
    pub fn per_epoch(rates: &'a [f32]) -> Self {
        Schedule { rate: Box::new(move |_, e| rates.get(e).copied().unwrap_or(f32::NAN)), steps: None }
    }

    /// Step `t` (0-based, counted over the whole run) at `rates[t]`; the run must not take
    /// more steps than the list holds.
    pub fn per_step(rates: &'a [f32]) -> Self {
        Schedule { rate: Box::new(move |t, _| rates.get(t).copied().unwrap_or(f32::NAN)), steps: Some(rates.len()) }
    }

    /// Step `t` (0-based, over the whole run) of epoch `e` (0-based) at `f(t, e)`: warm-up,
    /// decay, cosine, ... Each rate is checked before its step.
    pub fn from_fn(f: impl FnMut(usize, usize) -> f32 + 'a) -> Self {
        Schedule { rate: Box::new(f), steps: None }
    }
}

impl History {
    /// The training loss after each epoch.
    pub fn losses(&self) -> Vec<f32> {
        self.epochs.iter().map(|e| e.loss).collect()
    }

    /// The training accuracy after each epoch.
    pub fn accuracies(&self) -> Vec<f64> {
        self.epochs.iter().map(|e| e.accuracy).collect()
    }

    /// The last epoch, if any ran.
    pub fn last(&self) -> Option<&EpochStats> {
        self.epochs.last()
    }

    /// Writes the loss and accuracy curves (and the validation accuracy, if recorded) as a
    /// self-contained SVG image, replacing any file at `path` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn write_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        let svg = plot::render(self);
        crate::fsutil::write_atomically(path.as_ref(), |f| std::io::Write::write_all(f, svg.as_bytes()))
    }
}

/// Accuracy, loss and confusion matrix of a model on a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Fraction of rows whose predicted class (argmax of the logits) is the label.
    pub accuracy: f64,
    /// Mean softmax cross-entropy over the rows.
    pub loss: f32,
    /// `[classes x classes]`: entry `(t, p)` counts rows of true class `t` predicted as `p`.
    pub confusion: DMatrix<usize>,
    /// Number of rows measured.
    pub rows: usize,
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "accuracy {:.4}, loss {:.4} over {} rows", self.accuracy, self.loss, self.rows)?;
        writeln!(f, "confusion matrix (rows: true class, columns: predicted class):")?;
        let width = self.confusion.iter().max().map_or(1, |m| m.to_string().len()).max(2);
        write!(f, "{:>5}", "")?;
        for p in 0..self.confusion.ncols() {
            write!(f, " {p:>width$}")?;
        }
        for t in 0..self.confusion.nrows() {
            write!(f, "\n{t:>5}")?;
            for p in 0..self.confusion.ncols() {
                write!(f, " {:>width$}", self.confusion[(t, p)])?;
            }
        }
        Ok(())
    }
}

/// Options of [`Engine::fit_with`]. [`FitOptions::new`] (also the `Default`): a progress bar
/// on a terminal, shuffling on, no validation set, no plot, no callback.
pub struct FitOptions<'a> {
    progress: bool,
    shuffle: bool,
    plot: Option<PathBuf>,
    validation: Option<&'a Dataset>,
    on_epoch: Option<EpochCallback<'a>>,
}

/// A per-epoch callback of [`FitOptions::on_epoch`].
type EpochCallback<'a> = Box<dyn FnMut(&EpochStats) -> Flow + 'a>;

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions { progress: true, shuffle: true, plot: None, validation: None, on_epoch: None }
    }
}

impl<'a> FitOptions<'a> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to draw a progress bar on standard error. Even when on, the bar is drawn
    /// only if standard error is a terminal (never in CI logs or pipes).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Whether to shuffle the rows each epoch (on by default). Off, every epoch visits the
    /// rows in dataset order, which makes a run reproducible by hand.
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }

    /// Writes the loss/accuracy curves as an SVG image to `path` when training ends.
    pub fn plot_svg(mut self, path: impl Into<PathBuf>) -> Self {
        self.plot = Some(path.into());
        self
    }

    /// Evaluates on `data` after every epoch (recorded in [`EpochStats::validation`]).
    pub fn validation(mut self, data: &'a Dataset) -> Self {
        self.validation = Some(data);
        self
    }

    /// Calls `f` after every epoch, e.g. to print a line of progress (the progress bar, if
    /// drawn, is cleared while `f` runs, so its output is not garbled). `f` returns `()`,
    /// or a [`Flow`]: [`Flow::Stop`] ends training after this epoch (early stopping; see
    /// [`History::stopped`]).
    pub fn on_epoch<R: IntoFlow>(mut self, mut f: impl FnMut(&EpochStats) -> R + 'a) -> Self {
        self.on_epoch = Some(Box::new(move |stats| f(stats).into_flow()));
        self
    }
}

impl<M: Model> Engine<M> {
    /// Trains on `train` for `learning_rates.len()` epochs, epoch `e` with the model's
    /// optimizer (SGD unless declared otherwise, see [`Engine::set_optimizer`]) at
    /// `learning_rates[e]`, the rows shuffled every epoch from `seed` (the same seed gives
    /// the same run); with the defaults of [`FitOptions`].
    ///
    /// Cost per epoch: one [`Engine::train_step_deferred_rows`] per batch (`ceil(n / BATCH)`
    /// of them, enqueued without waiting for their losses), one [`Engine::take_losses`] at
    /// the end of the epoch, then one evaluation of the training set (see
    /// [`Engine::evaluate`]) to record its loss and accuracy. Losses pending from the
    /// caller's own deferred steps are kept for the caller's next [`Engine::take_losses`].
    ///
    /// # Errors
    /// [`Error::EmptyDataset`]; those of [`Dataset::check_fits`];
    /// [`Error::InvalidLearningRate`] for a negative or non-finite rate (before any step);
    /// [`Error::NonFiniteLoss`] or [`Error::UpdateOverflow`] at the end of an epoch in
    /// which a step diverged or would have overflowed the parameters (that step's update
    /// was skipped, the epoch's later steps were applied).
    pub fn fit(&mut self, train: &Dataset, learning_rates: &[f32], seed: u64) -> Result<History> {
        self.fit_with(train, learning_rates, seed, FitOptions::new())
    }

    /// [`Engine::fit`] with options: progress bar, shuffling, a validation set, a per-epoch
    /// callback, an SVG plot of the curves.
    ///
    /// # Errors
    /// Those of [`Engine::fit`]; [`Error::Io`] if the plot cannot be written: checked
    /// before the first epoch (the plot's directory must exist and take a new file), so a
    /// bad path fails at once instead of after training.
    pub fn fit_with(
        &mut self,
        train: &Dataset,
        learning_rates: &[f32],
        seed: u64,
        options: FitOptions<'_>,
    ) -> Result<History> {
        learning_rates.iter().try_for_each(|&lr| check::learning_rate(lr))?;
        self.fit_loop(train, learning_rates.len(), Schedule::per_epoch(learning_rates), seed, options)
    }

    /// Trains on `train` for `epochs` epochs with `optimizer` (which stays set, see
    /// [`Engine::set_optimizer`]; its state carries on from any earlier training), each
    /// step at the learning rate `schedule` gives it, the rows shuffled every epoch from
    /// `seed`. Otherwise as [`Engine::fit_with`].
    ///
    /// ```
    /// # use tensorbridge::{data::Dataset, train::{FitOptions, Flow, Schedule}, optim::Adam, Device};
    /// # tensorbridge::model! { pub struct Iris { batch: 16, features: 4, hidden: [16], classes: 3, optimizer: adam } }
    /// # fn main() -> tensorbridge::Result<()> {
    /// # let data = Dataset::from_npy("data/iris_features.npy", "data/iris_labels.npy")?;
    /// let mut model = Iris::new(&Device::cpu())?;
    /// let warm_up = Schedule::from_fn(|step, _epoch| 0.01 * (step as f32 / 50.0).min(1.0));
    /// let mut best = f32::INFINITY;
    /// let stop_when_flat = FitOptions::new().on_epoch(move |e| {
    ///     let flat = e.loss > best - 1e-3;
    ///     best = best.min(e.loss);
    ///     if flat { Flow::Stop } else { Flow::Continue }
    /// });
    /// let history = model.fit_schedule(&data, Adam::default(), 200, warm_up, 1, stop_when_flat)?;
    /// println!("{:?} after {} epochs", history.stopped, history.epochs.len());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// Those of [`Engine::fit`]; [`Error::InvalidHyperparameter`] for `optimizer` (before
    /// any step); [`Error::ScheduleTooShort`] for a per-step list shorter than the run
    /// (before any step); [`Error::InvalidLearningRate`] for a negative or non-finite rate
    /// (before that step; the steps before it stay applied).
    pub fn fit_schedule(
        &mut self,
        train: &Dataset,
        optimizer: M::Optimizer,
        epochs: usize,
        schedule: Schedule<'_>,
        seed: u64,
        options: FitOptions<'_>,
    ) -> Result<History> {
        if let Some(len) = schedule.steps {
            let needed = train.len().div_ceil(M::BATCH) * epochs;
            if len < needed {
                return Err(Error::ScheduleTooShort { rates: len, steps: needed });
            }
        }
        self.set_optimizer(optimizer)?;
        self.fit_loop(train, epochs, schedule, seed, options)
    }

    /// The loop of [`Engine::fit_with`] and [`Engine::fit_schedule`].
    fn fit_loop(
        &mut self,
        train: &Dataset,
        epochs: usize,
        mut schedule: Schedule<'_>,
        seed: u64,
        mut options: FitOptions<'_>,
    ) -> Result<History> {
        if train.is_empty() {
            return Err(Error::EmptyDataset { what: "the training set".to_string() });
        }
        train.check_fits::<M>("the training set")?;
        if let Some(v) = options.validation {
            v.check_fits::<M>("the validation set")?;
        }
        if let Some(path) = &options.plot {
            crate::fsutil::check_writable(path)?;
        }
        self.hold_losses()?;
        let steps_per_epoch = train.len().div_ceil(M::BATCH);
        let bar = progress_bar((steps_per_epoch * epochs) as u64, options.progress);
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut history = History::default();
        let mut step = 0;
        for e in 0..epochs {
            if options.shuffle {
                rng.shuffle(&mut order);
            }
            // The steps are enqueued without waiting for their losses (on OpenCL, no
            // device -> host round trip per step); the epoch's losses come back at its end.
            let mut rows = Vec::with_capacity(steps_per_epoch);
            let mut lr = 0.0;
            for batch in train.batches_in_order::<M>(order.clone())? {
                lr = (schedule.rate)(step, e);
                self.train_step_deferred_rows(&batch.x, &batch.y, batch.rows, lr)?;
                rows.push(batch.rows);
                step += 1;
                bar.inc(1);
            }
            let losses = self.take_own_losses()?;
            let loss_sum: f64 = losses.iter().zip(&rows).map(|(&l, &r)| f64::from(l) * r as f64).sum();
            let after = self.evaluate(train)?;
            let validation = options.validation.map(|v| self.evaluate(v)).transpose()?;
            let stats = EpochStats {
                epoch: e + 1,
                learning_rate: lr,
                step_loss: (loss_sum / train.len() as f64) as f32,
                loss: after.loss,
                accuracy: after.accuracy,
                validation,
            };
            bar.set_message(format!("epoch {} loss {:.4} accuracy {:.4}", e + 1, stats.loss, stats.accuracy));
            let flow = match options.on_epoch.as_mut() {
                Some(f) => bar.suspend(|| f(&stats)),
                None => Flow::Continue,
            };
            history.epochs.push(stats);
            if flow == Flow::Stop {
                history.stopped = Stopped::Early { epoch: e + 1 };
                break;
            }
        }
        bar.finish_and_clear();
        if let Some(path) = &options.plot {
            history.write_svg(path)?;
        }
        Ok(history)
    }

    /// Accuracy, mean loss and confusion matrix over every row of `data` (the last batch
    /// padded and masked). Cost: one forward pass and one logits read per batch; the loss
    /// is computed from those logits on the host, in f64. The parameters are not changed.
    ///
    /// # Errors
    /// [`Error::EmptyDataset`]; those of [`Dataset::check_fits`]; [`Error::NonFinite`] if
    /// the logits overflow.
    pub fn evaluate(&self, data: &Dataset) -> Result<Metrics> {
        if data.is_empty() {
            return Err(Error::EmptyDataset { what: "the dataset to evaluate".to_string() });
        }
        let classes = M::CLASSES;
        let mut confusion = DMatrix::<usize>::zeros(classes, classes);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for batch in data.batches::<M>()? {
            let (predicted, batch_loss) = self.batch_outcome(&batch)?;
            let labels = batch.y.as_flat();
            for (r, &p) in predicted.iter().enumerate() {
                let t = labels[r] as usize;
                confusion[(t, p as usize)] += 1;
                correct += usize::from(t == p as usize);
            }
            loss_sum += batch_loss;
        }
        let n = data.len();
        Ok(Metrics { accuracy: correct as f64 / n as f64, loss: (loss_sum / n as f64) as f32, confusion, rows: n })
    }

    /// The logits of every row of `data`, `[len x CLASSES]` (for example to save with
    /// [`crate::npy::write_matrix`]).
    ///
    /// # Errors
    /// Those of [`Dataset::check_fits`] and of the forward pass.
    pub fn logits_of(&self, data: &Dataset) -> Result<DMatrix<f32>> {
        let mut out = DMatrix::zeros(data.len(), M::CLASSES);
        let mut start = 0;
        for batch in data.batches::<M>()? {
            let logits = self.logits(&batch.x)?;
            let flat = logits.as_flat();
            for r in 0..batch.rows {
                for c in 0..M::CLASSES {
                    out[(start + r, c)] = flat[c * M::BATCH + r];
                }
            }
            start += batch.rows;
        }
        Ok(out)
    }

    /// The mean loss over every row of `data` and its gradient with respect to every
    /// parameter: each batch's `gradients_rows` weighted by its share of the rows, so the
    /// result is exactly that of one batch holding all rows. Changes nothing.
    ///
    /// # Errors
    /// [`Error::EmptyDataset`]; those of [`Dataset::batches`] and [`Engine::gradients`].
    pub fn dataset_gradients(&self, data: &Dataset) -> Result<(f32, M::Grads)> {
        if data.is_empty() {
            return Err(Error::EmptyDataset { what: "the dataset to differentiate on".to_string() });
        }
        let n = data.len() as f64;
        let mut total = vec![0.0f64; M::Params::LEN];
        let mut flat = vec![0.0f32; M::Params::LEN];
        let mut loss = 0.0f64;
        for batch in data.batches::<M>()? {
            let (l, g) = self.gradients_rows(&batch.x, &batch.y, batch.rows)?;
            let share = batch.rows as f64 / n;
            loss += f64::from(l) * share;
            g.write_flat(&mut flat);
            for (t, &v) in total.iter_mut().zip(&flat) {
                *t += f64::from(v) * share;
            }
        }
        let out: Vec<f32> = total.iter().map(|&v| v as f32).collect();
        Ok((loss as f32, M::Grads::from_flat(&out)))
    }

    /// The predicted class of each valid row of a batch and the sum of their softmax
    /// cross-entropies, from one forward pass: the logits come back once and the loss is
    /// computed from them on the host, in f64 (stable log-sum-exp).
    fn batch_outcome(&self, batch: &MiniBatch<M>) -> Result<(Vec<u32>, f64)> {
        let logits = self.logits(&batch.x)?;
        let z = logits.as_flat();
        check::finite("logits", z, M::BATCH)?;
        let labels = batch.y.as_flat();
        let mut predicted = Vec::with_capacity(batch.rows);
        let mut loss = 0.0f64;
        for (r, &label) in labels.iter().enumerate().take(batch.rows) {
            let at = |c: usize| f64::from(z[c * M::BATCH + r]);
            let best = argmax_column_major(z, M::BATCH, M::CLASSES, r);
            let max = at(best);
            let sum: f64 = (0..M::CLASSES).map(|c| (at(c) - max).exp()).sum();
            loss += (max - at(label as usize)) + sum.ln();
            predicted.push(best as u32);
        }
        Ok((predicted, loss))
    }
}

/// A progress bar on standard error when asked for and it is a terminal; hidden otherwise.
fn progress_bar(steps: u64, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(steps).with_style(style)
}
