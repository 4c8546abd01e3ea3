//! Training over partitions held in memory ([`fit()`]: the [`Driver`] of
//! `TRAIN MODEL`, its rounds run in this process), and scoring a model on a
//! batch ([`score`], [`evaluate`]).

use kiln_kernels::Backend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Targets};
use crate::driver::{Driver, PartitionRound};
use crate::metrics::{self, Metrics};
use crate::model::{Model, Task};
use crate::options::{ModelType, TrainOptions};
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

/// Trains `model_type` over `partitions` (each a list of batches, as one
/// Ballista partition would stream them), starting from `warm` when given.
/// `classes` is the number of label classes for classifiers. Runs the same
/// [`Driver`] as `TRAIN MODEL`, each round over the partitions in memory;
/// calls `on_epoch` once per epoch, when its record is final.
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
    let mut driver = match warm {
        Some(m) => Driver::resume(m, options.clone()),
        None => Driver::new(
            Model::new(model_type, dims, classes, options)?,
            options.clone(),
        ),
    };
    let options = &driver.options().clone();
    driver.seed_centroids(
        partitions
            .iter()
            .flatten()
            .flat_map(|b| b.features.chunks(dims)),
    )?;
    while let Some(round) = driver.next_round() {
        let results = partitions
            .iter()
            .map(|batches| {
                let mut partition = PartitionRound::new(&round, options);
                for batch in batches {
                    partition.feed(backend, batch.clone())?;
                }
                Ok(partition.finish())
            })
            .collect::<Result<Vec<_>>>()?;
        for record in driver.absorb(results)? {
            on_epoch(&record);
        }
    }
    Ok(driver.finish())
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
