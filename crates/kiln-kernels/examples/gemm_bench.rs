//! CPU GEMM throughput: `cargo run --release -p kiln-kernels --example gemm_bench`.
//! Prints GFLOP/s for square sizes 256..2048 (best of several runs) as CSV.

use std::time::Instant;

use kiln_kernels::cpu::CpuBackend;
use kiln_kernels::{Backend, Gemm};

fn main() {
    let cpu = CpuBackend::default();
    println!("n,gflops");
    for n in [256usize, 512, 1024, 2048] {
        let a = vec![0.5f32; n * n];
        let b = vec![0.25f32; n * n];
        let mut c = vec![0.0f32; n * n];
        let spec = Gemm::new(n, n, n);
        let runs = (2_000_000_000.0 / spec.flops()).clamp(3.0, 50.0) as usize;
        let mut best = f64::MAX;
        for _ in 0..runs {
            let start = Instant::now();
            cpu.gemm(spec, &a, &b, &mut c).expect("shapes match");
            best = best.min(start.elapsed().as_secs_f64());
        }
        assert!((c[0] - 0.125 * n as f32).abs() < 1e-2 * n as f32);
        println!("{n},{:.1}", spec.flops() / best / 1e9);
    }
}
