//! Standardization inside the model (`standardize = true`, the default, as
//! in Spark MLlib): every feature is centred on its training mean and divided
//! by its standard deviation before the network sees it, and a regression
//! label is scaled the same way. The statistics are fitted in one round over
//! the training rows ([`Moments`], merged across partitions) and stored with
//! the model, so `predict`, files and warm starts all apply the same ones.

use serde::{Deserialize, Serialize};

use crate::data::{Batch, Targets};

/// Per-feature (and regression label) centring and scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    pub mean: Vec<f32>,
    /// The standard deviation, or 1 for a constant feature (which then stays 0).
    pub scale: Vec<f32>,
    /// A regression label's mean and scale; `None` for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<(f32, f32)>,
}

impl Standardization {
    /// Standardizes a row-major `rows × mean.len()` feature matrix in place.
    pub fn apply(&self, features: &mut [f32]) {
        let dims = self.mean.len();
        for row in features.chunks_mut(dims) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) / s;
            }
        }
    }

    /// The batch as the network trains on it: features and a regression label standardized.
    pub fn apply_to_batch(&self, batch: &mut Batch) {
        self.apply(&mut batch.features);
        if let (Some((mean, scale)), Targets::Values(y)) = (self.target, &mut batch.targets) {
            y.iter_mut().for_each(|v| *v = (*v - mean) / scale);
        }
    }

    /// A network output back in the label's units (regression), unchanged otherwise.
    pub fn restore_target(&self, values: &mut [f32]) {
        if let Some((mean, scale)) = self.target {
            values.iter_mut().for_each(|v| *v = *v * scale + mean);
        }
    }

    /// The factor that turns a squared error in standardized label units
    /// into the label's own units (1 for classifiers).
    pub fn squared_error_factor(&self) -> f64 {
        self.target.map_or(1.0, |(_, s)| (s as f64).powi(2))
    }
}

/// Count, mean and sum of squared deviations per column, merged across
/// batches and partitions with Chan et al.'s pairwise update (stable for
/// large offsets, unlike sums of squares).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub rows: u64,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
    /// The regression label's mean and squared deviations.
    #[serde(default)]
    pub target: Option<(f64, f64)>,
}

impl Moments {
    pub fn new(dims: usize) -> Self {
        Self {
            rows: 0,
            mean: vec![0.0; dims],
            m2: vec![0.0; dims],
            target: None,
        }
    }

    pub fn add(&mut self, batch: &Batch) {
        let rows = batch.rows();
        if rows == 0 {
            return;
        }
        let dims = self.mean.len();
        let mut part = Moments::new(dims);
        part.rows = rows as u64;
        for row in batch.features.chunks(dims) {
            part.mean
                .iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += *v as f64);
        }
        part.mean.iter_mut().for_each(|m| *m /= rows as f64);
        for row in batch.features.chunks(dims) {
            for ((m2, m), v) in part.m2.iter_mut().zip(&part.mean).zip(row) {
                *m2 += (*v as f64 - m).powi(2);
            }
        }
        if let Targets::Values(y) = &batch.targets {
            let mean = y.iter().map(|v| *v as f64).sum::<f64>() / rows as f64;
            let m2 = y.iter().map(|v| (*v as f64 - mean).powi(2)).sum();
            part.target = Some((mean, m2));
        }
        self.merge(&part);
    }

    pub fn merge(&mut self, other: &Moments) {
        if other.rows == 0 {
            return;
        }
        if self.rows == 0 {
            *self = other.clone();
            return;
        }
        let (a, b) = (self.rows as f64, other.rows as f64);
        let n = a + b;
        let pair = |(mean, m2): (f64, f64), (mean_b, m2_b): (f64, f64)| {
            let delta = mean_b - mean;
            (mean + delta * b / n, m2 + m2_b + delta * delta * a * b / n)
        };
        for i in 0..self.mean.len() {
            (self.mean[i], self.m2[i]) =
                pair((self.mean[i], self.m2[i]), (other.mean[i], other.m2[i]));
        }
        self.target = match (self.target, other.target) {
            (Some(x), Some(y)) => Some(pair(x, y)),
            (x, y) => x.or(y),
        };
        self.rows += other.rows;
    }

    /// The standardization these moments give (population standard deviation,
    /// as Spark's `StandardScaler` with `withStd`).
    pub fn standardization(&self) -> Standardization {
        let n = self.rows.max(1) as f64;
        let scale_of = |m2: f64| {
            let sd = (m2 / n).sqrt();
            if sd > 1e-12 * 1f64.max(sd) && sd.is_finite() && sd as f32 > 0.0 {
                sd as f32
            } else {
                1.0
            }
        };
        Standardization {
            mean: self.mean.iter().map(|m| *m as f32).collect(),
            scale: self.m2.iter().map(|m2| scale_of(*m2)).collect(),
            target: self.target.map(|(mean, m2)| (mean as f32, scale_of(m2))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: &[[f32; 2]], y: &[f32]) -> Batch {
        Batch {
            features: rows.iter().flatten().copied().collect(),
            dims: 2,
            targets: Targets::Values(y.to_vec()),
        }
    }

    #[test]
    fn merged_moments_equal_one_pass_over_all_rows() {
        let all = batch(
            &[
                [1e6 + 1.0, 3.0],
                [1e6 + 2.0, 3.0],
                [1e6 + 4.0, 3.0],
                [1e6 + 9.0, 3.0],
            ],
            &[1.0, 2.0, 3.0, 6.0],
        );
        let mut whole = Moments::new(2);
        whole.add(&all);
        let mut split = Moments::new(2);
        let mut other = Moments::new(2);
        split.add(&all.gather(&[0]));
        other.add(&all.gather(&[1, 2, 3]));
        split.merge(&other);
        assert_eq!(split.rows, 4);
        for (a, b) in whole.m2.iter().zip(&split.m2) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        let s = split.standardization();
        assert!((s.mean[0] - 1_000_004.0).abs() < 0.5);
        // Deviations 3, 2, 0, 5 around 4: variance 38/4.
        assert!((s.scale[0] as f64 - (38.0f64 / 4.0).sqrt()).abs() < 1e-5);
        // A constant feature keeps scale 1 and becomes 0.
        assert_eq!(s.scale[1], 1.0);
        let (mean, scale) = s.target.unwrap();
        assert!((mean - 3.0).abs() < 1e-6 && (scale - 3.5f32.sqrt()).abs() < 1e-6);

        let mut standardized = all.clone();
        s.apply_to_batch(&mut standardized);
        let column: Vec<f32> = standardized.features.iter().step_by(2).copied().collect();
        let mean: f32 = column.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-3, "{column:?}");
        assert!(standardized
            .features
            .iter()
            .skip(1)
            .step_by(2)
            .all(|v| *v == 0.0));
        let Targets::Values(y) = &mut standardized.targets else {
            unreachable!()
        };
        s.restore_target(y);
        assert!((y[3] - 6.0).abs() < 1e-5);
    }
}
