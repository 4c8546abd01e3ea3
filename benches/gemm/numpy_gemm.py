"""numpy's `a @ b` (fp32) on the shapes of kiln-kernels' gemm_bench example,
best of several runs, as CSV: the BLAS a user would otherwise train with.

    python3 benches/gemm/numpy_gemm.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benches/gemm/numpy_gemm.py

This machine sets OPENBLAS_CORETYPE=Haswell; unset (second line) OpenBLAS
picks its AVX-512 kernel. The kernel in use is printed to stderr.
"""
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info


def main() -> None:
    for pool in threadpool_info():
        print(f"{pool.get('internal_api')} {pool.get('architecture')} threads={pool.get('num_threads')}", file=sys.stderr)
    shapes = [(n, n, n) for n in (256, 512, 1024, 2048)]
    for batch in (128, 256):
        shapes += [(batch, 784, 256), (784, 256, batch), (batch, 256, 784)]
    print("m,k,n,gflops")
    for m, k, n in shapes:
        a = np.full((m, k), 0.5, np.float32)
        b = np.full((k, n), 0.25, np.float32)
        flops = 2 * m * k * n
        runs = int(min(200, max(3, 2e9 / flops)))
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        print(f"{m},{k},{n},{flops / best / 1e9:.1f}")


if __name__ == "__main__":
    main()
