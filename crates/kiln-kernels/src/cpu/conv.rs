//! Convolution as im2col + GEMM per image, and max pooling, on the CPU.

use rayon::prelude::*;

use super::CpuBackend;
use crate::{Activation, Backend, Conv2d, Gemm, Pool2d, Result};

/// Unfolds image `image` (`in_channels × h × w`) into `col`
/// (`patch_len × out_h·out_w`): column `p` holds the receptive field of output pixel `p`.
fn im2col(s: &Conv2d, image: &[f32], col: &mut [f32]) {
    let (oh, ow) = (s.out_height(), s.out_width());
    let k = s.kernel;
    for c in 0..s.in_channels {
        for ky in 0..k {
            for kx in 0..k {
                let row = (c * k + ky) * k + kx;
                let out_row = &mut col[row * oh * ow..(row + 1) * oh * ow];
                for y in 0..oh {
                    let iy = (y * s.stride + ky) as isize - s.padding as isize;
                    for x in 0..ow {
                        let ix = (x * s.stride + kx) as isize - s.padding as isize;
                        out_row[y * ow + x] = if iy >= 0
                            && ix >= 0
                            && (iy as usize) < s.height
                            && (ix as usize) < s.width
                        {
                            image[(c * s.height + iy as usize) * s.width + ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back into the image.
fn col2im(s: &Conv2d, col: &[f32], image: &mut [f32]) {
    let (oh, ow) = (s.out_height(), s.out_width());
    let k = s.kernel;
    for c in 0..s.in_channels {
        for ky in 0..k {
            for kx in 0..k {
                let row = (c * k + ky) * k + kx;
                let col_row = &col[row * oh * ow..(row + 1) * oh * ow];
                for y in 0..oh {
                    let iy = (y * s.stride + ky) as isize - s.padding as isize;
                    if iy < 0 || iy as usize >= s.height {
                        continue;
                    }
                    for x in 0..ow {
                        let ix = (x * s.stride + kx) as isize - s.padding as isize;
                        if ix >= 0 && (ix as usize) < s.width {
                            image[(c * s.height + iy as usize) * s.width + ix as usize] +=
                                col_row[y * ow + x];
                        }
                    }
                }
            }
        }
    }
}

/// A single-threaded backend for the per-image GEMMs (images run in parallel).
const SERIAL: CpuBackend = CpuBackend { threads: 1 };

pub(super) fn forward(
    s: Conv2d,
    act: Activation,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) -> Result<()> {
    s.check_forward(input.len(), weights.len(), bias.len(), output.len())?;
    let pixels = s.out_height() * s.out_width();
    let image_len = s.in_channels * s.height * s.width;
    if s.batch == 0 || pixels == 0 {
        return Ok(());
    }
    output
        .par_chunks_mut(s.out_channels * pixels)
        .zip(input.par_chunks(image_len))
        .try_for_each_init(
            || vec![0.0f32; s.patch_len() * pixels],
            |col, (out, image)| {
                im2col(&s, image, col);
                SERIAL.gemm(
                    Gemm::new(s.out_channels, pixels, s.patch_len()),
                    weights,
                    col,
                    out,
                )?;
                for (channel, plane) in out.chunks_mut(pixels).enumerate() {
                    let b = bias[channel];
                    plane.iter_mut().for_each(|v| *v = act.apply(*v + b));
                }
                Ok(())
            },
        )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    s: Conv2d,
    input: &[f32],
    weights: &[f32],
    grad_output: &[f32],
    mut grad_input: Option<&mut [f32]>,
    grad_weights: &mut [f32],
    grad_bias: &mut [f32],
) -> Result<()> {
    if !s.begin_backward(
        input,
        weights,
        grad_output,
        grad_input.as_deref_mut(),
        grad_weights,
        grad_bias,
    )? {
        return Ok(());
    }
    let pixels = s.out_height() * s.out_width();
    let image_len = s.in_channels * s.height * s.width;
    let out_image = s.out_channels * pixels;
    // Weight and bias gradients: per-image partial sums, reduced in image order.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = input
        .par_chunks(image_len)
        .zip(grad_output.par_chunks(out_image))
        .map(|(image, grad)| -> Result<(Vec<f32>, Vec<f32>)> {
            let mut col = vec![0.0f32; s.patch_len() * pixels];
            im2col(&s, image, &mut col);
            let mut gw = vec![0.0f32; s.weight_len()];
            SERIAL.gemm(
                Gemm::new(s.out_channels, s.patch_len(), pixels).trans_b(),
                grad,
                &col,
                &mut gw,
            )?;
            let gb = grad
                .chunks(pixels)
                .map(|plane| plane.iter().sum())
                .collect();
            Ok((gw, gb))
        })
        .collect::<Result<_>>()?;
    for (gw, gb) in &partials {
        grad_weights.iter_mut().zip(gw).for_each(|(a, b)| *a += b);
        grad_bias.iter_mut().zip(gb).for_each(|(a, b)| *a += b);
    }
    if let Some(grad_input) = grad_input {
        grad_input
            .par_chunks_mut(image_len)
            .zip(grad_output.par_chunks(out_image))
            .try_for_each_init(
                || vec![0.0f32; s.patch_len() * pixels],
                |col, (image_grad, grad)| {
                    SERIAL.gemm(
                        Gemm::new(s.patch_len(), pixels, s.out_channels).trans_a(),
                        weights,
                        grad,
                        col,
                    )?;
                    image_grad.iter_mut().for_each(|g| *g = 0.0);
                    col2im(&s, col, image_grad);
                    Ok(())
                },
            )?;
    }
    Ok(())
}

pub(super) fn max_pool_forward(
    s: Pool2d,
    input: &[f32],
    output: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    s.check_forward(input.len(), output.len(), argmax.len())?;
    let (oh, ow) = (s.out_height(), s.out_width());
    let plane = s.height * s.width;
    if oh * ow == 0 {
        return Ok(());
    }
    output
        .par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(index, (out, arg))| {
            let base = index * plane;
            for y in 0..oh {
                for x in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    let mut at = base + (y * s.size) * s.width + x * s.size;
                    for dy in 0..s.size {
                        for dx in 0..s.size {
                            let i = base + (y * s.size + dy) * s.width + x * s.size + dx;
                            if input[i] > best {
                                best = input[i];
                                at = i;
                            }
                        }
                    }
                    out[y * ow + x] = best;
                    arg[y * ow + x] = (at - base) as u32;
                }
            }
        });
    Ok(())
}

pub(super) fn max_pool_backward(
    s: Pool2d,
    grad_output: &[f32],
    argmax: &[u32],
    grad_input: &mut [f32],
) -> Result<()> {
    s.check_backward(grad_output.len(), argmax.len(), grad_input.len())?;
    let pooled = s.out_height() * s.out_width();
    let plane = s.height * s.width;
    grad_input.iter_mut().for_each(|g| *g = 0.0);
    if pooled == 0 {
        return Ok(());
    }
    grad_input
        .par_chunks_mut(plane)
        .zip(
            grad_output
                .par_chunks(pooled)
                .zip(argmax.par_chunks(pooled)),
        )
        .for_each(|(grad_in, (grad_out, arg))| {
            for (g, &at) in grad_out.iter().zip(arg) {
                grad_in[at as usize] += g;
            }
        });
    Ok(())
}
