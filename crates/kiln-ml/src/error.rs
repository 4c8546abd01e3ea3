//! Errors of model building and training: the option, column or value at fault.

use kiln_kernels::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("unknown model type '{0}'; valid types: linear_regression, logistic_regression, softmax_regression, mlp, kmeans")]
    UnknownModelType(String),
    #[error("unknown option '{option}' for {model_type}; valid options: {valid}")]
    UnknownOption {
        option: String,
        model_type: String,
        valid: String,
    },
    #[error("option '{option}' {problem} (got {value})")]
    InvalidOption {
        option: String,
        problem: String,
        value: String,
    },
    #[error("{0}")]
    InvalidData(String),
    #[error("{what} is not available yet; {instead}")]
    NotAvailable { what: String, instead: String },
    #[error(
        "device = '{device}' cannot be used here: {reason}; use device = 'cpu' or 'auto', \
         or run on a host with an NVIDIA GPU"
    )]
    DeviceUnavailable { device: String, reason: String },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("model file '{path}': {reason}")]
    Format { path: String, reason: String },
}

pub type Result<T, E = MlError> = std::result::Result<T, E>;
