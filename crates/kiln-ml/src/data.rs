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
    /// Identifies the shard that starts with this batch by its first row's
    /// features, for seeding per-shard randomness (sampling order, dropout,
    /// the held-out split). On Ballista a task only knows its partition's
    /// position among the partitions it was given, not among all of them, so
    /// an index would change with the number of executors and slots; the
    /// data does not.
    pub fn shard_key(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ self.rows() as u64;
        for value in self.features.iter().take(self.dims) {
            for byte in value.to_bits().to_le_bytes() {
                hash ^= byte as u64;
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }

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
