//! The CPU backend: GEMM from the `gemm` crate (packed, SIMD, rayon-parallel
//! for large shapes), everything else as fused single passes, rayon-parallel
//! above a size threshold. The reference for every other backend.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::sigmoid;
use crate::error::{check_pointwise_loss, check_rows, check_softmax_cross_entropy, expect_len};
use crate::{Activation, Backend, Conv2d, Gemm, Optimizer, OptimizerState, Pool2d, Result};

mod conv;

/// Below this many elements, elementwise kernels stay on one thread.
const PARALLEL_THRESHOLD: usize = 1 << 15;
/// Rows (or elements) per rayon task for elementwise kernels.
const CHUNK: usize = 1 << 13;
/// Below this many multiply-adds, GEMM stays on one thread.
const GEMM_PARALLEL_THRESHOLD: f64 = 1.0e6;

/// Kernels on the host CPU. `threads = 0` uses rayon's global pool size.
#[derive(Debug, Clone, Default)]
pub struct CpuBackend {
    pub threads: usize,
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn gemm(&self, spec: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        let Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha,
            beta,
        } = spec;
        expect_len("gemm", "A", m * k, a.len())?;
        expect_len("gemm", "B", k * n, b.len())?;
        expect_len("gemm", "C", m * n, c.len())?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        // Row-major A (m × k): column stride 1, row stride k; stored transposed
        // (k × m): element (i, p) lives at p·m + i.
        let (a_cs, a_rs) = if trans_a {
            (m as isize, 1)
        } else {
            (1, k as isize)
        };
        let (b_cs, b_rs) = if trans_b {
            (k as isize, 1)
        } else {
            (1, n as isize)
        };
        let parallelism = if spec.flops() / 2.0 < GEMM_PARALLEL_THRESHOLD {
            Parallelism::None
        } else {
            Parallelism::Rayon(self.threads)
        };
        if beta != 0.0 && beta != 1.0 {
            c.iter_mut().for_each(|x| *x *= beta);
        }
        // SAFETY: the lengths were checked above against the strides used, so
        // every index the kernel forms is inside its slice; `c` is borrowed
        // mutably and does not alias `a` or `b`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                beta != 0.0,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                alpha,
                false,
                false,
                false,
                parallelism,
            );
        }
        Ok(())
    }

    fn bias_activation(&self, act: Activation, x: &mut [f32], bias: &[f32]) -> Result<()> {
        let cols = bias.len();
        check_rows(
            "bias_activation",
            "x (a multiple of the bias length)",
            x.len(),
            cols,
        )?;
        let row = |r: &mut [f32]| {
            for (v, b) in r.iter_mut().zip(bias) {
                *v = act.apply(*v + b);
            }
        };
        if x.len() < PARALLEL_THRESHOLD {
            x.chunks_mut(cols).for_each(row);
        } else {
            x.par_chunks_mut(cols)
                .with_min_len(CHUNK / cols + 1)
                .for_each(row);
        }
        Ok(())
    }

    fn activation_backward(&self, act: Activation, y: &[f32], grad: &mut [f32]) -> Result<()> {
        expect_len("activation_backward", "grad", y.len(), grad.len())?;
        if act == Activation::Identity {
            return Ok(());
        }
        let apply = |(g, y): (&mut f32, &f32)| *g *= act.derivative_from_output(*y);
        if y.len() < PARALLEL_THRESHOLD {
            grad.iter_mut().zip(y).for_each(apply);
        } else {
            grad.par_iter_mut()
                .zip(y.par_iter())
                .with_min_len(CHUNK)
                .for_each(apply);
        }
        Ok(())
    }

    fn column_sums(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let cols = out.len();
        check_rows(
            "column_sums",
            "x (a multiple of the output length)",
            x.len(),
            cols,
        )?;
        let sum_rows = |rows: &[f32]| {
            let mut acc = vec![0.0f32; cols];
            for row in rows.chunks(cols) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        };
        let sums = if x.len() < PARALLEL_THRESHOLD {
            sum_rows(x)
        } else {
            let rows_per_task = (CHUNK / cols).max(1) * cols;
            x.par_chunks(rows_per_task).map(sum_rows).reduce(
                || vec![0.0; cols],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
        };
        out.copy_from_slice(&sums);
        Ok(())
    }

    fn softmax_cross_entropy(
        &self,
        logits: &[f32],
        labels: &[u32],
        classes: usize,
        grad: &mut [f32],
    ) -> Result<f32> {
        check_softmax_cross_entropy(labels, classes, logits.len(), grad.len())?;
        let rows = labels.len();
        if rows == 0 {
            return Ok(0.0);
        }
        let scale = 1.0 / rows as f32;
        let loss_of_row = |(row, (z, g)): (usize, (&[f32], &mut [f32]))| -> f64 {
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for (gi, zi) in g.iter_mut().zip(z) {
                *gi = (zi - max).exp();
                sum += *gi;
            }
            let label = labels[row] as usize;
            for gi in g.iter_mut() {
                *gi /= sum;
            }
            let p = g[label].max(f32::MIN_POSITIVE);
            g[label] -= 1.0;
            g.iter_mut().for_each(|gi| *gi *= scale);
            -(p.ln() as f64)
        };
        let pairs = logits.chunks(classes).zip(grad.chunks_mut(classes));
        let total: f64 = if logits.len() < PARALLEL_THRESHOLD {
            pairs.enumerate().map(loss_of_row).sum()
        } else {
            logits
                .par_chunks(classes)
                .zip(grad.par_chunks_mut(classes))
                .enumerate()
                .with_min_len(CHUNK / classes + 1)
                .map(loss_of_row)
                .sum()
        };
        Ok((total / rows as f64) as f32)
    }

    fn sigmoid_binary_cross_entropy(
        &self,
        logits: &[f32],
        targets: &[f32],
        grad: &mut [f32],
    ) -> Result<f32> {
        check_pointwise_loss(
            "sigmoid_binary_cross_entropy",
            "targets",
            logits.len(),
            targets.len(),
            grad.len(),
        )?;
        if logits.is_empty() {
            return Ok(0.0);
        }
        let scale = 1.0 / logits.len() as f32;
        // log(1 + e^-|z|) + max(z, 0) - z·t is the numerically stable form.
        let one = |((z, t), g): ((&f32, &f32), &mut f32)| -> f64 {
            *g = (sigmoid(*z) - t) * scale;
            ((-z.abs()).exp().ln_1p() + z.max(0.0) - z * t) as f64
        };
        let total: f64 = if logits.len() < PARALLEL_THRESHOLD {
            logits
                .iter()
                .zip(targets)
                .zip(grad.iter_mut())
                .map(one)
                .sum()
        } else {
            logits
                .par_iter()
                .zip(targets.par_iter())
                .zip(grad.par_iter_mut())
                .with_min_len(CHUNK)
                .map(one)
                .sum()
        };
        Ok((total * scale as f64) as f32)
    }

    fn mean_squared_error(&self, pred: &[f32], target: &[f32], grad: &mut [f32]) -> Result<f32> {
        check_pointwise_loss(
            "mean_squared_error",
            "target",
            pred.len(),
            target.len(),
            grad.len(),
        )?;
        if pred.is_empty() {
            return Ok(0.0);
        }
        let scale = 2.0 / pred.len() as f32;
        let one = |((p, t), g): ((&f32, &f32), &mut f32)| -> f64 {
            let d = p - t;
            *g = d * scale;
            (d * d) as f64
        };
        let total: f64 = if pred.len() < PARALLEL_THRESHOLD {
            pred.iter().zip(target).zip(grad.iter_mut()).map(one).sum()
        } else {
            pred.par_iter()
                .zip(target.par_iter())
                .zip(grad.par_iter_mut())
                .with_min_len(CHUNK)
                .map(one)
                .sum()
        };
        Ok((total / pred.len() as f64) as f32)
    }

    fn conv2d_forward(
        &self,
        shape: Conv2d,
        act: Activation,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        output: &mut [f32],
    ) -> Result<()> {
        conv::forward(shape, act, input, weights, bias, output)
    }

    fn conv2d_backward(
        &self,
        shape: Conv2d,
        input: &[f32],
        weights: &[f32],
        grad_output: &[f32],
        grad_input: Option<&mut [f32]>,
        grad_weights: &mut [f32],
        grad_bias: &mut [f32],
    ) -> Result<()> {
        conv::backward(
            shape,
            input,
            weights,
            grad_output,
            grad_input,
            grad_weights,
            grad_bias,
        )
    }

    fn max_pool2d_forward(
        &self,
        shape: Pool2d,
        input: &[f32],
        output: &mut [f32],
        argmax: &mut [u32],
    ) -> Result<()> {
        conv::max_pool_forward(shape, input, output, argmax)
    }

    fn max_pool2d_backward(
        &self,
        shape: Pool2d,
        grad_output: &[f32],
        argmax: &[u32],
        grad_input: &mut [f32],
    ) -> Result<()> {
        conv::max_pool_backward(shape, grad_output, argmax, grad_input)
    }

    fn optimizer_step(
        &self,
        optimizer: Optimizer,
        params: &mut [f32],
        grads: &[f32],
        state: &mut OptimizerState,
    ) -> Result<()> {
        let n = params.len();
        expect_len("optimizer_step", "grads", n, grads.len())?;
        state.step += 1;
        match optimizer {
            Optimizer::Sgd { learning_rate, l2 } => {
                let step = |(w, g): (&mut f32, &f32)| *w -= learning_rate * (g + l2 * *w);
                if n < PARALLEL_THRESHOLD {
                    params.iter_mut().zip(grads).for_each(step);
                } else {
                    params
                        .par_iter_mut()
                        .zip(grads.par_iter())
                        .with_min_len(CHUNK)
                        .for_each(step);
                }
            }
            Optimizer::Momentum {
                learning_rate,
                momentum,
                l2,
            } => {
                state.first_moment.resize(n, 0.0);
                let step = |((w, v), g): ((&mut f32, &mut f32), &f32)| {
                    *v = momentum * *v + g + l2 * *w;
                    *w -= learning_rate * *v;
                };
                if n < PARALLEL_THRESHOLD {
                    params
                        .iter_mut()
                        .zip(state.first_moment.iter_mut())
                        .zip(grads)
                        .for_each(step);
                } else {
                    params
                        .par_iter_mut()
                        .zip(state.first_moment.par_iter_mut())
                        .zip(grads.par_iter())
                        .with_min_len(CHUNK)
                        .for_each(step);
                }
            }
            Optimizer::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
                l2,
            } => {
                state.first_moment.resize(n, 0.0);
                state.second_moment.resize(n, 0.0);
                let t = state.step as i32;
                let correction1 = 1.0 - beta1.powi(t);
                let correction2 = 1.0 - beta2.powi(t);
                let step = |(((w, m), v), g): (((&mut f32, &mut f32), &mut f32), &f32)| {
                    let g = g + l2 * *w;
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    let m_hat = *m / correction1;
                    let v_hat = *v / correction2;
                    *w -= learning_rate * m_hat / (v_hat.sqrt() + epsilon);
                };
                if n < PARALLEL_THRESHOLD {
                    params
                        .iter_mut()
                        .zip(state.first_moment.iter_mut())
                        .zip(state.second_moment.iter_mut())
                        .zip(grads)
                        .for_each(step);
                } else {
                    params
                        .par_iter_mut()
                        .zip(state.first_moment.par_iter_mut())
                        .zip(state.second_moment.par_iter_mut())
                        .zip(grads.par_iter())
                        .with_min_len(CHUNK)
                        .for_each(step);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
