//! The one training driver. [`Driver`] owns the policy of a training run —
//! which round comes next, how partition results combine, when validation is
//! scored, early stopping, kmeans convergence — and the caller owns the side
//! effect of running a round over the partitions: [`crate::fit()`] runs them
//! in memory, the SQL layer runs each as a Ballista job whose partitions each
//! feed a [`PartitionRound`].
//!
//! ```text
//! Driver::next_round ─▶ Round ─▶ every partition: PartitionRound::feed… finish ─▶ PartitionResult
//!        ▲                                                                              │
//!        └────────────── Driver::absorb (combine, validation, early stop) ◀────────────┘
//! ```
//! Held-out rows are scored inside the training rounds with each round's
//! starting parameters, so epoch `e`'s validation arrives with round `e + 1`;
//! the last epoch is scored by one extra validation round.

use kiln_kernels::Backend;
use serde::{Deserialize, Serialize};

use crate::data::Batch;
use crate::fit::{initial_centroids, EpochRecord, History};
use crate::lbfgs::{Lbfgs, Progress, Stop};
use crate::metrics::Metrics;
use crate::model::{Model, Task};
use crate::options::{OptimizerKind, Solver, TrainOptions, NORMAL_MAX_DIMS};
use crate::standardize::Moments;
use crate::train::{combine, split_held_out, GradientSums, NormalStats, RoundTrainer, RoundUpdate};
use crate::{MlError, Result};

/// How many leading rows of the training data kmeans draws its starting centroids from.
pub const CENTROID_SAMPLE_ROWS: usize = 10_000;

/// What a round asks every partition to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundKind {
    /// Local mini-batch steps (or kmeans assignment sums) from the round's
    /// parameters, scoring the held-out rows with them on the way.
    Train,
    /// Sums of XᵀX and Xᵀy over the training rows, for the exact least-squares solver.
    NormalEquations,
    /// Feature (and regression label) means and variances over the training
    /// rows, for standardization.
    Moments,
    /// The training loss and its gradient summed over the training rows at
    /// the round's parameters (an L-BFGS evaluation).
    Gradient,
    /// Only score the held-out rows with the round's parameters.
    Validate,
}

/// One round: what to do and the model to start from. Shipped to every partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub kind: RoundKind,
    /// The epoch of a training round (1-based); seeds the partitions' shuffles.
    pub number: u64,
    pub model: Model,
    /// The model's parameters (kmeans centroids are not part of `model`'s serialization).
    pub params: Vec<f32>,
}

impl Round {
    fn new(kind: RoundKind, number: u64, model: &Model) -> Self {
        Self {
            kind,
            number,
            model: model.clone(),
            params: model.params().to_vec(),
        }
    }

    /// The model the round starts from, parameters included.
    pub fn start_model(&self) -> Model {
        let mut model = self.model.clone();
        model.set_params(self.params.clone());
        model
    }
}

/// What one partition computed in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionOutcome {
    Update(RoundUpdate),
    Normal(NormalStats),
    Moments(Moments),
    Gradient(GradientSums),
}

/// One partition's result, keyed by its shard key ([`Batch::shard_key`] of
/// its first batch): the driver combines results in key order, so the same
/// data gives the same model however the partitions were scheduled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionResult {
    pub shard: u64,
    pub outcome: PartitionOutcome,
}

/// A round on one partition, fed one batch at a time (a stream of record
/// batches trains without being collected). The partition's identity for
/// the held-out split and the shuffles is the shard key of its first batch.
pub struct PartitionRound<'a> {
    round: &'a Round,
    options: &'a TrainOptions,
    shard: Option<u64>,
    work: Option<Work<'a>>,
}

enum Work<'a> {
    Trainer(Box<RoundTrainer<'a>>),
    /// Sums over the training rows; `offset` is the partition's row count so
    /// far (for the held-out split).
    Sums {
        sums: PartitionOutcome,
        offset: u64,
        model: Option<Box<Model>>,
    },
}

impl<'a> PartitionRound<'a> {
    pub fn new(round: &'a Round, options: &'a TrainOptions) -> Self {
        Self {
            round,
            options,
            shard: None,
            work: None,
        }
    }

    fn start(&self, shard: u64) -> Work<'a> {
        match self.round.kind {
            RoundKind::NormalEquations => Work::Sums {
                sums: PartitionOutcome::Normal(NormalStats::new(self.round.model.dims)),
                offset: 0,
                model: None,
            },
            RoundKind::Moments => Work::Sums {
                sums: PartitionOutcome::Moments(Moments::new(self.round.model.dims)),
                offset: 0,
                model: None,
            },
            RoundKind::Gradient => Work::Sums {
                sums: PartitionOutcome::Gradient(GradientSums::new(self.round.params.len())),
                offset: 0,
                model: Some(Box::new(self.round.start_model())),
            },
            RoundKind::Train | RoundKind::Validate => Work::Trainer(Box::new(RoundTrainer::new(
                self.round.start_model(),
                self.options,
                self.round.number,
                shard,
            ))),
        }
    }

    pub fn feed(&mut self, backend: &dyn Backend, batch: Batch) -> Result<()> {
        if self.work.is_none() {
            let shard = batch.shard_key();
            self.shard = Some(shard);
            self.work = Some(self.start(shard));
        }
        let shard = self.shard.unwrap_or_default();
        match self.work.as_mut().expect("started above") {
            Work::Trainer(trainer) if self.round.kind == RoundKind::Validate => {
                trainer.score_held_out(backend, batch)
            }
            Work::Trainer(trainer) => trainer.feed(backend, batch),
            Work::Sums {
                sums,
                offset,
                model,
            } => {
                let start = *offset;
                *offset += batch.rows() as u64;
                let train = split_held_out(self.options, shard, start, batch).0;
                match sums {
                    PartitionOutcome::Normal(stats) => stats.add(&train),
                    PartitionOutcome::Moments(moments) => {
                        moments.add(&train);
                        Ok(())
                    }
                    PartitionOutcome::Gradient(gradient) => {
                        let model = model.as_deref().expect("gradient rounds carry their model");
                        gradient.add(model, backend, train)
                    }
                    PartitionOutcome::Update(_) => unreachable!("trainers are not sums"),
                }
            }
        }
    }

    pub fn finish(self) -> PartitionResult {
        let shard = self.shard.unwrap_or_default();
        let work = match self.work {
            Some(work) => work,
            None => self.start(shard),
        };
        let outcome = match work {
            Work::Trainer(trainer) => PartitionOutcome::Update(trainer.finish()),
            Work::Sums { sums, .. } => sums,
        };
        PartitionResult { shard, outcome }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Nothing ran yet.
    Start,
    /// The standardization's moments are being fitted.
    Moments,
    /// The next training epoch to run.
    Epoch(usize),
    /// L-BFGS iterations.
    Lbfgs,
    /// Training is over; the last epoch may still need its validation.
    FinalValidation,
    Done,
}

/// Drives one training run: ask it for the [`next_round`](Driver::next_round),
/// run that round over every partition, hand the results to
/// [`absorb`](Driver::absorb), until there is no next round; then
/// [`finish`](Driver::finish).
pub struct Driver {
    model: Model,
    options: TrainOptions,
    lbfgs: Option<Lbfgs>,
    /// Which parameters are weights (penalized by l1 / l2), not biases; set
    /// when L-BFGS starts.
    weights: Vec<bool>,
    phase: Phase,
    awaiting: Option<Round>,
    epochs: Vec<EpochRecord>,
    rows_seen: u64,
    best: Option<(f64, Vec<f32>)>,
    since_best: usize,
    stopped_early: bool,
}

impl Driver {
    /// A run starting from a fresh `model`: with `standardize`, its
    /// standardization is fitted on the training rows first.
    pub fn new(model: Model, options: TrainOptions) -> Self {
        Self::start(model, options, false)
    }

    /// A run continuing from a trained `model` (warm_start): it keeps the
    /// model's standardization, so its parameters keep their meaning.
    pub fn resume(model: Model, options: TrainOptions) -> Self {
        Self::start(model, options, true)
    }

    fn start(model: Model, mut options: TrainOptions, warm: bool) -> Self {
        if options.solver == Solver::Auto {
            options.solver = if model.dims <= NORMAL_MAX_DIMS {
                Solver::Normal
            } else {
                Solver::Sgd
            };
        }
        let fits_standardization = !warm
            && options.standardize
            && model.network.is_some()
            && options.solver != Solver::Normal;
        let mut model = model;
        if !warm {
            model.standardization = None;
            let linear = model
                .network
                .as_ref()
                .is_some_and(|n| n.layers.len() == 1 && n.conv.is_none());
            if linear
                && options.optimizer == OptimizerKind::Lbfgs
                && options.solver != Solver::Normal
            {
                // Linear models start from zero under L-BFGS, as in Spark and scikit-learn.
                let zeros = vec![0.0; model.params().len()];
                model.set_params(zeros);
            }
        }
        Self {
            phase: if fits_standardization {
                Phase::Moments
            } else {
                Phase::Start
            },
            model,
            options,
            lbfgs: None,
            weights: vec![],
            awaiting: None,
            epochs: vec![],
            rows_seen: 0,
            best: None,
            since_best: 0,
            stopped_early: false,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The options in force (`solver = 'auto'` resolved for the model's width).
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// Whether training steps by L-BFGS (records are iterations, not epochs).
    pub fn uses_lbfgs(&self) -> bool {
        self.options.solver != Solver::Normal
            && self.options.optimizer == OptimizerKind::Lbfgs
            && self.model.network.is_some()
    }

    /// `Some(k)` when the model is a kmeans model without centroids yet: call
    /// [`seed_centroids`](Driver::seed_centroids) before the first round.
    pub fn needs_centroids(&self) -> Option<usize> {
        match self.model.task {
            Task::Clustering { k } if self.model.centroids.is_empty() => Some(k),
            _ => None,
        }
    }

    /// Picks the starting centroids among the first [`CENTROID_SAMPLE_ROWS`] rows given.
    pub fn seed_centroids<'a>(&mut self, rows: impl IntoIterator<Item = &'a [f32]>) -> Result<()> {
        let Some(k) = self.needs_centroids() else {
            return Ok(());
        };
        let sample = rows.into_iter().take(CENTROID_SAMPLE_ROWS);
        let centroids = initial_centroids(sample, k, self.options.seed)?;
        self.model.set_params(centroids);
        Ok(())
    }

    /// The round to run next, or `None` when training is over.
    pub fn next_round(&mut self) -> Option<Round> {
        if let Some(round) = &self.awaiting {
            return Some(round.clone());
        }
        if self.phase == Phase::Moments {
            self.awaiting = Some(Round::new(RoundKind::Moments, 0, &self.model));
            return self.awaiting.clone();
        }
        if self.phase == Phase::Start {
            if self.options.solver == Solver::Normal {
                self.awaiting = Some(Round::new(RoundKind::NormalEquations, 1, &self.model));
                return self.awaiting.clone();
            }
            if self.uses_lbfgs() {
                let start = self.model.params().iter().map(|v| *v as f64).collect();
                self.weights = self.weight_mask();
                self.lbfgs = Some(Lbfgs::with_l1(
                    start,
                    self.options.tol,
                    self.options.max_iterations,
                    self.options.l1 as f64,
                    self.weights.clone(),
                ));
                self.phase = Phase::Lbfgs;
            } else {
                self.phase = Phase::Epoch(1);
            }
        }
        if self.phase == Phase::Lbfgs {
            let lbfgs = self.lbfgs.as_ref().expect("set when the phase began");
            if lbfgs.stopped().is_none() {
                let number = self.epochs.len() as u64 + 1;
                let mut round = Round::new(RoundKind::Gradient, number, &self.model);
                round.params = lbfgs.point().iter().map(|v| *v as f32).collect();
                self.awaiting = Some(round);
                return self.awaiting.clone();
            }
            self.phase = Phase::FinalValidation;
        }
        if let Phase::Epoch(epoch) = self.phase {
            if epoch <= self.options.epochs {
                self.awaiting = Some(Round::new(RoundKind::Train, epoch as u64, &self.model));
                return self.awaiting.clone();
            }
            self.phase = Phase::FinalValidation;
        }
        if self.phase == Phase::FinalValidation {
            let unscored = self.epochs.last().is_some_and(|e| e.validation.is_none());
            if unscored && self.options.validation_fraction > 0.0 {
                let number = self.epochs.len() as u64;
                self.awaiting = Some(Round::new(RoundKind::Validate, number, &self.model));
                return self.awaiting.clone();
            }
            self.phase = Phase::Done;
        }
        None
    }

    /// Takes the partitions' results of the round [`next_round`](Driver::next_round)
    /// gave; returns the epoch records that became final (for progress lines),
    /// each exactly once.
    pub fn absorb(&mut self, mut results: Vec<PartitionResult>) -> Result<Vec<EpochRecord>> {
        let round = self.awaiting.take().ok_or_else(|| {
            MlError::InvalidData("Driver::absorb called without a round in flight".into())
        })?;
        results.sort_by_key(|r| r.shard);
        let mut finished = vec![];
        match round.kind {
            RoundKind::Moments => {
                let mut total = Moments::new(self.model.dims);
                for result in &results {
                    if let PartitionOutcome::Moments(moments) = &result.outcome {
                        total.merge(moments);
                    }
                }
                let mut standardization = total.standardization();
                if self.model.task != Task::Regression {
                    standardization.target = None;
                }
                self.model.standardization = Some(standardization);
                self.phase = Phase::Start;
            }
            RoundKind::Gradient => {
                let mut total = GradientSums::new(self.model.params().len());
                for result in &results {
                    if let PartitionOutcome::Gradient(sums) = &result.outcome {
                        total.merge(sums);
                    }
                }
                let rows = total.rows.max(1) as f64;
                let point: Vec<f32> = round.params.clone();
                let (mut objective, mut gradient) = (
                    total.loss_sum / rows,
                    total
                        .gradient
                        .iter()
                        .map(|g| g / rows)
                        .collect::<Vec<f64>>(),
                );
                // L2 on the weights, not the biases: (l2 / 2)·‖w‖², as the
                // mini-batch optimizers' weight decay.
                let l2 = self.options.l2 as f64;
                if l2 > 0.0 {
                    for ((value, g), _) in point
                        .iter()
                        .zip(gradient.iter_mut())
                        .zip(&self.weights)
                        .filter(|(_, weight)| **weight)
                    {
                        objective += 0.5 * l2 * (*value as f64).powi(2);
                        *g += l2 * *value as f64;
                    }
                }
                let lbfgs = self
                    .lbfgs
                    .as_mut()
                    .expect("gradient rounds run under L-BFGS");
                let progress = lbfgs.tell(objective, gradient);
                let last = lbfgs.stopped().is_some();
                match progress {
                    Progress::Searching => {}
                    Progress::Iterated {
                        iteration,
                        objective,
                    } => {
                        self.rows_seen = total.rows;
                        let factor = self
                            .model
                            .standardization
                            .as_ref()
                            .map_or(1.0, |s| s.squared_error_factor());
                        let record = EpochRecord {
                            epoch: iteration,
                            train_loss: objective * factor,
                            validation: None,
                        };
                        // The last record waits for its validation round.
                        if !(last && self.options.validation_fraction > 0.0) {
                            finished.push(record.clone());
                        }
                        self.epochs.push(record);
                    }
                    Progress::Done(stop) => {
                        if stop == Stop::NoProgress && self.epochs.is_empty() {
                            return Err(MlError::InvalidData(
                                "L-BFGS found no step that lowers the training loss from the \
                                 starting point (the loss or its gradient is not finite there); \
                                 check the features for extreme values"
                                    .into(),
                            ));
                        }
                    }
                }
                let best: Vec<f32> = self
                    .lbfgs
                    .as_ref()
                    .expect("set above")
                    .best()
                    .iter()
                    .map(|v| *v as f32)
                    .collect();
                self.model.set_params(best);
                if last {
                    self.phase = Phase::FinalValidation;
                }
            }
            RoundKind::NormalEquations => {
                let mut total = NormalStats::new(self.model.dims);
                for result in &results {
                    if let PartitionOutcome::Normal(stats) = &result.outcome {
                        total.merge(stats);
                    }
                }
                if self.options.standardize {
                    let (standardization, standardized) = total.standardized();
                    self.model.standardization = Some(standardization);
                    total = standardized;
                }
                let w = total.solve(self.options.l2 as f64 * total.rows as f64)?;
                self.model.set_params(w.iter().map(|v| *v as f32).collect());
                self.rows_seen = total.rows;
                self.epochs.push(EpochRecord {
                    epoch: 1,
                    train_loss: total.mean_squared_error(&w),
                    validation: None,
                });
                self.phase = Phase::FinalValidation;
                if self.options.validation_fraction <= 0.0 {
                    finished.extend(self.epochs.last().cloned());
                }
            }
            RoundKind::Validate => {
                let updates = updates_of(&results);
                let validation = validation_of(&updates, &self.model);
                if let Some(last) = self.epochs.last_mut() {
                    last.validation = validation;
                    finished.push(last.clone());
                }
                self.phase = Phase::Done;
            }
            RoundKind::Train => {
                let updates = updates_of(&results);
                let epoch = round.number as usize;
                let validation = validation_of(&updates, &self.model);
                let scored = self.options.validation_fraction > 0.0;
                if let Some(previous) = self.epochs.last_mut().filter(|_| scored) {
                    previous.validation = validation;
                    let previous = previous.clone();
                    finished.push(previous.clone());
                    if self.early_stop(&previous) {
                        self.stopped_early = true;
                        if let Some((_, params)) = self.best.take() {
                            self.model.set_params(params);
                        }
                        self.phase = Phase::Done;
                        return Ok(finished);
                    }
                }
                let rows: u64 = updates.iter().map(|u| u.rows).sum();
                self.rows_seen += rows;
                let previous_params = self.model.params().to_vec();
                self.model.set_params(combine(&self.model, &updates)?);
                let record = EpochRecord {
                    epoch,
                    train_loss: updates.iter().map(|u| u.loss_sum).sum::<f64>()
                        / rows.max(1) as f64,
                    validation: None,
                };
                if self.options.validation_fraction <= 0.0 {
                    finished.push(record.clone());
                }
                self.epochs.push(record);
                let converged = matches!(self.model.task, Task::Clustering { .. })
                    && previous_params == self.model.params();
                self.phase = if converged || epoch >= self.options.epochs {
                    Phase::FinalValidation
                } else {
                    Phase::Epoch(epoch + 1)
                };
            }
        }
        Ok(finished)
    }

    /// Whether `record` (now scored, made with the current parameters) is the
    /// `patience`-th in a row without a better monitored metric.
    fn early_stop(&mut self, record: &EpochRecord) -> bool {
        let (Some(patience), Some(value)) = (
            self.options.early_stopping_patience,
            record.validation.as_ref().and_then(monitored_metric),
        ) else {
            return false;
        };
        if self.best.as_ref().is_none_or(|(best, _)| value < *best) {
            self.best = Some((value, self.model.params().to_vec()));
            self.since_best = 0;
            false
        } else {
            self.since_best += 1;
            self.since_best >= patience
        }
    }

    /// For each parameter, whether it is a weight (penalized by l1 / l2)
    /// rather than a bias.
    fn weight_mask(&self) -> Vec<bool> {
        let mut mask = vec![true; self.model.params().len()];
        if let Some(network) = &self.model.network {
            let biases = network
                .conv_ranges()
                .into_iter()
                .map(|(_, _, b)| b)
                .chain((0..network.layers.len()).map(|i| network.layer_ranges(i).1));
            for range in biases {
                mask[range].iter_mut().for_each(|m| *m = false);
            }
        }
        mask
    }

    /// Why L-BFGS stopped (`None` for the other optimizers).
    pub fn lbfgs_stop(&self) -> Option<Stop> {
        self.lbfgs.as_ref().and_then(Lbfgs::stopped)
    }

    /// How this run trains and what a record counts, for progress lines and
    /// the statement's summary: e.g. `("lbfgs, converged", "iteration")`.
    pub fn method(&self) -> (String, &'static str) {
        if self.model.network.is_none() {
            return ("Lloyd's algorithm".into(), "epoch");
        }
        if self.options.solver == Solver::Normal {
            return ("normal equations".into(), "epoch");
        }
        if !self.uses_lbfgs() {
            return (self.options.optimizer.name().into(), "epoch");
        }
        let stop = match self.lbfgs_stop() {
            Some(Stop::Converged) => ", converged",
            Some(Stop::MaxIterations) => ", stopped at max_iterations",
            Some(Stop::NoProgress) => ", converged to working precision",
            None => "",
        };
        (format!("lbfgs{stop}"), "iteration")
    }

    /// Whether training stopped because the validation metric stopped improving.
    pub fn stopped_early(&self) -> bool {
        self.stopped_early
    }

    /// The trained model and its history.
    pub fn finish(self) -> (Model, History) {
        let history = History {
            epochs: self.epochs,
            rows_seen: self.rows_seen,
            stopped_early: self.stopped_early,
        };
        (self.model, history)
    }
}

/// The metric early stopping watches: validation log loss, MSE or inertia (lower is better).
pub fn monitored_metric(metrics: &Metrics) -> Option<f64> {
    metrics
        .get("log_loss")
        .or(metrics.get("mse"))
        .or(metrics.get("inertia"))
}

fn updates_of(results: &[PartitionResult]) -> Vec<RoundUpdate> {
    results
        .iter()
        .filter_map(|r| match &r.outcome {
            PartitionOutcome::Update(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

/// The held-out rows' metrics from a round's updates; `None` when none were held out.
fn validation_of(updates: &[RoundUpdate], model: &Model) -> Option<Metrics> {
    let rows: u64 = updates.iter().map(|u| u.validation_rows).sum();
    if rows == 0 {
        return None;
    }
    let loss = updates.iter().map(|u| u.validation_loss_sum).sum::<f64>() / rows as f64;
    let correct: u64 = updates.iter().map(|u| u.validation_correct).sum();
    let values = match model.task {
        Task::Regression => vec![("mse".to_string(), loss), ("rmse".to_string(), loss.sqrt())],
        Task::Clustering { .. } => vec![("inertia".to_string(), loss * rows as f64)],
        _ => vec![
            ("log_loss".to_string(), loss),
            ("accuracy".to_string(), correct as f64 / rows as f64),
        ],
    };
    Some(Metrics {
        values,
        confusion: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Targets;
    use crate::options::ModelType;
    use kiln_kernels::cpu::CpuBackend;

    fn run(options: TrainOptions, batch: Batch) -> (Vec<RoundKind>, Vec<usize>, History) {
        let model = Model::new(ModelType::LinearRegression, 1, None, &options).unwrap();
        let mut driver = Driver::new(model, options.clone());
        let (mut kinds, mut reported) = (vec![], vec![]);
        while let Some(round) = driver.next_round() {
            kinds.push(round.kind);
            let mut partition = PartitionRound::new(&round, &options);
            partition
                .feed(&CpuBackend::default(), batch.clone())
                .unwrap();
            let records = driver.absorb(vec![partition.finish()]).unwrap();
            reported.extend(records.iter().map(|r| r.epoch));
        }
        (kinds, reported, driver.finish().1)
    }

    fn line(rows: usize) -> Batch {
        let x: Vec<f32> = (0..rows).map(|i| i as f32 / rows as f32).collect();
        let y = x.iter().map(|v| 3.0 * v - 1.0).collect();
        Batch {
            features: x,
            dims: 1,
            targets: Targets::Values(y),
        }
    }

    #[test]
    fn each_epoch_is_reported_once_and_the_last_is_validated_by_one_extra_round() {
        let options = TrainOptions {
            epochs: 3,
            validation_fraction: 0.25,
            ..TrainOptions::default()
        };
        let (kinds, reported, history) = run(options, line(200));
        use RoundKind::*;
        // The standardization is fitted by one round first.
        assert_eq!(kinds, [Moments, Train, Train, Train, Validate]);
        assert_eq!(reported, [1, 2, 3]);
        assert!(history.epochs.iter().all(|e| e.validation.is_some()));
    }

    #[test]
    fn without_validation_records_are_final_at_once_and_no_extra_round_runs() {
        let options = TrainOptions {
            epochs: 2,
            validation_fraction: 0.0,
            ..TrainOptions::default()
        };
        let (kinds, reported, history) = run(options, line(50));
        assert_eq!(
            kinds,
            [RoundKind::Moments, RoundKind::Train, RoundKind::Train]
        );
        assert_eq!(reported, [1, 2]);
        assert_eq!(history.rows_seen, 100);
    }

    #[test]
    fn the_normal_equations_solve_once_then_validate() {
        let options = TrainOptions {
            solver: Solver::Normal,
            validation_fraction: 0.2,
            ..TrainOptions::default()
        };
        let (kinds, reported, history) = run(options, line(100));
        assert_eq!(kinds, [RoundKind::NormalEquations, RoundKind::Validate]);
        assert_eq!(reported, [1]);
        assert_final_validation_mse_vanishes(&history);
    }

    /// The line is fitted exactly: the last record's held-out MSE is ~0.
    fn assert_final_validation_mse_vanishes(history: &History) {
        let last = history.epochs.last().expect("a record");
        let mse = last.validation.as_ref().and_then(|v| v.get("mse"));
        assert!(mse.is_some_and(|mse| mse < 1e-8), "{mse:?}");
    }

    #[test]
    fn lbfgs_reports_each_iteration_once_and_validates_the_last() {
        let options = TrainOptions {
            optimizer: crate::options::OptimizerKind::Lbfgs,
            validation_fraction: 0.2,
            ..TrainOptions::default()
        };
        let (kinds, reported, history) = run(options, line(100));
        assert_eq!(kinds[0], RoundKind::Moments);
        assert_eq!(kinds.last(), Some(&RoundKind::Validate));
        assert!(kinds[1..kinds.len() - 1]
            .iter()
            .all(|k| *k == RoundKind::Gradient));
        let iterations: Vec<usize> = (1..=history.epochs.len()).collect();
        assert_eq!(reported, iterations);
        assert_final_validation_mse_vanishes(&history);
    }

    #[test]
    fn absorbing_without_a_round_is_an_error() {
        let options = TrainOptions::default();
        let model = Model::new(ModelType::LinearRegression, 1, None, &options).unwrap();
        assert!(Driver::new(model, options).absorb(vec![]).is_err());
    }
}
