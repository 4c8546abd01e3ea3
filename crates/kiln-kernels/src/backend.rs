//! The device-neutral kernel interface. All matrices are row-major `f32`.

use crate::{Conv2d, Pool2d, Result};

/// `C = alpha · op(A) · op(B) + beta · C`, with `op(A)` of shape `m × k` and
/// `op(B)` of shape `k × n` (BLAS convention, row-major storage). With
/// `trans_a`, `A` is stored `k × m`; with `trans_b`, `B` is stored `n × k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl Gemm {
    /// `C = A · B` (no transposes, alpha 1, beta 0).
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    pub fn trans_a(mut self) -> Self {
        self.trans_a = true;
        self
    }

    pub fn trans_b(mut self) -> Self {
        self.trans_b = true;
        self
    }

    /// Accumulate into `C` (`beta = 1`).
    pub fn accumulate(mut self) -> Self {
        self.beta = 1.0;
        self
    }

    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Floating-point operations of one call (for GFLOP/s).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Elementwise nonlinearity applied after a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    /// Parses `relu`, `tanh`, `sigmoid`, `identity`/`linear`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "relu" => Some(Self::Relu),
            "tanh" => Some(Self::Tanh),
            "sigmoid" => Some(Self::Sigmoid),
            "identity" | "linear" => Some(Self::Identity),
            _ => None,
        }
    }

    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Identity => x,
            Self::Relu => x.max(0.0),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => sigmoid(x),
        }
    }

    /// The derivative expressed through the activation's output `y`.
    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Self::Identity => 1.0,
            Self::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Tanh => 1.0 - y * y,
            Self::Sigmoid => y * (1.0 - y),
        }
    }
}

#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// An optimizer and its hyper-parameters; `l2` adds `l2 · w` to each gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd {
        learning_rate: f32,
        l2: f32,
    },
    Momentum {
        learning_rate: f32,
        momentum: f32,
        l2: f32,
    },
    Adam {
        learning_rate: f32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        l2: f32,
    },
}

/// Per-parameter optimizer state (velocity or Adam moments) and the step count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizerState {
    pub step: u64,
    pub first_moment: Vec<f32>,
    pub second_moment: Vec<f32>,
}

impl OptimizerState {
    pub fn new(params: usize) -> Self {
        Self {
            step: 0,
            first_moment: vec![0.0; params],
            second_moment: vec![0.0; params],
        }
    }
}

/// The kernels every device provides. Slices are host memory for now; the
/// CUDA backend will add device buffers behind the same operations.
pub trait Backend: Send + Sync {
    /// A short name for messages and benchmarks ("cpu", "cuda:0").
    fn name(&self) -> String;

    /// General matrix multiply; see [`Gemm`].
    fn gemm(&self, spec: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()>;

    /// In place: `x[r, j] = act(x[r, j] + bias[j])` for a `rows × bias.len()` matrix.
    fn bias_activation(&self, act: Activation, x: &mut [f32], bias: &[f32]) -> Result<()>;

    /// In place: `grad *= act'(y)`, given the forward output `y`.
    fn activation_backward(&self, act: Activation, y: &[f32], grad: &mut [f32]) -> Result<()>;

    /// Sums of each column of a `rows × out.len()` matrix into `out` (bias gradients).
    fn column_sums(&self, x: &[f32], out: &mut [f32]) -> Result<()>;

    /// Mean softmax cross-entropy of `rows × classes` logits against class
    /// indices; writes `d loss / d logits` (already divided by `rows`).
    fn softmax_cross_entropy(
        &self,
        logits: &[f32],
        labels: &[u32],
        classes: usize,
        grad: &mut [f32],
    ) -> Result<f32>;

    /// Mean binary cross-entropy of `sigmoid(logits)` against 0/1 targets,
    /// with its gradient with respect to the logits.
    fn sigmoid_binary_cross_entropy(
        &self,
        logits: &[f32],
        targets: &[f32],
        grad: &mut [f32],
    ) -> Result<f32>;

    /// Mean squared error `mean((pred - target)²)` and its gradient.
    fn mean_squared_error(&self, pred: &[f32], target: &[f32], grad: &mut [f32]) -> Result<f32>;

    /// `output = act(conv2d(input, weights) + bias)`; see [`Conv2d`] for layouts.
    fn conv2d_forward(
        &self,
        shape: Conv2d,
        act: Activation,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        output: &mut [f32],
    ) -> Result<()>;

    /// Gradients of a convolution given `d loss / d (pre-activation output)`:
    /// weights and bias always (overwritten), the input when `grad_input` is given.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        shape: Conv2d,
        input: &[f32],
        weights: &[f32],
        grad_output: &[f32],
        grad_input: Option<&mut [f32]>,
        grad_weights: &mut [f32],
        grad_bias: &mut [f32],
    ) -> Result<()>;

    /// Max pooling; `argmax` receives each maximum's index within its input plane.
    fn max_pool2d_forward(
        &self,
        shape: Pool2d,
        input: &[f32],
        output: &mut [f32],
        argmax: &mut [u32],
    ) -> Result<()>;

    /// Routes each output gradient to its maximum's position (`grad_input` is overwritten).
    fn max_pool2d_backward(
        &self,
        shape: Pool2d,
        grad_output: &[f32],
        argmax: &[u32],
        grad_input: &mut [f32],
    ) -> Result<()>;

    /// One fused optimizer step over all parameters.
    fn optimizer_step(
        &self,
        optimizer: Optimizer,
        params: &mut [f32],
        grads: &[f32],
        state: &mut OptimizerState,
    ) -> Result<()>;
}
