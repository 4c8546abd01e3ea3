//! Kiln's machine learning: models and their options ([`options`]), dense
//! networks over the kernels ([`network`]), the per-partition training step
//! and the combine step ([`train`]), the one training [`Driver`]
//! ([`driver`]: next round, combine, validation, early stopping), in-memory
//! training and scoring ([`fit()`], [`evaluate`]), standardization inside the
//! model ([`standardize`]), the full-batch L-BFGS optimizer ([`lbfgs`]),
//! metrics ([`metrics`]) and model files ([`file`]).
//!
//! ```text
//! Driver::next_round ─▶ Round ─▶ PartitionRound per partition ─▶ PartitionResult ┐
//!        ▲                                                                       │
//!        └──────── Driver::absorb: combine, validation, early stop ◀─────────────┘
//! ```
//! The SQL layer runs each round as a Ballista job whose operator feeds a
//! [`PartitionRound`] per partition; [`fit()`] runs the rounds in memory.
//! Everything here is plain `f32` math on [`kiln_kernels::Backend`].
//!
//! Must not depend on DataFusion, Arrow or Ballista (a test walks
//! `Cargo.lock`): it builds and tests in seconds.
//!
//! ```
//! use kiln_ml::{fit, Batch, ModelType, Targets, TrainOptions};
//! use kiln_kernels::cpu::CpuBackend;
//! // y = 2x + 1, solved exactly from XᵀX / Xᵀy.
//! let batch = Batch { features: vec![0.0, 1.0, 2.0, 3.0], dims: 1,
//!                     targets: Targets::Values(vec![1.0, 3.0, 5.0, 7.0]) };
//! let mut options = TrainOptions::default();
//! options.solver = kiln_ml::options::Solver::Normal;
//! let (model, _) = fit(ModelType::LinearRegression, &options, &[vec![batch]], None,
//!                      &CpuBackend::default(), None, |_| {}).unwrap();
//! // Fitted on standardized features; reported in the features' own units.
//! let (weights, intercepts) = model.linear_coefficients().unwrap();
//! assert!((weights[0] - 2.0).abs() < 1e-4 && (intercepts[0] - 1.0).abs() < 1e-4);
//! ```

// Dense linear algebra (confusion matrices, Cholesky) reads best with indices.
#![allow(clippy::needless_range_loop)]

pub mod data;
pub mod device;
pub mod driver;
mod error;
pub mod file;
pub mod fit;
pub mod lbfgs;
pub mod metrics;
pub mod model;
pub mod network;
pub mod options;
pub mod standardize;
pub mod train;

pub use data::{Batch, Targets};
pub use driver::{Driver, PartitionResult, PartitionRound, Round, RoundKind};
pub use error::{MlError, Result};
pub use fit::{evaluate, fit, EpochRecord, History};
pub use model::{Model, Predictions, Task};
pub use options::{ModelType, OptionValue, TrainOptions};

pub(crate) mod serde_activation {
    use kiln_kernels::Activation;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Activation, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match a {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Activation, D::Error> {
        let name = String::deserialize(d)?;
        Activation::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown activation {name}")))
    }
}

/// JSON has no NaN: written as `null`, read back as NaN.
pub(crate) mod serde_nan {
    use serde::{Deserialize, Deserializer};

    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
        let raw = Vec::<(String, Option<f64>)>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
            .collect())
    }
}
