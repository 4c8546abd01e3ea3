//! Geometry of 2-D convolution and max pooling over NCHW tensors.

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
}
