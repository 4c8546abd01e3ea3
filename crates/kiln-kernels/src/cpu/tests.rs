#![allow(clippy::needless_range_loop)] // finite differences index inputs and gradients together
use super::*;
use proptest::prelude::*;

fn naive_gemm(spec: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
    } = spec;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                acc += av as f64 * bv as f64;
            }
            c[i * n + j] = alpha * acc as f32 + beta * c[i * n + j];
        }
    }
}

/// A deterministic pseudo-random vector in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tolerance * scale,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn gemm_matches_the_naive_product(
        m in 1usize..40, n in 1usize..40, k in 1usize..40,
        trans_a: bool, trans_b: bool, accumulate: bool, seed in 0u64..1000,
    ) {
        let mut spec = Gemm::new(m, n, k).alpha(0.5);
        spec.trans_a = trans_a;
        spec.trans_b = trans_b;
        if accumulate { spec.beta = 0.25; }
        let a = values(m * k, seed);
        let b = values(k * n, seed + 1);
        let mut want = values(m * n, seed + 2);
        let mut got = want.clone();
        naive_gemm(spec, &a, &b, &mut want);
        CpuBackend::default().gemm(spec, &a, &b, &mut got).unwrap();
        assert_close(&got, &want, 1e-5, "C");
    }
}

#[test]
fn large_gemm_runs_in_parallel_and_matches() {
    let (m, n, k) = (130, 257, 190);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut spec = Gemm::new(m, n, k).accumulate();
        spec.trans_a = ta;
        spec.trans_b = tb;
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut want = values(m * n, 3);
        let mut got = want.clone();
        naive_gemm(spec, &a, &b, &mut want);
        CpuBackend::default().gemm(spec, &a, &b, &mut got).unwrap();
        assert_close(&got, &want, 1e-4, "C");
    }
}

#[test]
fn gemm_rejects_wrong_shapes_with_the_operand_named() {
    let err = CpuBackend::default()
        .gemm(Gemm::new(2, 2, 3), &[0.0; 5], &[0.0; 6], &mut [0.0; 4])
        .unwrap_err();
    assert_eq!(err.to_string(), "gemm: A has 5 elements, expected 6");
}

/// Central finite difference of `f` at `x[i]`.
fn numeric_gradient(x: &[f32], i: usize, f: impl Fn(&[f32]) -> f32) -> f32 {
    let h = 1e-2f32;
    let mut plus = x.to_vec();
    plus[i] += h;
    let mut minus = x.to_vec();
    minus[i] -= h;
    (f(&plus) - f(&minus)) / (2.0 * h)
}

#[test]
fn activation_gradients_match_finite_differences() {
    let cpu = CpuBackend::default();
    let bias = [0.1, -0.2, 0.3];
    // Inputs away from relu's kink, where the derivative is undefined.
    let x: Vec<f32> = values(12, 7)
        .into_iter()
        .map(|v| if v.abs() < 0.05 { v + 0.2 } else { v })
        .collect();
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
    ] {
        // loss = sum(weights ⊙ act(x + bias))
        let weights = values(12, 11);
        let loss = |x: &[f32]| {
            let mut y = x.to_vec();
            cpu.bias_activation(act, &mut y, &bias).unwrap();
            y.iter().zip(&weights).map(|(a, b)| a * b).sum::<f32>()
        };
        let mut y = x.clone();
        cpu.bias_activation(act, &mut y, &bias).unwrap();
        let mut grad = weights.clone();
        cpu.activation_backward(act, &y, &mut grad).unwrap();
        for i in 0..x.len() {
            let numeric = numeric_gradient(&x, i, loss);
            assert!(
                (grad[i] - numeric).abs() < 2e-3,
                "{act:?}[{i}]: analytic {} vs numeric {numeric}",
                grad[i]
            );
        }
    }
}

#[test]
fn loss_gradients_match_finite_differences() {
    let cpu = CpuBackend::default();
    let logits = values(12, 3);
    let labels = [2u32, 0, 3];
    let mut grad = vec![0.0; 12];
    let loss = cpu
        .softmax_cross_entropy(&logits, &labels, 4, &mut grad)
        .unwrap();
    assert!(loss > 0.0);
    let f = |z: &[f32]| {
        cpu.softmax_cross_entropy(z, &labels, 4, &mut [0.0; 12])
            .unwrap()
    };
    for i in 0..12 {
        assert!(
            (grad[i] - numeric_gradient(&logits, i, f)).abs() < 1e-3,
            "softmax[{i}]"
        );
    }

    let targets = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let z = values(6, 4);
    let mut grad = vec![0.0; 6];
    cpu.sigmoid_binary_cross_entropy(&z, &targets, &mut grad)
        .unwrap();
    let f = |z: &[f32]| {
        cpu.sigmoid_binary_cross_entropy(z, &targets, &mut [0.0; 6])
            .unwrap()
    };
    for i in 0..6 {
        assert!(
            (grad[i] - numeric_gradient(&z, i, f)).abs() < 1e-3,
            "bce[{i}]"
        );
    }

    let pred = values(5, 5);
    let target = values(5, 6);
    let mut grad = vec![0.0; 5];
    cpu.mean_squared_error(&pred, &target, &mut grad).unwrap();
    let f = |p: &[f32]| cpu.mean_squared_error(p, &target, &mut [0.0; 5]).unwrap();
    for i in 0..5 {
        assert!(
            (grad[i] - numeric_gradient(&pred, i, f)).abs() < 1e-3,
            "mse[{i}]"
        );
    }
}

#[test]
fn losses_are_stable_for_extreme_logits() {
    let cpu = CpuBackend::default();
    let mut grad = [0.0; 4];
    let loss = cpu
        .softmax_cross_entropy(&[1000.0, -1000.0, -1000.0, 1000.0], &[0, 1], 2, &mut grad)
        .unwrap();
    assert!(loss.is_finite() && (loss - 0.0).abs() < 1e-6, "{loss}");
    let loss = cpu
        .sigmoid_binary_cross_entropy(&[100.0, -100.0], &[0.0, 1.0], &mut [0.0; 2])
        .unwrap();
    assert!((loss - 100.0).abs() < 1e-3, "{loss}");
    let err = cpu
        .softmax_cross_entropy(&[0.0; 4], &[0, 5], 2, &mut grad)
        .unwrap_err();
    assert!(err.to_string().contains("label 5 at row 1"), "{err}");
}

#[test]
fn column_sums_and_parallel_paths_agree_with_serial() {
    let cpu = CpuBackend::default();
    let cols = 7;
    let x = values(cols * 10_000, 9);
    let mut out = vec![0.0; cols];
    cpu.column_sums(&x, &mut out).unwrap();
    let mut want = vec![0.0f64; cols];
    for row in x.chunks(cols) {
        for (w, v) in want.iter_mut().zip(row) {
            *w += *v as f64;
        }
    }
    let want: Vec<f32> = want.into_iter().map(|v| v as f32).collect();
    assert_close(&out, &want, 1e-3, "column sums");
}

#[test]
fn optimizer_steps_follow_their_update_rules() {
    let cpu = CpuBackend::default();
    let grads = [0.5, -1.0];

    let mut w = [1.0, 2.0];
    let mut state = OptimizerState::default();
    cpu.optimizer_step(
        Optimizer::Sgd {
            learning_rate: 0.1,
            l2: 0.1,
        },
        &mut w,
        &grads,
        &mut state,
    )
    .unwrap();
    assert_close(
        &w,
        &[1.0 - 0.1 * (0.5 + 0.1), 2.0 - 0.1 * (-1.0 + 0.2)],
        1e-6,
        "sgd",
    );

    let mut w = [1.0, 2.0];
    let mut state = OptimizerState::new(2);
    let momentum = Optimizer::Momentum {
        learning_rate: 0.1,
        momentum: 0.9,
        l2: 0.0,
    };
    cpu.optimizer_step(momentum, &mut w, &grads, &mut state)
        .unwrap();
    cpu.optimizer_step(momentum, &mut w, &grads, &mut state)
        .unwrap();
    // v1 = g, v2 = 0.9 g + g = 1.9 g; w = w0 - 0.1 (g + 1.9 g)
    assert_close(&w, &[1.0 - 0.29 * 0.5, 2.0 + 0.29], 1e-6, "momentum");

    let mut w = [1.0, 2.0];
    let mut state = OptimizerState::new(2);
    let adam = Optimizer::Adam {
        learning_rate: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        l2: 0.0,
    };
    cpu.optimizer_step(adam, &mut w, &grads, &mut state)
        .unwrap();
    // First Adam step moves each weight by lr · sign(g) (bias-corrected m/√v = ±1).
    assert_close(&w, &[1.0 - 0.01, 2.0 + 0.01], 1e-5, "adam");
    assert_eq!(state.step, 1);
}

#[test]
fn adam_parallel_path_matches_the_serial_rule() {
    let cpu = CpuBackend::default();
    let n = PARALLEL_THRESHOLD * 2 + 3;
    let grads = values(n, 1);
    let mut w = values(n, 2);
    let start = w.clone();
    let mut state = OptimizerState::new(n);
    let adam = Optimizer::Adam {
        learning_rate: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        l2: 0.01,
    };
    cpu.optimizer_step(adam, &mut w, &grads, &mut state)
        .unwrap();
    for i in [0, n / 2, n - 1] {
        let g = grads[i] + 0.01 * start[i];
        let expected = start[i] - 0.01 * g.signum() * (g.abs() / (g.abs() + 1e-8));
        assert!((w[i] - expected).abs() < 1e-5, "adam[{i}]");
    }
}

fn naive_conv(s: &Conv2d, input: &[f32], weights: &[f32], bias: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.out_height(), s.out_width());
    let mut out = vec![0.0; s.output_len()];
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            for y in 0..oh {
                for x in 0..ow {
                    let mut acc = bias[o] as f64;
                    for c in 0..s.in_channels {
                        for ky in 0..s.kernel {
                            for kx in 0..s.kernel {
                                let iy = (y * s.stride + ky) as isize - s.padding as isize;
                                let ix = (x * s.stride + kx) as isize - s.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy as usize >= s.height
                                    || ix as usize >= s.width
                                {
                                    continue;
                                }
                                let i = ((n * s.in_channels + c) * s.height + iy as usize)
                                    * s.width
                                    + ix as usize;
                                let w = ((o * s.in_channels + c) * s.kernel + ky) * s.kernel + kx;
                                acc += input[i] as f64 * weights[w] as f64;
                            }
                        }
                    }
                    out[((n * s.out_channels + o) * oh + y) * ow + x] = acc as f32;
                }
            }
        }
    }
    out
}

fn conv_shapes() -> Vec<Conv2d> {
    vec![
        Conv2d {
            batch: 2,
            in_channels: 3,
            height: 7,
            width: 5,
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        Conv2d {
            batch: 3,
            in_channels: 1,
            height: 9,
            width: 8,
            out_channels: 2,
            kernel: 3,
            stride: 2,
            padding: 0,
        },
        Conv2d {
            batch: 1,
            in_channels: 2,
            height: 6,
            width: 6,
            out_channels: 3,
            kernel: 5,
            stride: 1,
            padding: 2,
        },
        Conv2d {
            batch: 2,
            in_channels: 2,
            height: 4,
            width: 4,
            out_channels: 1,
            kernel: 1,
            stride: 1,
            padding: 0,
        },
    ]
}

#[test]
fn conv2d_forward_matches_direct_convolution() {
    let cpu = CpuBackend::default();
    for (i, s) in conv_shapes().into_iter().enumerate() {
        let input = values(s.input_len(), 10 + i as u64);
        let weights = values(s.weight_len(), 20 + i as u64);
        let bias = values(s.out_channels, 30 + i as u64);
        let expected = naive_conv(&s, &input, &weights, &bias);
        let mut out = vec![0.0; s.output_len()];
        cpu.conv2d_forward(s, Activation::Identity, &input, &weights, &bias, &mut out)
            .unwrap();
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-4, "{s:?}: {a} vs {b}");
        }
        let mut relu = vec![0.0; s.output_len()];
        cpu.conv2d_forward(s, Activation::Relu, &input, &weights, &bias, &mut relu)
            .unwrap();
        for (a, b) in relu.iter().zip(&expected) {
            assert!((a - b.max(0.0)).abs() < 1e-4);
        }
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let cpu = CpuBackend::default();
    for (i, s) in conv_shapes().into_iter().enumerate() {
        let input = values(s.input_len(), 40 + i as u64);
        let weights = values(s.weight_len(), 50 + i as u64);
        let bias = values(s.out_channels, 60 + i as u64);
        // loss = sum(out ⊙ r): d loss / d out = r.
        let r = values(s.output_len(), 70 + i as u64);
        let loss = |input: &[f32], weights: &[f32], bias: &[f32]| -> f64 {
            let mut out = vec![0.0; s.output_len()];
            cpu.conv2d_forward(s, Activation::Identity, input, weights, bias, &mut out)
                .unwrap();
            out.iter().zip(&r).map(|(o, r)| *o as f64 * *r as f64).sum()
        };
        let (mut gi, mut gw, mut gb) = (
            vec![0.0; s.input_len()],
            vec![0.0; s.weight_len()],
            vec![0.0; s.out_channels],
        );
        cpu.conv2d_backward(s, &input, &weights, &r, Some(&mut gi), &mut gw, &mut gb)
            .unwrap();
        let h = 1e-2f32;
        let check = |analytic: &[f32], which: usize| {
            for j in (0..analytic.len()).step_by(analytic.len().div_ceil(12).max(1)) {
                let (mut x, mut w, mut b) = (input.clone(), weights.clone(), bias.clone());
                let target = match which {
                    0 => &mut x[j],
                    1 => &mut w[j],
                    _ => &mut b[j],
                };
                *target += h;
                let up = loss(&x, &w, &b);
                let target = match which {
                    0 => &mut x[j],
                    1 => &mut w[j],
                    _ => &mut b[j],
                };
                *target -= 2.0 * h;
                let down = loss(&x, &w, &b);
                let numeric = (up - down) / (2.0 * h as f64);
                assert!(
                    (numeric - analytic[j] as f64).abs() < 1e-2 * (1.0 + numeric.abs()),
                    "{s:?} tensor {which} element {j}: numeric {numeric} vs analytic {}",
                    analytic[j]
                );
            }
        };
        check(&gi, 0);
        check(&gw, 1);
        check(&gb, 2);
    }
}

#[test]
fn max_pool_picks_maxima_and_routes_gradients_to_them() {
    let cpu = CpuBackend::default();
    let s = Pool2d {
        batch: 2,
        channels: 3,
        height: 5,
        width: 4,
        size: 2,
    };
    let input = values(s.input_len(), 80);
    let mut out = vec![0.0; s.output_len()];
    let mut arg = vec![0u32; s.output_len()];
    cpu.max_pool2d_forward(s, &input, &mut out, &mut arg)
        .unwrap();
    let (oh, ow) = (s.out_height(), s.out_width());
    assert_eq!((oh, ow), (2, 2));
    for plane in 0..s.batch * s.channels {
        for y in 0..oh {
            for x in 0..ow {
                let mut best = f32::NEG_INFINITY;
                for dy in 0..2 {
                    for dx in 0..2 {
                        best = best.max(input[plane * 20 + (2 * y + dy) * 4 + 2 * x + dx]);
                    }
                }
                assert_eq!(out[plane * 4 + y * ow + x], best);
            }
        }
    }
    // Gradient: d/dx sum(pool(x) ⊙ r), by finite differences (values are distinct).
    let r = values(s.output_len(), 81);
    let mut grad = vec![0.0; s.input_len()];
    cpu.max_pool2d_backward(s, &r, &arg, &mut grad).unwrap();
    let loss = |x: &[f32]| -> f64 {
        let mut o = vec![0.0; s.output_len()];
        let mut a = vec![0u32; s.output_len()];
        cpu.max_pool2d_forward(s, x, &mut o, &mut a).unwrap();
        o.iter().zip(&r).map(|(o, r)| *o as f64 * *r as f64).sum()
    };
    for j in 0..s.input_len() {
        let h = 1e-4f32;
        let mut up = input.clone();
        up[j] += h;
        let mut down = input.clone();
        down[j] -= h;
        let numeric = (loss(&up) - loss(&down)) / (2.0 * h as f64);
        assert!(
            (numeric - grad[j] as f64).abs() < 1e-2,
            "element {j}: {numeric} vs {}",
            grad[j]
        );
    }
}
