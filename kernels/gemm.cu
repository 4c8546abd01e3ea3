// C = alpha * op(A) * op(B) + beta * C, fp32, row-major (the CPU backend's
// `Gemm` contract). op(A) is m x k (stored k x m when trans_a), op(B) is k x n
// (stored n x k when trans_b).
//
// Block tile 64 x 64, depth 16, 256 threads; each thread accumulates a 4 x 4
// register tile. Tiles are staged through shared memory (padded against bank
// conflicts); out-of-range elements load as zero so any shape works.

#define KILN_BM 64
#define KILN_BN 64
#define KILN_BK 16
#define KILN_TM 4
#define KILN_TN 4

extern "C" __global__ void kiln_sgemm(
    int m, int n, int k,
    const float* __restrict__ a,
    const float* __restrict__ b,
    float* __restrict__ c,
    float alpha, float beta,
    int trans_a, int trans_b)
{
    __shared__ float a_tile[KILN_BK][KILN_BM + 4];
    __shared__ float b_tile[KILN_BK][KILN_BN + 4];
    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
    const int row0 = blockIdx.y * KILN_BM;
    const int col0 = blockIdx.x * KILN_BN;
    float acc[KILN_TM][KILN_TN];
    #pragma unroll
    for (int i = 0; i < KILN_TM; ++i) {
        #pragma unroll
        for (int j = 0; j < KILN_TN; ++j) acc[i][j] = 0.0f;
    }
    for (int k0 = 0; k0 < k; k0 += KILN_BK) {
        for (int idx = threadIdx.x; idx < KILN_BM * KILN_BK; idx += blockDim.x) {
            int r, p;
            if (trans_a) { r = idx % KILN_BM; p = idx / KILN_BM; }   // contiguous along m
            else         { p = idx % KILN_BK; r = idx / KILN_BK; }   // contiguous along k
            const int gr = row0 + r, gp = k0 + p;
            float v = 0.0f;
            if (gr < m && gp < k) v = trans_a ? a[(size_t)gp * m + gr] : a[(size_t)gr * k + gp];
            a_tile[p][r] = v;
        }
        for (int idx = threadIdx.x; idx < KILN_BK * KILN_BN; idx += blockDim.x) {
            int p, col;
            if (trans_b) { p = idx % KILN_BK; col = idx / KILN_BK; } // contiguous along k
            else         { col = idx % KILN_BN; p = idx / KILN_BN; } // contiguous along n
            const int gp = k0 + p, gc = col0 + col;
            float v = 0.0f;
            if (gp < k && gc < n) v = trans_b ? b[(size_t)gc * k + gp] : b[(size_t)gp * n + gc];
            b_tile[p][col] = v;
        }
        __syncthreads();
        #pragma unroll
        for (int p = 0; p < KILN_BK; ++p) {
            float av[KILN_TM], bv[KILN_TN];
            #pragma unroll
            for (int i = 0; i < KILN_TM; ++i) av[i] = a_tile[p][ty * KILN_TM + i];
            #pragma unroll
            for (int j = 0; j < KILN_TN; ++j) bv[j] = b_tile[p][tx * KILN_TN + j];
            #pragma unroll
            for (int i = 0; i < KILN_TM; ++i) {
                #pragma unroll
                for (int j = 0; j < KILN_TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
    #pragma unroll
    for (int i = 0; i < KILN_TM; ++i) {
        const int r = row0 + ty * KILN_TM + i;
        if (r >= m) continue;
        #pragma unroll
        for (int j = 0; j < KILN_TN; ++j) {
            const int col = col0 + tx * KILN_TN + j;
            if (col >= n) continue;
            float* out = &c[(size_t)r * n + col];
            *out = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *out;
        }
    }
}
