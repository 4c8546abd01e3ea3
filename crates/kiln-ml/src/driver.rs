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
use crate::metrics::Metrics;
use crate::model::{Model, Task};
use crate::options::{Solver, TrainOptions};
use crate::train::{combine, split_held_out, NormalStats, RoundTrainer, RoundUpdate};
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
    Normal { stats: NormalStats, offset: u64 },
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
            RoundKind::NormalEquations => Work::Normal {
                stats: NormalStats::new(self.round.model.dims),
                offset: 0,
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
            Work::Normal { stats, offset } => {
                let start = *offset;
                *offset += batch.rows() as u64;
                stats.add(&split_held_out(self.options, shard, start, batch).0)
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
            Work::Normal { stats, .. } => PartitionOutcome::Normal(stats),
        };
        PartitionResult { shard, outcome }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Nothing ran yet.
    Start,
    /// The next training epoch to run.
    Epoch(usize),
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
    phase: Phase,
    awaiting: Option<Round>,
    epochs: Vec<EpochRecord>,
    rows_seen: u64,
    best: Option<(f64, Vec<f32>)>,
    since_best: usize,
    stopped_early: bool,
}

impl Driver {
    /// A run starting from `model` (fresh, or the previous version for warm_start).
    pub fn new(model: Model, options: TrainOptions) -> Self {
        Self {
            model,
            options,
            phase: Phase::Start,
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
        if self.phase == Phase::Start {
            if self.options.solver == Solver::Normal {
                self.awaiting = Some(Round::new(RoundKind::NormalEquations, 1, &self.model));
                return self.awaiting.clone();
            }
            self.phase = Phase::Epoch(1);
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
            RoundKind::NormalEquations => {
                let mut total = NormalStats::new(self.model.dims);
                for result in &results {
                    if let PartitionOutcome::Normal(stats) = &result.outcome {
                        total.merge(stats);
                    }
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
            PartitionOutcome::Normal(_) => None,
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
        assert_eq!(kinds, [Train, Train, Train, Validate]);
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
        assert_eq!(kinds, [RoundKind::Train, RoundKind::Train]);
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
        let mse = history.epochs[0]
            .validation
            .as_ref()
            .unwrap()
            .get("mse")
            .unwrap();
        assert!(mse < 1e-8, "{mse}");
    }

    #[test]
    fn absorbing_without_a_round_is_an_error() {
        let options = TrainOptions::default();
        let model = Model::new(ModelType::LinearRegression, 1, None, &options).unwrap();
        assert!(Driver::new(model, options).absorb(vec![]).is_err());
    }
}
