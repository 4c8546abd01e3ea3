//! Training in rounds, as Ballista runs it: each partition streams its rows
//! through a [`RoundTrainer`] (local mini-batch steps from the current
//! parameters) and emits a [`RoundUpdate`]; [`combine`] reduces the updates
//! (row-weighted averaging, i.e. synchronous local SGD / FedAvg; sums for
//! kmeans); the driver publishes the result and starts the next round.
//! `solver = 'normal'` instead sums [`NormalStats`] once and solves exactly.
//!
//! Memory per partition is bounded by one incoming batch plus the model.

use kiln_kernels::{Backend, OptimizerState};
use rand::seq::SliceRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Targets};
use crate::model::{nearest_centroid, Model, Task};
use crate::options::{Augment, TrainOptions};
use crate::standardize::Standardization;
use crate::{MlError, Result};

/// What one partition sends back after a round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundUpdate {
    /// Updated parameters (networks) or per-cluster sums then counts (kmeans).
    pub params: Vec<f32>,
    /// Training rows this partition saw in the round.
    pub rows: u64,
    /// Sum of per-row training loss (kmeans: inertia).
    pub loss_sum: f64,
    /// Held-out rows scored with the round's starting parameters.
    pub validation_rows: u64,
    pub validation_loss_sum: f64,
    /// Correctly classified held-out rows (classifiers).
    pub validation_correct: u64,
}

/// Whether row `index` of `partition` is held out for validation: a pure
/// function of the seed and the row's position, so reruns agree.
pub fn is_validation_row(seed: u64, partition: u64, index: u64, fraction: f32) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let mut x = seed
        ^ partition.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let uniform = (x >> 11) as f64 / (1u64 << 53) as f64;
    uniform < fraction as f64
}

/// Splits a partition's rows `start..start + batch.rows()` into training rows
/// and held-out validation rows (see [`is_validation_row`]).
pub fn split_held_out(
    options: &TrainOptions,
    partition: u64,
    start: u64,
    batch: Batch,
) -> (Batch, Batch) {
    if options.validation_fraction <= 0.0 {
        let none = batch.select(|_| false);
        return (batch, none);
    }
    let held = |r: usize| {
        is_validation_row(
            options.seed,
            partition,
            start + r as u64,
            options.validation_fraction,
        )
    };
    (batch.select(|r| !held(r)), batch.select(held))
}

/// A round on one partition, fed one batch at a time (so a stream of record
/// batches trains without being collected). Held-out validation rows are
/// scored with the round's starting parameters.
pub struct RoundTrainer<'a> {
    start: Model,
    options: &'a TrainOptions,
    partition: u64,
    local: Option<crate::network::Network>,
    state: OptimizerState,
    rng: ChaCha8Rng,
    offset: u64,
    update: RoundUpdate,
    kmeans: Option<usize>,
}

impl<'a> RoundTrainer<'a> {
    pub fn new(model: Model, options: &'a TrainOptions, round: u64, partition: u64) -> Self {
        let local = model.network.clone();
        let params = local.as_ref().map_or(0, |n| n.params.len());
        let kmeans = match model.task {
            Task::Clustering { k } => Some(k),
            _ => None,
        };
        let update_params = match kmeans {
            Some(k) => vec![0.0; k * model.dims + k],
            None => vec![],
        };
        Self {
            start: model,
            options,
            partition,
            local,
            state: OptimizerState::new(params),
            rng: ChaCha8Rng::seed_from_u64(
                options.seed ^ (round << 32) ^ partition.wrapping_mul(0x9E37_79B9),
            ),
            offset: 0,
            update: RoundUpdate {
                params: update_params,
                ..RoundUpdate::default()
            },
            kmeans,
        }
    }

    /// Feeds a batch: steps on its training rows, scores its held-out rows.
    pub fn feed(&mut self, backend: &dyn Backend, batch: Batch) -> Result<()> {
        self.feed_inner(backend, batch, true)
    }

    /// Scores the batch's held-out rows only (a validation pass).
    pub fn score_held_out(&mut self, backend: &dyn Backend, batch: Batch) -> Result<()> {
        self.feed_inner(backend, batch, false)
    }

    fn feed_inner(&mut self, backend: &dyn Backend, batch: Batch, train_rows: bool) -> Result<()> {
        let start = self.offset;
        self.offset += batch.rows() as u64;
        let (train, validation) = split_held_out(self.options, self.partition, start, batch);
        if validation.rows() > 0 {
            let v = validation;
            let (loss, correct) = crate::fit::score(&self.start, backend, &v)?;
            self.update.validation_rows += v.rows() as u64;
            self.update.validation_loss_sum += loss;
            self.update.validation_correct += correct;
        }
        if !train_rows {
            return Ok(());
        }
        if let Some(k) = self.kmeans {
            let d = self.start.dims;
            for row in train.features.chunks(d) {
                let (c, dist) = nearest_centroid(&self.start.centroids, k, row);
                self.update.params[c * d..(c + 1) * d]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(s, v)| *s += v);
                self.update.params[k * d + c] += 1.0;
                self.update.loss_sum += dist as f64;
                self.update.rows += 1;
            }
            return Ok(());
        }
        let mut train = train;
        if let Some(s) = &self.start.standardization {
            s.apply_to_batch(&mut train);
        }
        let loss_factor = self
            .start
            .standardization
            .as_ref()
            .map_or(1.0, |s| s.squared_error_factor());
        let local = self
            .local
            .as_mut()
            .expect("gradient-trained models have a network");
        let optimizer = self.options.optimizer();
        let mut order: Vec<usize> = (0..train.rows()).collect();
        order.shuffle(&mut self.rng);
        for chunk in order.chunks(self.options.batch_size) {
            let mut mini = train.gather(chunk);
            let n = mini.rows();
            if let Some(front) = &local.conv {
                augment(
                    &mut mini.features,
                    front.input,
                    self.options.augment,
                    &mut self.rng,
                );
            }
            let dropout =
                (self.options.dropout > 0.0).then_some((self.options.dropout, &mut self.rng));
            let pass = local.forward(backend, &mini.features, n, dropout)?;
            let mut grad = vec![0.0; pass.logits().len()];
            let loss = self
                .start
                .loss(backend, pass.logits(), &mini.targets, &mut grad)?;
            let grads = local.backward(backend, &mini.features, n, &pass, grad)?;
            backend.optimizer_step(optimizer, &mut local.params, &grads, &mut self.state)?;
            self.update.rows += n as u64;
            self.update.loss_sum += loss as f64 * n as f64 * loss_factor;
        }
        Ok(())
    }

    pub fn finish(mut self) -> RoundUpdate {
        if let Some(local) = self.local.take() {
            self.update.params = local.params;
        }
        self.update
    }
}

/// Randomly flips images horizontally and shifts them by up to one pixel
/// (zero fill), in place, as `augment` asks; `shape` is `[channels, height, width]`.
pub fn augment(images: &mut [f32], shape: [usize; 3], augment: Augment, rng: &mut ChaCha8Rng) {
    if !augment.flip && !augment.shift {
        return;
    }
    let [channels, height, width] = shape;
    let len = channels * height * width;
    if len == 0 {
        return;
    }
    let mut source = vec![0.0f32; len];
    for image in images.chunks_mut(len) {
        let flip = augment.flip && rng.gen::<bool>();
        let (dy, dx) = if augment.shift {
            (rng.gen_range(-1isize..=1), rng.gen_range(-1isize..=1))
        } else {
            (0, 0)
        };
        if !flip && dy == 0 && dx == 0 {
            continue;
        }
        source.copy_from_slice(image);
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let sy = y as isize - dy;
                    let sx = x as isize - dx;
                    let value = if sy < 0 || sx < 0 || sy as usize >= height || sx as usize >= width
                    {
                        0.0
                    } else {
                        let sx = if flip {
                            width - 1 - sx as usize
                        } else {
                            sx as usize
                        };
                        source[(c * height + sy as usize) * width + sx]
                    };
                    image[(c * height + y) * width + x] = value;
                }
            }
        }
    }
}

/// Reduces the partitions' updates into the next parameters. Partitions
/// that saw no rows do not vote; if none did, the parameters are unchanged.
pub fn combine(model: &Model, updates: &[RoundUpdate]) -> Result<Vec<f32>> {
    let total: u64 = updates.iter().map(|u| u.rows).sum();
    if total == 0 {
        return Ok(model.params().to_vec());
    }
    if let Task::Clustering { k } = model.task {
        let d = model.dims;
        let mut sums = vec![0.0f64; k * d + k];
        for u in updates {
            sums.iter_mut()
                .zip(&u.params)
                .for_each(|(s, v)| *s += *v as f64);
        }
        let mut centroids = model.centroids.clone();
        for c in 0..k {
            let count = sums[k * d + c];
            if count > 0.0 {
                for j in 0..d {
                    centroids[c * d + j] = (sums[c * d + j] / count) as f32;
                }
            }
        }
        return Ok(centroids);
    }
    let mut averaged = vec![0.0f64; model.params().len()];
    for u in updates.iter().filter(|u| u.rows > 0) {
        let weight = u.rows as f64 / total as f64;
        averaged
            .iter_mut()
            .zip(&u.params)
            .for_each(|(a, p)| *a += weight * *p as f64);
    }
    Ok(averaged.into_iter().map(|v| v as f32).collect())
}

/// Rows per forward/backward pass when summing a full-batch gradient.
const GRADIENT_CHUNK_ROWS: usize = 4096;

/// The training loss and its gradient summed over a partition's training
/// rows at the round's parameters (for L-BFGS): the network's loss in the
/// standardized units it trains in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientSums {
    pub rows: u64,
    pub loss_sum: f64,
    pub gradient: Vec<f64>,
}

impl GradientSums {
    pub fn new(params: usize) -> Self {
        Self {
            rows: 0,
            loss_sum: 0.0,
            gradient: vec![0.0; params],
        }
    }

    /// Adds the training rows of `batch` (already split from held-out rows).
    pub fn add(&mut self, model: &Model, backend: &dyn Backend, mut batch: Batch) -> Result<()> {
        if let Some(s) = &model.standardization {
            s.apply_to_batch(&mut batch);
        }
        if batch.rows() <= GRADIENT_CHUNK_ROWS {
            return self.add_chunk(model, backend, &batch);
        }
        let rows: Vec<usize> = (0..batch.rows()).collect();
        for chunk in rows.chunks(GRADIENT_CHUNK_ROWS) {
            self.add_chunk(model, backend, &batch.gather(chunk))?;
        }
        Ok(())
    }

    fn add_chunk(&mut self, model: &Model, backend: &dyn Backend, part: &Batch) -> Result<()> {
        let network = model
            .network
            .as_ref()
            .expect("gradient-trained models have a network");
        let n = part.rows();
        let pass = network.forward(backend, &part.features, n, None)?;
        let mut grad = vec![0.0; pass.logits().len()];
        let loss = model.loss(backend, pass.logits(), &part.targets, &mut grad)?;
        let grads = network.backward(backend, &part.features, n, &pass, grad)?;
        self.gradient
            .iter_mut()
            .zip(&grads)
            .for_each(|(s, g)| *s += *g as f64 * n as f64);
        self.loss_sum += loss as f64 * n as f64;
        self.rows += n as u64;
        Ok(())
    }

    pub fn merge(&mut self, other: &GradientSums) {
        self.gradient
            .iter_mut()
            .zip(&other.gradient)
            .for_each(|(a, b)| *a += b);
        self.loss_sum += other.loss_sum;
        self.rows += other.rows;
    }
}

/// Sufficient statistics for exact least squares: `[X 1]ᵀ[X 1]` and `[X 1]ᵀy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalStats {
    pub dims: usize,
    pub xtx: Vec<f64>,
    pub xty: Vec<f64>,
    pub yty: f64,
    pub rows: u64,
}

impl NormalStats {
    pub fn new(dims: usize) -> Self {
        let n = dims + 1;
        Self {
            dims,
            xtx: vec![0.0; n * n],
            xty: vec![0.0; n],
            yty: 0.0,
            rows: 0,
        }
    }

    pub fn add(&mut self, batch: &Batch) -> Result<()> {
        let Targets::Values(y) = &batch.targets else {
            return Err(MlError::InvalidData(
                "solver 'normal' needs a numeric label".into(),
            ));
        };
        let n = self.dims + 1;
        let mut row = vec![1.0f64; n];
        for (r, features) in batch.features.chunks(self.dims).enumerate() {
            row[..self.dims]
                .iter_mut()
                .zip(features)
                .for_each(|(a, b)| *a = *b as f64);
            self.yty += (y[r] as f64).powi(2);
            for i in 0..n {
                let ri = row[i];
                self.xty[i] += ri * y[r] as f64;
                for j in i..n {
                    self.xtx[i * n + j] += ri * row[j];
                }
            }
        }
        self.rows += batch.rows() as u64;
        Ok(())
    }

    pub fn merge(&mut self, other: &NormalStats) {
        self.xtx
            .iter_mut()
            .zip(&other.xtx)
            .for_each(|(a, b)| *a += b);
        self.xty
            .iter_mut()
            .zip(&other.xty)
            .for_each(|(a, b)| *a += b);
        self.yty += other.yty;
        self.rows += other.rows;
    }

    /// Mean squared training error of weights `w` (weights then intercept):
    /// `(yᵀy − 2 wᵀXᵀy + wᵀXᵀXw) / rows`, from the sums alone.
    pub fn mean_squared_error(&self, w: &[f64]) -> f64 {
        let n = self.dims + 1;
        let mut quadratic = 0.0;
        for i in 0..n {
            for j in 0..n {
                let (a, b) = if i <= j { (i, j) } else { (j, i) };
                quadratic += w[i] * self.xtx[a * n + b] * w[j];
            }
        }
        let linear: f64 = w.iter().zip(&self.xty).map(|(a, b)| a * b).sum();
        ((self.yty - 2.0 * linear + quadratic) / self.rows.max(1) as f64).max(0.0)
    }

    /// The feature moments these sums hold (the intercept column's sums are
    /// the feature sums) and the same statistics for the standardized
    /// features `z = (x − mean) / scale`, whose ridge solution is then
    /// scale-free. Constant features get a unit diagonal and no correlation,
    /// so their weight is 0 instead of making the system singular.
    pub fn standardized(&self) -> (Standardization, NormalStats) {
        let (d, n) = (self.dims, self.dims + 1);
        let rows = self.rows.max(1) as f64;
        let at = |i: usize, j: usize| {
            let (a, b) = if i <= j { (i, j) } else { (j, i) };
            self.xtx[a * n + b]
        };
        let mean: Vec<f64> = (0..d).map(|i| at(i, d) / rows).collect();
        let mean_y = self.xty[d] / rows;
        let variance: Vec<f64> = (0..d)
            .map(|i| (at(i, i) / rows - mean[i] * mean[i]).max(0.0))
            .collect();
        let constant: Vec<bool> = (0..d)
            .map(|i| variance[i] <= 1e-12 * (mean[i] * mean[i]).max(f64::MIN_POSITIVE))
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|i| if constant[i] { 1.0 } else { variance[i].sqrt() })
            .collect();
        let mut z = NormalStats::new(d);
        for i in 0..d {
            for j in i..d {
                z.xtx[i * n + j] = if constant[i] || constant[j] {
                    if i == j {
                        rows
                    } else {
                        0.0
                    }
                } else {
                    (at(i, j) - rows * mean[i] * mean[j]) / (scale[i] * scale[j])
                };
            }
            z.xtx[i * n + d] = 0.0;
            z.xty[i] = if constant[i] {
                0.0
            } else {
                (self.xty[i] - rows * mean[i] * mean_y) / scale[i]
            };
        }
        z.xtx[d * n + d] = rows;
        z.xty[d] = self.xty[d];
        z.yty = self.yty;
        z.rows = self.rows;
        let standardization = Standardization {
            mean: mean.iter().map(|m| *m as f32).collect(),
            scale: scale.iter().map(|s| *s as f32).collect(),
            target: None,
        };
        (standardization, z)
    }

    /// Solves `(XᵀX + l2·I) w = Xᵀy` (the intercept is not penalised) by
    /// Cholesky; returns the weights then the intercept.
    pub fn solve(&self, l2: f64) -> Result<Vec<f64>> {
        let n = self.dims + 1;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                a[i * n + j] = self.xtx[i * n + j];
                a[j * n + i] = self.xtx[i * n + j];
            }
        }
        let scale = (0..n).map(|i| a[i * n + i]).fold(0.0f64, f64::max).max(1.0);
        for i in 0..self.dims {
            a[i * n + i] += l2 + 1e-12 * scale;
        }
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = (0..j).map(|p| l[i * n + p] * l[j * n + p]).sum();
                if i == j {
                    let v = a[i * n + i] - s;
                    if v <= 0.0 {
                        return Err(MlError::InvalidData(
                            "the features are linearly dependent (or constant); drop redundant columns or set l2 > 0"
                                .into(),
                        ));
                    }
                    l[i * n + i] = v.sqrt();
                } else {
                    l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
                }
            }
        }
        let mut z = vec![0.0; n];
        for i in 0..n {
            z[i] = (self.xty[i] - (0..i).map(|p| l[i * n + p] * z[p]).sum::<f64>()) / l[i * n + i];
        }
        let mut w = vec![0.0; n];
        for i in (0..n).rev() {
            w[i] = (z[i] - (i + 1..n).map(|p| l[p * n + i] * w[p]).sum::<f64>()) / l[i * n + i];
        }
        Ok(w)
    }
}
