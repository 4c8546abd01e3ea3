//! The round driver over partitions held in memory: what a Ballista job per
//! epoch does across executors, run in one process (tests, and the shape the
//! SQL layer's driver follows).

use kiln_kernels::Backend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Targets};
use crate::metrics::{self, Metrics};
use crate::model::{Model, Task};
use crate::options::{ModelType, Solver, TrainOptions};
use crate::train::{combine, split_held_out, train_round, NormalStats};
use crate::{MlError, Result};

/// One epoch's numbers, for progress lines and the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    #[serde(deserialize_with = "crate::serde_nan::f64")]
    pub train_loss: f64,
    pub validation: Option<Metrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
    pub rows_seen: u64,
    pub stopped_early: bool,
}

/// Trains `model_type` over `partitions` (each a list of batches), starting
/// from `warm` when given. `classes` is the number of label classes for
/// classifiers. Calls `on_epoch` after each epoch.
pub fn fit(
    model_type: ModelType,
    options: &TrainOptions,
    partitions: &[Vec<Batch>],
    classes: Option<usize>,
    backend: &dyn Backend,
    warm: Option<Model>,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<(Model, History)> {
    let first = partitions
        .iter()
        .flatten()
        .find(|b| b.rows() > 0)
        .ok_or_else(|| MlError::InvalidData("the training query returned no rows".into()))?;
    let dims = first.dims;
    let mut model = match warm {
        Some(m) => m,
        None => Model::new(model_type, dims, classes, options)?,
    };
    let mut history = History::default();
    let validation: Vec<Batch> = partitions
        .iter()
        .enumerate()
        .flat_map(|(p, batches)| {
            let mut offset = 0u64;
            batches.iter().map(move |b| {
                let start = offset;
                offset += b.rows() as u64;
                split_held_out(options, p as u64, start, b.clone()).1
            })
        })
        .filter(|b| b.rows() > 0)
        .collect();

    if options.solver == Solver::Normal {
        let mut total = NormalStats::new(dims);
        for (p, batches) in partitions.iter().enumerate() {
            let mut stats = NormalStats::new(dims);
            let mut offset = 0u64;
            for b in batches {
                let start = offset;
                offset += b.rows() as u64;
                stats.add(&split_held_out(options, p as u64, start, b.clone()).0)?;
            }
            total.merge(&stats);
        }
        let w = total.solve(options.l2 as f64 * total.rows as f64)?;
        model.set_params(w.iter().map(|v| *v as f32).collect());
        history.rows_seen = total.rows;
        let record = EpochRecord {
            epoch: 1,
            train_loss: total.mean_squared_error(&w),
            validation: evaluate_all(&model, backend, &validation)?,
        };
        on_epoch(&record);
        history.epochs.push(record);
        return Ok((model, history));
    }

    if let Task::Clustering { k } = model.task {
        if model.centroids.is_empty() {
            let sample = partitions
                .iter()
                .flatten()
                .flat_map(|b| b.features.chunks(dims))
                .take(100_000);
            model.centroids = initial_centroids(sample, k, options.seed)?;
        }
    }

    let mut best: Option<(f64, Vec<f32>)> = None;
    let mut since_best = 0;
    for epoch in 1..=options.epochs {
        let updates = partitions
            .iter()
            .enumerate()
            .map(|(p, batches)| {
                train_round(
                    &model,
                    options,
                    backend,
                    batches.iter().cloned().map(Ok),
                    epoch as u64,
                    p as u64,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: u64 = updates.iter().map(|u| u.rows).sum();
        let loss: f64 = updates.iter().map(|u| u.loss_sum).sum::<f64>() / rows.max(1) as f64;
        let previous = model.params().to_vec();
        model.set_params(combine(&model, &updates)?);
        history.rows_seen += rows;
        let record = EpochRecord {
            epoch,
            train_loss: loss,
            validation: evaluate_all(&model, backend, &validation)?,
        };
        on_epoch(&record);
        let monitored = record
            .validation
            .as_ref()
            .and_then(|m| m.get("log_loss").or(m.get("mse")).or(m.get("inertia")));
        history.epochs.push(record);
        if matches!(model.task, Task::Clustering { .. }) && previous == model.params() {
            break;
        }
        if let (Some(patience), Some(value)) = (options.early_stopping_patience, monitored) {
            if best.as_ref().is_none_or(|(b, _)| value < *b) {
                best = Some((value, model.params().to_vec()));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= patience {
                    history.stopped_early = true;
                    break;
                }
            }
        }
    }
    if let (true, Some((_, params))) = (history.stopped_early, best) {
        model.set_params(params);
    }
    Ok((model, history))
}

/// kmeans starting centroids: the first `k` distinct rows of `sample` in a
/// seeded random order.
pub fn initial_centroids<'a>(
    sample: impl IntoIterator<Item = &'a [f32]>,
    k: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let sample: Vec<&[f32]> = sample.into_iter().collect();
    let mut distinct: Vec<&[f32]> = Vec::new();
    let mut order: Vec<usize> = (0..sample.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    for i in order {
        if !distinct.contains(&sample[i]) {
            distinct.push(sample[i]);
            if distinct.len() == k {
                break;
            }
        }
    }
    if distinct.len() < k {
        return Err(MlError::InvalidData(format!(
            "kmeans with k = {k} needs at least {k} distinct rows, found {}",
            distinct.len()
        )));
    }
    Ok(distinct.concat())
}

fn evaluate_all(
    model: &Model,
    backend: &dyn Backend,
    batches: &[Batch],
) -> Result<Option<Metrics>> {
    if batches.is_empty() {
        return Ok(None);
    }
    let dims = batches[0].dims;
    let mut all = Batch {
        features: vec![],
        dims,
        targets: batches[0].targets.clone(),
    };
    all.targets = match &batches[0].targets {
        Targets::None => Targets::None,
        Targets::Values(_) => Targets::Values(vec![]),
        Targets::Classes(_) => Targets::Classes(vec![]),
    };
    for b in batches {
        all.features.extend_from_slice(&b.features);
        match (&mut all.targets, &b.targets) {
            (Targets::Values(a), Targets::Values(v)) => a.extend_from_slice(v),
            (Targets::Classes(a), Targets::Classes(v)) => a.extend_from_slice(v),
            _ => {}
        }
    }
    evaluate(model, backend, &all).map(Some)
}

/// Sum of per-row loss and number of correct predictions (classifiers) of
/// `model` on `batch`: log loss for classifiers, squared error for
/// regression, squared distance for kmeans.
pub fn score(model: &Model, backend: &dyn Backend, batch: &Batch) -> Result<(f64, u64)> {
    let predictions = model.predict(backend, batch)?;
    let eps = 1e-15f64;
    Ok(match (&model.task, &batch.targets) {
        (Task::Regression, Targets::Values(y)) => {
            let se = predictions
                .values
                .iter()
                .zip(y)
                .map(|(p, t)| ((p - t) as f64).powi(2))
                .sum();
            (se, 0)
        }
        (
            Task::BinaryClassification | Task::MulticlassClassification { .. },
            Targets::Classes(y),
        ) => {
            let probabilities = predictions.probabilities.as_deref().unwrap_or(&[]);
            let classes = probabilities.len() / y.len().max(1);
            let mut loss = 0.0;
            let mut correct = 0;
            for (i, (&label, predicted)) in y.iter().zip(&predictions.values).enumerate() {
                let p = if classes == 1 {
                    let p1 = probabilities[i] as f64;
                    if label == 1 {
                        p1
                    } else {
                        1.0 - p1
                    }
                } else {
                    probabilities[i * classes + label as usize] as f64
                };
                loss -= p.clamp(eps, 1.0).ln();
                correct += u64::from(*predicted as u32 == label);
            }
            (loss, correct)
        }
        (Task::Clustering { k }, _) => {
            let inertia = batch
                .features
                .chunks(batch.dims)
                .map(|row| crate::model::nearest_centroid(&model.centroids, *k, row).1 as f64)
                .sum();
            (inertia, 0)
        }
        _ => {
            return Err(MlError::InvalidData(
                "the labels do not match the model's task".into(),
            ))
        }
    })
}

/// The task's metrics of `model` on `batch`.
pub fn evaluate(model: &Model, backend: &dyn Backend, batch: &Batch) -> Result<Metrics> {
    let predictions = model.predict(backend, batch)?;
    Ok(match (&model.task, &batch.targets) {
        (Task::Regression, Targets::Values(y)) => metrics::regression(&predictions.values, y),
        (Task::BinaryClassification, Targets::Classes(y)) => {
            let predicted: Vec<u32> = predictions.values.iter().map(|v| *v as u32).collect();
            metrics::classification(
                &predicted,
                y,
                predictions.probabilities.as_deref().unwrap_or(&[]),
                2,
            )
        }
        (Task::MulticlassClassification { classes }, Targets::Classes(y)) => {
            let predicted: Vec<u32> = predictions.values.iter().map(|v| *v as u32).collect();
            metrics::classification(
                &predicted,
                y,
                predictions.probabilities.as_deref().unwrap_or(&[]),
                *classes,
            )
        }
        (Task::Clustering { k }, _) => {
            metrics::clustering(&batch.features, batch.dims, &model.centroids, *k)
        }
        _ => {
            return Err(MlError::InvalidData(
                "the evaluation labels do not match the model's task".into(),
            ))
        }
    })
}
