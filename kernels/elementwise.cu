// Fused elementwise kernels: bias + activation and its backward, column sums,
// losses with their gradients, and optimizer steps. Activation codes:
// 0 identity, 1 relu, 2 tanh, 3 sigmoid (the CPU backend's `Activation`).

__device__ __forceinline__ float kiln_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ float kiln_activate(int act, float x) {
    switch (act) {
        case 1: return fmaxf(x, 0.0f);
        case 2: return tanhf(x);
        case 3: return kiln_sigmoid(x);
        default: return x;
    }
}

__device__ __forceinline__ float kiln_derivative(int act, float y) {
    switch (act) {
        case 1: return y > 0.0f ? 1.0f : 0.0f;
        case 2: return 1.0f - y * y;
        case 3: return y * (1.0f - y);
        default: return 1.0f;
    }
}

// x[r, j] = act(x[r, j] + bias[j]) over rows x cols.
extern "C" __global__ void kiln_bias_activation(float* x, const float* bias, long long rows, int cols, int act) {
    const long long total = rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        x[i] = kiln_activate(act, x[i] + bias[i % cols]);
    }
}

// NCHW: x[n, c, p] = act(x[n, c, p] + bias[c]) with `plane` pixels per channel.
extern "C" __global__ void kiln_channel_bias_activation(float* x, const float* bias, long long total, int channels, int plane, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int c = (int)((i / plane) % channels);
        x[i] = kiln_activate(act, x[i] + bias[c]);
    }
}

// grad *= act'(y)
extern "C" __global__ void kiln_activation_backward(const float* y, float* grad, long long n, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        grad[i] *= kiln_derivative(act, y[i]);
    }
}

// out[j] = sum_r x[r, j]: one block per column, tree reduction in shared memory.
extern "C" __global__ void kiln_column_sums(const float* x, float* out, long long rows, int cols) {
    __shared__ float partial[256];
    const int col = blockIdx.x;
    float sum = 0.0f;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) sum += x[r * cols + col];
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[col] = partial[0];
}

// NCHW bias gradients: out[c] = sum over images and pixels of x[n, c, p]; one block per channel.
extern "C" __global__ void kiln_channel_sums(const float* x, float* out, int batch, int channels, int plane) {
    __shared__ float partial[256];
    const int c = blockIdx.x;
    float sum = 0.0f;
    const long long per_channel = (long long)batch * plane;
    for (long long i = threadIdx.x; i < per_channel; i += blockDim.x) {
        const long long n = i / plane, p = i % plane;
        sum += x[(n * channels + c) * plane + p];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[c] = partial[0];
}

// Softmax cross-entropy per row; grad = (softmax - onehot) / rows; loss_rows[r] = -log p[label].
// A label out of range writes loss_rows[r] = -1 (the host reports it).
extern "C" __global__ void kiln_softmax_cross_entropy(const float* logits, const unsigned int* labels, float* grad, float* loss_rows, int rows, int classes) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* z = logits + (long long)r * classes;
    float* g = grad + (long long)r * classes;
    const unsigned int label = labels[r];
    if (label >= (unsigned int)classes) { loss_rows[r] = -1.0f; return; }
    float max = z[0];
    for (int j = 1; j < classes; ++j) max = fmaxf(max, z[j]);
    float sum = 0.0f;
    for (int j = 0; j < classes; ++j) sum += expf(z[j] - max);
    const float log_sum = logf(sum);
    for (int j = 0; j < classes; ++j) {
        const float p = expf(z[j] - max) / sum;
        g[j] = (p - (j == (int)label ? 1.0f : 0.0f)) / rows;
    }
    loss_rows[r] = log_sum - (z[label] - max);
}

// Binary cross-entropy of sigmoid(logits), computed stably from the logits.
extern "C" __global__ void kiln_sigmoid_bce(const float* logits, const float* targets, float* grad, float* loss, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float z = logits[i], y = targets[i];
    loss[i] = fmaxf(z, 0.0f) - z * y + log1pf(expf(-fabsf(z)));
    grad[i] = (kiln_sigmoid(z) - y) / n;
}

extern "C" __global__ void kiln_mse(const float* pred, const float* target, float* grad, float* loss, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float d = pred[i] - target[i];
    loss[i] = d * d;
    grad[i] = 2.0f * d / n;
}

extern "C" __global__ void kiln_sgd_step(float* params, const float* grads, long long n, float lr, float l2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        params[i] -= lr * (grads[i] + l2 * params[i]);
    }
}

extern "C" __global__ void kiln_momentum_step(float* params, const float* grads, float* velocity, long long n, float lr, float momentum, float l2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float g = grads[i] + l2 * params[i];
        velocity[i] = momentum * velocity[i] + g;
        params[i] -= lr * velocity[i];
    }
}

// Adam with bias corrections c1 = 1 - beta1^t, c2 = 1 - beta2^t computed on the host.
extern "C" __global__ void kiln_adam_step(float* params, const float* grads, float* m, float* v, long long n,
                                          float lr, float beta1, float beta2, float epsilon, float l2, float c1, float c2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float g = grads[i] + l2 * params[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        const float m_hat = m[i] / c1, v_hat = v[i] / c2;
        params[i] -= lr * m_hat / (sqrtf(v_hat) + epsilon);
    }
}
