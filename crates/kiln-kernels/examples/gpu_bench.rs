//! GPU kernel throughput with operands resident on the device:
//! `cargo run --release -p kiln-kernels --example gpu_bench` on a CUDA host
//! (or the binary from `kernels/gpu-bundle.sh`). Prints CSV rows
//! `kernel,shape,seconds,rate,unit`; `benches/gpu/torch_reference.py` prints
//! the cuBLAS / cuDNN rows for the same shapes.

use kiln_kernels::cuda::{self, CudaBackend};
use kiln_kernels::{Conv2d, Gemm};

fn main() {
    if let Err(e) = cuda::probe() {
        eprintln!("gpu_bench: {e}");
        std::process::exit(1);
    }
    let gpu = CudaBackend::new(0).unwrap_or_else(|e| {
        eprintln!("gpu_bench: {e}");
        std::process::exit(1)
    });
    println!("kernel,shape,seconds,rate,unit");
    eprintln!("device: {}", kiln_kernels::Backend::name(&gpu));
    let gemms = [
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (4096, 4096, 4096),
        (8192, 8192, 8192),
        (4096, 4096, 128),
        (128, 4096, 4096),
        (65536, 256, 784),
    ];
    for (m, n, k) in gemms {
        let spec = Gemm::new(m, n, k);
        let iterations = (2e12 / spec.flops()).clamp(3.0, 200.0) as usize;
        match gpu.time_gemm(spec, iterations) {
            Ok(s) => println!(
                "sgemm,{m}x{n}x{k},{s:.6e},{:.1},GFLOP/s",
                spec.flops() / s / 1e9
            ),
            Err(e) => println!("sgemm,{m}x{n}x{k},,,error: {e}"),
        }
    }
    let convs = [
        Conv2d {
            batch: 128,
            in_channels: 16,
            height: 28,
            width: 28,
            out_channels: 32,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        Conv2d {
            batch: 64,
            in_channels: 64,
            height: 56,
            width: 56,
            out_channels: 64,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
    ];
    for c in convs {
        let shape = format!(
            "n{}c{}h{}w{}k{}o{}",
            c.batch, c.in_channels, c.height, c.width, c.kernel, c.out_channels
        );
        match gpu.time_conv2d_forward(c, 20) {
            Ok(s) => println!(
                "conv2d_forward,{shape},{s:.6e},{:.1},GFLOP/s",
                c.flops() / s / 1e9
            ),
            Err(e) => println!("conv2d_forward,{shape},,,error: {e}"),
        }
    }
    let n = 1usize << 26;
    // Adam reads params, grads, m, v and writes params, m, v: 7 floats per parameter.
    match gpu.time_adam(n, 50) {
        Ok(s) => println!(
            "adam_step,{n},{s:.6e},{:.1},GB/s",
            28.0 * n as f64 / s / 1e9
        ),
        Err(e) => println!("adam_step,{n},,,error: {e}"),
    }
    match gpu.time_copy(n, 50) {
        Ok(s) => println!(
            "device_copy,{n},{s:.6e},{:.1},GB/s",
            8.0 * n as f64 / s / 1e9
        ),
        Err(e) => println!("device_copy,{n},,,error: {e}"),
    }
}
