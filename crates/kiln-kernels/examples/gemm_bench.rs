//! CPU GEMM throughput: `cargo run --release -p kiln-kernels --example gemm_bench`.
//! Prints GFLOP/s (best of several runs) as CSV for square sizes 256..2048
//! and the shapes an mlp 784-256-10 step multiplies (batch 128 and 256:
//! forward, weight gradient, input gradient). `benches/gemm/numpy_gemm.py`
//! measures the same shapes with numpy.

use std::time::Instant;

use kiln_kernels::cpu::CpuBackend;
use kiln_kernels::{Backend, Gemm};

fn main() {
    let cpu = CpuBackend::default();
    let mut shapes: Vec<(usize, usize, usize)> = [256usize, 512, 1024, 2048]
        .iter()
        .map(|&n| (n, n, n))
        .collect();
    for batch in [128, 256] {
        shapes.extend([(batch, 784, 256), (784, 256, batch), (batch, 256, 784)]);
    }
    println!("m,k,n,gflops");
    for (m, k, n) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let spec = Gemm::new(m, n, k);
        let runs = (2_000_000_000.0 / spec.flops()).clamp(3.0, 200.0) as usize;
        let mut best = f64::MAX;
        for _ in 0..runs {
            let start = Instant::now();
            cpu.gemm(spec, &a, &b, &mut c).expect("shapes match");
            best = best.min(start.elapsed().as_secs_f64());
        }
        assert!((c[0] - 0.125 * k as f32).abs() < 1e-2 * k as f32);
        println!("{m},{k},{n},{:.1}", spec.flops() / best / 1e9);
    }
}
