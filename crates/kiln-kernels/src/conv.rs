//! Geometry of 2-D convolution and max pooling over NCHW tensors, and the
//! operand-size checks every backend applies.

use crate::error::expect_len;
use crate::Result;

/// A 2-D convolution of `batch` images of `in_channels × height × width`
/// (NCHW, row-major) with `out_channels` square `kernel × kernel` filters,
/// the same `stride` and zero `padding` on both axes. Weights are stored
/// `out_channels × in_channels × kernel × kernel`, one bias per output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn out_height(&self) -> usize {
        out_size(self.height, self.kernel, self.stride, self.padding)
    }

    pub fn out_width(&self) -> usize {
        out_size(self.width, self.kernel, self.stride, self.padding)
    }

    /// Elements of the input tensor.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    /// Elements of the output tensor.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_height() * self.out_width()
    }

    /// Elements of the weight tensor.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel * self.kernel
    }

    /// Rows of the unfolded input (`in_channels · kernel²`): the GEMM depth.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// Multiply-add count ×2 of the forward pass (for GFLOP/s).
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64 * self.patch_len() as f64
    }
}

impl Conv2d {
    pub(crate) fn check_forward(
        &self,
        input: usize,
        weights: usize,
        bias: usize,
        output: usize,
    ) -> Result<()> {
        const OP: &str = "conv2d_forward";
        expect_len(OP, "input", self.input_len(), input)?;
        expect_len(OP, "weights", self.weight_len(), weights)?;
        expect_len(OP, "bias", self.out_channels, bias)?;
        expect_len(OP, "output", self.output_len(), output)
    }

    /// Checks a backward pass's operands and zeroes the weight and bias
    /// gradients (the pass accumulates into them). With nothing to convolve
    /// (no images, or no output pixels) it also zeroes `grad_input` and
    /// returns false: the pass is complete.
    pub(crate) fn begin_backward(
        &self,
        input: &[f32],
        weights: &[f32],
        grad_output: &[f32],
        grad_input: Option<&mut [f32]>,
        grad_weights: &mut [f32],
        grad_bias: &mut [f32],
    ) -> Result<bool> {
        const OP: &str = "conv2d_backward";
        expect_len(OP, "input", self.input_len(), input.len())?;
        expect_len(OP, "weights", self.weight_len(), weights.len())?;
        expect_len(OP, "grad_output", self.output_len(), grad_output.len())?;
        expect_len(OP, "grad_weights", self.weight_len(), grad_weights.len())?;
        expect_len(OP, "grad_bias", self.out_channels, grad_bias.len())?;
        if let Some(g) = &grad_input {
            expect_len(OP, "grad_input", self.input_len(), g.len())?;
        }
        grad_weights.fill(0.0);
        grad_bias.fill(0.0);
        if self.batch == 0 || self.out_height() * self.out_width() == 0 {
            if let Some(g) = grad_input {
                g.fill(0.0);
            }
            return Ok(false);
        }
        Ok(true)
    }
}

fn out_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let padded = input + 2 * padding;
    if stride == 0 || padded < kernel {
        0
    } else {
        (padded - kernel) / stride + 1
    }
}

/// Non-overlapping max pooling with a `size × size` window (stride = size)
/// over `batch × channels × height × width`; trailing rows/columns that do
/// not fill a window are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub size: usize,
}

impl Pool2d {
    pub fn out_height(&self) -> usize {
        self.height.checked_div(self.size).unwrap_or(0)
    }

    pub fn out_width(&self) -> usize {
        self.width.checked_div(self.size).unwrap_or(0)
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_height() * self.out_width()
    }

    pub(crate) fn check_forward(&self, input: usize, output: usize, argmax: usize) -> Result<()> {
        const OP: &str = "max_pool2d_forward";
        expect_len(OP, "input", self.input_len(), input)?;
        expect_len(OP, "output", self.output_len(), output)?;
        expect_len(OP, "argmax", self.output_len(), argmax)
    }

    pub(crate) fn check_backward(
        &self,
        grad_output: usize,
        argmax: usize,
        grad_input: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool2d_backward";
        expect_len(OP, "grad_output", self.output_len(), grad_output)?;
        expect_len(OP, "argmax", self.output_len(), argmax)?;
        expect_len(OP, "grad_input", self.input_len(), grad_input)
    }
}
