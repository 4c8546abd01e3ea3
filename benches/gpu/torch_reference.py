"""cuBLAS / cuDNN reference timings (through PyTorch) for the shapes of
`crates/kiln-kernels/examples/gpu_bench.rs`, on the same GPU.

usage: python3 benches/gpu/torch_reference.py > torch.csv
Prints `kernel,shape,seconds,rate,unit` rows; TF32 is off so both sides do fp32.
"""
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def timed(fn, iterations):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def main() -> None:
    dev = torch.device("cuda")
    print("kernel,shape,seconds,rate,unit")
    for m, n, k in [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192),
                    (4096, 4096, 128), (128, 4096, 4096), (65536, 256, 784)]:
        a = torch.randn(m, k, device=dev)
        b = torch.randn(k, n, device=dev)
        flops = 2.0 * m * n * k
        s = timed(lambda: torch.mm(a, b), max(3, min(200, int(2e12 / flops))))
        print(f"cublas_sgemm,{m}x{n}x{k},{s:.6e},{flops / s / 1e9:.1f},GFLOP/s")
    for nb, c, h, w, kk, o in [(128, 16, 28, 28, 3, 32), (64, 64, 56, 56, 3, 64)]:
        x = torch.randn(nb, c, h, w, device=dev)
        wt = torch.randn(o, c, kk, kk, device=dev)
        bias = torch.randn(o, device=dev)
        flops = 2.0 * nb * o * h * w * c * kk * kk
        s = timed(lambda: torch.relu(torch.nn.functional.conv2d(x, wt, bias, padding=kk // 2)), 20)
        print(f"cudnn_conv2d_forward,n{nb}c{c}h{h}w{w}k{kk}o{o},{s:.6e},{flops / s / 1e9:.1f},GFLOP/s")
    n = 1 << 26
    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    s = timed(lambda: dst.copy_(src), 50)
    print(f"torch_device_copy,{n},{s:.6e},{8.0 * n / s / 1e9:.1f},GB/s")


if __name__ == "__main__":
    main()
