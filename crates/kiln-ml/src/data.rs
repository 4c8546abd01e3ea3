//! Training data as the kernels see it: a row-major `f32` feature matrix and targets.

/// What a row is trained towards.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Unsupervised (kmeans).
    None,
    /// Regression values.
    Values(Vec<f32>),
    /// Class indices `0..classes` (the label mapping lives in the model card).
    Classes(Vec<u32>),
}

/// A block of rows: `features` is `rows × dims`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub features: Vec<f32>,
    pub dims: usize,
    pub targets: Targets,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.features.len().checked_div(self.dims).unwrap_or(0)
    }

    /// The rows whose index satisfies `keep`, as a new batch.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> Batch {
        let rows: Vec<usize> = (0..self.rows()).filter(|&r| keep(r)).collect();
        self.gather(&rows)
    }

    /// The given rows, in the given order.
    pub fn gather(&self, rows: &[usize]) -> Batch {
        let d = self.dims;
        let mut features = Vec::with_capacity(rows.len() * d);
        for &r in rows {
            features.extend_from_slice(&self.features[r * d..(r + 1) * d]);
        }
        let targets = match &self.targets {
            Targets::None => Targets::None,
            Targets::Values(v) => Targets::Values(rows.iter().map(|&r| v[r]).collect()),
            Targets::Classes(c) => Targets::Classes(rows.iter().map(|&r| c[r]).collect()),
        };
        Batch {
            features,
            dims: d,
            targets,
        }
    }
}
