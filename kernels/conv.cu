// Convolution pieces (NCHW, square kernel, same stride and zero padding on
// both axes): im2col / col2im for one image, and non-overlapping max pooling.
// The convolution itself is kiln_sgemm over the unfolded image.

// col[(c*k + ky)*k + kx, y*ow + x] = image[c, y*s + ky - pad, x*s + kx - pad] (0 outside).
extern "C" __global__ void kiln_im2col(const float* image, float* col, int channels, int height, int width,
                                       int kernel, int stride, int pad, int out_h, int out_w) {
    const long long pixels = (long long)out_h * out_w;
    const long long total = (long long)channels * kernel * kernel * pixels;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / pixels, p = i % pixels;
        const int kx = (int)(row % kernel), ky = (int)((row / kernel) % kernel), c = (int)(row / ((long long)kernel * kernel));
        const int y = (int)(p / out_w), x = (int)(p % out_w);
        const int iy = y * stride + ky - pad, ix = x * stride + kx - pad;
        col[i] = (iy >= 0 && ix >= 0 && iy < height && ix < width)
                     ? image[((long long)c * height + iy) * width + ix] : 0.0f;
    }
}

// The adjoint of kiln_im2col: each image element gathers every column entry
// that read it (no atomics: one thread per image element).
extern "C" __global__ void kiln_col2im(const float* col, float* image, int channels, int height, int width,
                                       int kernel, int stride, int pad, int out_h, int out_w) {
    const long long total = (long long)channels * height * width;
    const long long pixels = (long long)out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int ix = (int)(i % width), iy = (int)((i / width) % height), c = (int)(i / ((long long)width * height));
        float sum = 0.0f;
        for (int ky = 0; ky < kernel; ++ky) {
            const int ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0) continue;
            const int y = ty / stride;
            if (y >= out_h) continue;
            for (int kx = 0; kx < kernel; ++kx) {
                const int tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0) continue;
                const int x = tx / stride;
                if (x >= out_w) continue;
                const long long row = ((long long)c * kernel + ky) * kernel + kx;
                sum += col[row * pixels + (long long)y * out_w + x];
            }
        }
        image[i] = sum;
    }
}

// One thread per pooled output: max over its size x size window; argmax is
// the index within the input plane (the CPU backend's convention).
extern "C" __global__ void kiln_max_pool_forward(const float* input, float* output, unsigned int* argmax,
                                                 long long planes, int height, int width, int size) {
    const int out_h = height / size, out_w = width / size;
    const long long total = planes * out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const long long plane = i / ((long long)out_h * out_w);
        const int y = (int)((i / out_w) % out_h), x = (int)(i % out_w);
        const float* in = input + plane * height * width;
        int best_at = (y * size) * width + x * size;
        float best = __int_as_float(0xff800000);  // -infinity
        for (int dy = 0; dy < size; ++dy) {
            for (int dx = 0; dx < size; ++dx) {
                const int at = (y * size + dy) * width + x * size + dx;
                if (in[at] > best) { best = in[at]; best_at = at; }
            }
        }
        output[i] = best;
        argmax[i] = (unsigned int)best_at;
    }
}

// Windows do not overlap, so each pooled gradient has exactly one target.
extern "C" __global__ void kiln_max_pool_backward(const float* grad_output, const unsigned int* argmax, float* grad_input,
                                                  long long planes, int height, int width, int size) {
    const int out_h = height / size, out_w = width / size;
    const long long total = planes * out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const long long plane = i / ((long long)out_h * out_w);
        grad_input[plane * height * width + argmax[i]] = grad_output[i];
    }
}
