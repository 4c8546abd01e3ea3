//! The CUDA backend. Without a GPU (CI): probing reports what is missing
//! without panicking, and every kernel in `kernels/` compiles with NVRTC for
//! sm_90 (CI installs NVRTC from PyPI). With `KILN_TEST_CUDA=1` on a GPU host:
//! every operation matches the CPU backend on random shapes, odd sizes
//! included, within the stated relative error.

use kiln_kernels::cpu::CpuBackend;
use kiln_kernels::cuda::{self, CudaBackend};
use kiln_kernels::{
    Activation, Backend, Conv2d, Gemm, KernelError, Optimizer, OptimizerState, Pool2d,
};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn probing_without_cuda_is_an_error_not_a_panic() {
    match cuda::probe() {
        Ok(()) => {
            // A GPU host: opening the device must work too.
            CudaBackend::new(0).expect("a usable device opens");
        }
        Err(KernelError::CudaUnavailable { reason }) => {
            assert!(!reason.is_empty());
            let err = CudaBackend::new(0).unwrap_err();
            assert!(matches!(err, KernelError::CudaUnavailable { .. }), "{err}");
        }
        Err(other) => panic!("unexpected probe error: {other}"),
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if !cuda::nvrtc_available() {
        // CI installs NVRTC (see .ci/run); elsewhere say what is skipped.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide NVRTC (libnvrtc.so.13 on LD_LIBRARY_PATH)"
        );
        eprintln!("skipped: NVRTC not found (pip install nvidia-cuda-nvrtc==13.0.*)");
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let compiled = cuda::compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(compiled.len(), cuda::SOURCES.len());
    }
    assert_eq!(cuda::arch_for(9, 0), "sm_90");
}

fn gpu() -> Option<CudaBackend> {
    if std::env::var("KILN_TEST_CUDA").as_deref() != Ok("1") {
        eprintln!("skipped: set KILN_TEST_CUDA=1 on a CUDA host");
        return None;
    }
    Some(CudaBackend::new(0).expect("KILN_TEST_CUDA=1 but no usable CUDA device"))
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], rel: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= rel * scale,
            "{what}[{i}]: gpu {g} cpu {c} (relative bound {rel} of max |cpu| {scale})"
        );
    }
}

/// GEMM: relative error ≤ 1e-4 of the largest |C| (fp32 accumulation order differs).
#[test]
#[ignore = "needs a GPU: KILN_TEST_CUDA=1 cargo test -p kiln-kernels --test cuda -- --ignored"]
fn gpu_gemm_matches_cpu_on_odd_shapes() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::default();
    for (i, &(m, n, k)) in [
        (1, 1, 1),
        (3, 5, 7),
        (64, 64, 64),
        (65, 129, 33),
        (1000, 17, 513),
        (257, 1023, 255),
    ]
    .iter()
    .enumerate()
    {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut spec = Gemm::new(m, n, k).alpha(0.5);
            spec.trans_a = ta;
            spec.trans_b = tb;
            spec.beta = 0.25;
            let a = values(m * k, 1 + i as u64);
            let b = values(k * n, 2 + i as u64);
            let c0 = values(m * n, 3 + i as u64);
            let (mut cg, mut cc) = (c0.clone(), c0);
            gpu.gemm(spec, &a, &b, &mut cg).unwrap();
            cpu.gemm(spec, &a, &b, &mut cc).unwrap();
            assert_close(&format!("gemm {m}x{n}x{k} ta={ta} tb={tb}"), &cg, &cc, 1e-4);
        }
    }
}

/// Elementwise kernels, losses and optimizer steps: ≤ 1e-5 relative.
#[test]
#[ignore = "needs a GPU: KILN_TEST_CUDA=1 cargo test -p kiln-kernels --test cuda -- --ignored"]
fn gpu_elementwise_losses_and_optimizers_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::default();
    let (rows, cols) = (301, 7);
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
    ] {
        let bias = values(cols, 4);
        let (mut xg, mut xc) = (values(rows * cols, 5), values(rows * cols, 5));
        gpu.bias_activation(act, &mut xg, &bias).unwrap();
        cpu.bias_activation(act, &mut xc, &bias).unwrap();
        assert_close(&format!("bias_activation {act:?}"), &xg, &xc, 1e-5);
        let (mut gg, mut gc) = (values(rows * cols, 6), values(rows * cols, 6));
        gpu.activation_backward(act, &xc, &mut gg).unwrap();
        cpu.activation_backward(act, &xc, &mut gc).unwrap();
        assert_close(&format!("activation_backward {act:?}"), &gg, &gc, 1e-5);
    }
    let x = values(rows * cols, 7);
    let (mut sg, mut sc) = (vec![0.0; cols], vec![0.0; cols]);
    gpu.column_sums(&x, &mut sg).unwrap();
    cpu.column_sums(&x, &mut sc).unwrap();
    assert_close("column_sums", &sg, &sc, 1e-5);

    let labels: Vec<u32> = (0..rows as u32).map(|r| r % cols as u32).collect();
    let (mut gg, mut gc) = (vec![0.0; rows * cols], vec![0.0; rows * cols]);
    let lg = gpu
        .softmax_cross_entropy(&x, &labels, cols, &mut gg)
        .unwrap();
    let lc = cpu
        .softmax_cross_entropy(&x, &labels, cols, &mut gc)
        .unwrap();
    assert!(
        (lg - lc).abs() < 1e-5 * lc.abs().max(1.0),
        "softmax loss {lg} vs {lc}"
    );
    assert_close("softmax grad", &gg, &gc, 1e-5);
    let bad = gpu.softmax_cross_entropy(&x[..cols], &[cols as u32], cols, &mut gg[..cols]);
    assert!(matches!(bad, Err(KernelError::LabelOutOfRange { .. })));

    let targets: Vec<f32> = (0..rows).map(|r| (r % 2) as f32).collect();
    let logits = values(rows, 8);
    let (mut gg, mut gc) = (vec![0.0; rows], vec![0.0; rows]);
    let lg = gpu
        .sigmoid_binary_cross_entropy(&logits, &targets, &mut gg)
        .unwrap();
    let lc = cpu
        .sigmoid_binary_cross_entropy(&logits, &targets, &mut gc)
        .unwrap();
    assert!((lg - lc).abs() < 1e-5, "bce {lg} vs {lc}");
    assert_close("bce grad", &gg, &gc, 1e-5);
    let lg = gpu.mean_squared_error(&logits, &targets, &mut gg).unwrap();
    let lc = cpu.mean_squared_error(&logits, &targets, &mut gc).unwrap();
    assert!((lg - lc).abs() < 1e-5, "mse {lg} vs {lc}");
    assert_close("mse grad", &gg, &gc, 1e-5);

    let n = 100_003;
    for optimizer in [
        Optimizer::Sgd {
            learning_rate: 0.1,
            l2: 0.01,
        },
        Optimizer::Momentum {
            learning_rate: 0.1,
            momentum: 0.9,
            l2: 0.01,
        },
        Optimizer::Adam {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            l2: 0.01,
        },
    ] {
        let (mut pg, mut pc) = (values(n, 9), values(n, 9));
        let (mut sg, mut sc) = (OptimizerState::new(n), OptimizerState::new(n));
        for step in 0..3 {
            let grads = values(n, 10 + step);
            gpu.optimizer_step(optimizer, &mut pg, &grads, &mut sg)
                .unwrap();
            cpu.optimizer_step(optimizer, &mut pc, &grads, &mut sc)
                .unwrap();
        }
        assert_close(&format!("{optimizer:?}"), &pg, &pc, 1e-5);
    }
}

/// Convolution and pooling: ≤ 1e-4 relative (GEMM-based on both sides).
#[test]
#[ignore = "needs a GPU: KILN_TEST_CUDA=1 cargo test -p kiln-kernels --test cuda -- --ignored"]
fn gpu_convolution_and_pooling_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::default();
    let shapes = [
        Conv2d {
            batch: 3,
            in_channels: 3,
            height: 13,
            width: 11,
            out_channels: 5,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        Conv2d {
            batch: 2,
            in_channels: 1,
            height: 28,
            width: 28,
            out_channels: 16,
            kernel: 5,
            stride: 2,
            padding: 2,
        },
        Conv2d {
            batch: 1,
            in_channels: 4,
            height: 7,
            width: 9,
            out_channels: 3,
            kernel: 1,
            stride: 1,
            padding: 0,
        },
    ];
    for (i, s) in shapes.into_iter().enumerate() {
        let input = values(s.input_len(), 20 + i as u64);
        let weights = values(s.weight_len(), 30 + i as u64);
        let bias = values(s.out_channels, 40 + i as u64);
        let (mut og, mut oc) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
        gpu.conv2d_forward(s, Activation::Relu, &input, &weights, &bias, &mut og)
            .unwrap();
        cpu.conv2d_forward(s, Activation::Relu, &input, &weights, &bias, &mut oc)
            .unwrap();
        assert_close(&format!("conv forward {s:?}"), &og, &oc, 1e-4);
        let grad_out = values(s.output_len(), 50 + i as u64);
        let mut g = (
            vec![0.0; s.input_len()],
            vec![0.0; s.weight_len()],
            vec![0.0; s.out_channels],
        );
        let mut c = g.clone();
        gpu.conv2d_backward(
            s,
            &input,
            &weights,
            &grad_out,
            Some(&mut g.0),
            &mut g.1,
            &mut g.2,
        )
        .unwrap();
        cpu.conv2d_backward(
            s,
            &input,
            &weights,
            &grad_out,
            Some(&mut c.0),
            &mut c.1,
            &mut c.2,
        )
        .unwrap();
        assert_close("conv grad input", &g.0, &c.0, 1e-4);
        assert_close("conv grad weights", &g.1, &c.1, 1e-4);
        assert_close("conv grad bias", &g.2, &c.2, 1e-4);
    }
    let p = Pool2d {
        batch: 3,
        channels: 5,
        height: 9,
        width: 7,
        size: 2,
    };
    let input = values(p.input_len(), 60);
    let (mut og, mut oc) = (vec![0.0; p.output_len()], vec![0.0; p.output_len()]);
    let (mut ag, mut ac) = (vec![0u32; p.output_len()], vec![0u32; p.output_len()]);
    gpu.max_pool2d_forward(p, &input, &mut og, &mut ag).unwrap();
    cpu.max_pool2d_forward(p, &input, &mut oc, &mut ac).unwrap();
    assert_eq!((og.clone(), ag.clone()), (oc, ac.clone()));
    let grad = values(p.output_len(), 61);
    let (mut gg, mut gc) = (vec![0.0; p.input_len()], vec![0.0; p.input_len()]);
    gpu.max_pool2d_backward(p, &grad, &ag, &mut gg).unwrap();
    cpu.max_pool2d_backward(p, &grad, &ac, &mut gc).unwrap();
    assert_eq!(gg, gc);
}

/// Out of memory is an error, not a crash.
#[test]
#[ignore = "needs a GPU: KILN_TEST_CUDA=1 cargo test -p kiln-kernels --test cuda -- --ignored"]
fn gpu_out_of_memory_is_an_error() {
    let Some(gpu) = gpu() else { return };
    // 2^38 floats = 1 TiB: more than any single GPU has.
    match gpu.allocate(1usize << 38) {
        Err(KernelError::Cuda { message, .. }) => {
            assert!(message.to_lowercase().contains("memory"), "{message}")
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a 1 TiB allocation cannot succeed"),
    }
    // The device is still usable afterwards.
    let mut c = vec![0.0f32; 4];
    gpu.gemm(Gemm::new(2, 2, 1), &[1.0, 2.0], &[3.0, 4.0], &mut c)
        .unwrap();
    assert_eq!(c, [3.0, 4.0, 6.0, 8.0]);
}
