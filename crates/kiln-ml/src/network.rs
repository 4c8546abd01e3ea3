//! Feed-forward networks over the kernels: an optional convolutional front
//! (convolution + activation + max pooling per stage, for image features)
//! and dense layers, with all parameters in one flat vector (so averaging,
//! optimizer steps and files see one tensor per layer without copies).

use kiln_kernels::{Activation, Backend, Conv2d, Gemm, Pool2d};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One dense layer: `y = act(x · W + b)`, `W` is `inputs × outputs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    #[serde(with = "crate::serde_activation")]
    pub activation: Activation,
}

impl Dense {
    pub fn param_count(&self) -> usize {
        self.inputs * self.outputs + self.outputs
    }
}

/// Convolution stages in front of the dense layers: each stage is a
/// `kernel × kernel` convolution (stride 1, "same" zero padding), the
/// activation, then `pool × pool` max pooling. Rows are images of
/// `input = [channels, height, width]` values, channel-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvFront {
    pub input: [usize; 3],
    /// `(filters, kernel)` per stage.
    pub stages: Vec<(usize, usize)>,
    pub pool: usize,
    #[serde(with = "crate::serde_activation")]
    pub activation: Activation,
}

/// The shapes of one stage for a batch of `rows` images.
#[derive(Debug, Clone, Copy)]
struct Stage {
    conv: Conv2d,
    pool: Option<Pool2d>,
}

impl ConvFront {
    fn stages(&self, rows: usize) -> Vec<Stage> {
        let [mut channels, mut height, mut width] = self.input;
        self.stages
            .iter()
            .map(|&(filters, kernel)| {
                let conv = Conv2d {
                    batch: rows,
                    in_channels: channels,
                    height,
                    width,
                    out_channels: filters,
                    kernel,
                    stride: 1,
                    padding: kernel / 2,
                };
                (channels, height, width) = (filters, conv.out_height(), conv.out_width());
                let pool = (self.pool > 1).then_some(Pool2d {
                    batch: rows,
                    channels,
                    height,
                    width,
                    size: self.pool,
                });
                if let Some(p) = pool {
                    (height, width) = (p.out_height(), p.out_width());
                }
                Stage { conv, pool }
            })
            .collect()
    }

    /// Values per image entering the dense layers (0 if pooling shrinks an image away).
    pub fn output_len(&self) -> usize {
        self.stages(1)
            .last()
            .map(|s| match s.pool {
                Some(p) => p.output_len(),
                None => s.conv.output_len(),
            })
            .unwrap_or(self.input.iter().product())
    }

    /// Values per input image.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    fn param_count(&self) -> usize {
        self.stages(1)
            .iter()
            .map(|s| s.conv.weight_len() + s.conv.out_channels)
            .sum()
    }
}

/// A stack of dense layers (after an optional convolutional front) and their parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<ConvFront>,
    pub layers: Vec<Dense>,
    #[serde(skip)]
    pub params: Vec<f32>,
}

/// The activations of one forward pass, kept for the backward pass.
pub struct ForwardPass {
    /// `outputs[i]` is layer i's output (`rows × layers[i].outputs`); the last is the logits.
    pub outputs: Vec<Vec<f32>>,
    /// Inverted-dropout masks of the hidden layers (empty when not training with dropout).
    masks: Vec<Vec<f32>>,
    /// Per convolution stage: its activated output, then its pooled output and argmax.
    conv: Vec<StageOutput>,
}

type StageOutput = (Vec<f32>, Option<(Vec<f32>, Vec<u32>)>);

/// What a stage hands to the next one: pooled if it pools, else activated.
fn handed_on(stage: &StageOutput) -> &[f32] {
    match stage {
        (_, Some((pooled, _))) => pooled,
        (activated, None) => activated,
    }
}

impl ForwardPass {
    pub fn logits(&self) -> &[f32] {
        self.outputs.last().map(Vec::as_slice).unwrap_or(&[])
    }
}

impl Network {
    /// `inputs → hidden… → outputs`, hidden layers with `activation`, the
    /// output layer linear (the loss applies the link). Weights are drawn
    /// Glorot-uniform from `seed`; biases start at zero.
    pub fn new(
        inputs: usize,
        hidden: &[usize],
        outputs: usize,
        activation: Activation,
        seed: u64,
    ) -> Self {
        let mut layers = Vec::new();
        let mut width = inputs;
        for &h in hidden {
            layers.push(Dense {
                inputs: width,
                outputs: h,
                activation,
            });
            width = h;
        }
        layers.push(Dense {
            inputs: width,
            outputs,
            activation: Activation::Identity,
        });
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::with_capacity(layers.iter().map(Dense::param_count).sum());
        Self::init_dense(&layers, &mut rng, &mut params);
        Self {
            conv: None,
            layers,
            params,
        }
    }

    /// A convolutional network: `front`, then dense `hidden` layers and
    /// `outputs`. Convolution weights are He-uniform from `seed`.
    pub fn with_conv_front(
        front: ConvFront,
        hidden: &[usize],
        outputs: usize,
        activation: Activation,
        seed: u64,
    ) -> Self {
        let dense = Self::new(front.output_len(), hidden, outputs, activation, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x636e_6e00);
        let mut params = Vec::with_capacity(front.param_count() + dense.params.len());
        for stage in front.stages(1) {
            let fan_in = stage.conv.patch_len() as f32;
            let limit = (6.0 / fan_in).sqrt();
            params.extend((0..stage.conv.weight_len()).map(|_| rng.gen_range(-limit..limit)));
            params.extend(std::iter::repeat_n(0.0, stage.conv.out_channels));
        }
        params.extend(dense.params);
        Self {
            conv: Some(front),
            layers: dense.layers,
            params,
        }
    }

    fn init_dense(layers: &[Dense], rng: &mut ChaCha8Rng, params: &mut Vec<f32>) {
        for layer in layers {
            let limit = (6.0 / (layer.inputs + layer.outputs) as f32).sqrt();
            params.extend((0..layer.inputs * layer.outputs).map(|_| rng.gen_range(-limit..limit)));
            params.extend(std::iter::repeat_n(0.0, layer.outputs));
        }
    }

    pub fn inputs(&self) -> usize {
        match &self.conv {
            Some(front) => front.input_len(),
            None => self.layers.first().map_or(0, |l| l.inputs),
        }
    }

    /// Per convolution stage: weight shape `[out, in, k, k]` and the
    /// `(weights, bias)` ranges in `params`.
    pub fn conv_ranges(&self) -> Vec<([usize; 4], std::ops::Range<usize>, std::ops::Range<usize>)> {
        let Some(front) = &self.conv else {
            return vec![];
        };
        let mut offset = 0;
        front
            .stages(1)
            .iter()
            .map(|stage| {
                let c = stage.conv;
                let w = offset..offset + c.weight_len();
                let b = w.end..w.end + c.out_channels;
                offset = b.end;
                ([c.out_channels, c.in_channels, c.kernel, c.kernel], w, b)
            })
            .collect()
    }

    fn conv_param_count(&self) -> usize {
        self.conv.as_ref().map_or(0, ConvFront::param_count)
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// `(weights, bias)` ranges of layer `i` in `params`.
    pub fn layer_ranges(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let start: usize = self.conv_param_count()
            + self.layers[..i]
                .iter()
                .map(Dense::param_count)
                .sum::<usize>();
        let layer = self.layers[i];
        let w_end = start + layer.inputs * layer.outputs;
        (start..w_end, w_end..w_end + layer.outputs)
    }

    /// Forward pass over `rows` rows of `x`. With `dropout > 0` and an RNG,
    /// hidden outputs are dropped with that probability (inverted dropout).
    pub fn forward(
        &self,
        backend: &dyn Backend,
        x: &[f32],
        rows: usize,
        dropout: Option<(f32, &mut ChaCha8Rng)>,
    ) -> Result<ForwardPass> {
        let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        let mut masks = Vec::new();
        let mut dropout = dropout;
        let conv = self.conv_forward(backend, x, rows)?;
        let dense_input: &[f32] = conv.last().map_or(x, handed_on);
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = self.layer_ranges(i);
            let input: &[f32] = if i == 0 { dense_input } else { &outputs[i - 1] };
            let mut out = vec![0.0; rows * layer.outputs];
            backend.gemm(
                Gemm::new(rows, layer.outputs, layer.inputs),
                input,
                &self.params[w],
                &mut out,
            )?;
            backend.bias_activation(layer.activation, &mut out, &self.params[b])?;
            let hidden = i + 1 < self.layers.len();
            if let (true, Some((p, rng))) = (hidden, dropout.as_mut()) {
                if *p > 0.0 {
                    let keep = 1.0 - *p;
                    let mask: Vec<f32> = (0..out.len())
                        .map(|_| {
                            if rng.gen::<f32>() < keep {
                                1.0 / keep
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    out.iter_mut().zip(&mask).for_each(|(o, m)| *o *= m);
                    masks.push(mask);
                }
            }
            outputs.push(out);
        }
        Ok(ForwardPass {
            outputs,
            masks,
            conv,
        })
    }

    fn conv_forward(
        &self,
        backend: &dyn Backend,
        x: &[f32],
        rows: usize,
    ) -> Result<Vec<StageOutput>> {
        let Some(front) = &self.conv else {
            return Ok(vec![]);
        };
        let mut stages: Vec<StageOutput> = Vec::new();
        let mut offset = 0;
        for stage in front.stages(rows) {
            let input: &[f32] = stages.last().map_or(x, handed_on);
            let (w, b) = (stage.conv.weight_len(), stage.conv.out_channels);
            let mut activated = vec![0.0; stage.conv.output_len()];
            backend.conv2d_forward(
                stage.conv,
                front.activation,
                input,
                &self.params[offset..offset + w],
                &self.params[offset + w..offset + w + b],
                &mut activated,
            )?;
            offset += w + b;
            let pooled = match stage.pool {
                Some(pool) => {
                    let mut out = vec![0.0; pool.output_len()];
                    let mut argmax = vec![0u32; pool.output_len()];
                    backend.max_pool2d_forward(pool, &activated, &mut out, &mut argmax)?;
                    Some((out, argmax))
                }
                None => None,
            };
            stages.push((activated, pooled));
        }
        Ok(stages)
    }

    /// Gradients of the loss with respect to every parameter, given the
    /// forward pass and `d loss / d logits`.
    pub fn backward(
        &self,
        backend: &dyn Backend,
        x: &[f32],
        rows: usize,
        pass: &ForwardPass,
        logits_grad: Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut grads = vec![0.0; self.params.len()];
        let mut delta = logits_grad;
        let dense_input: &[f32] = pass.conv.last().map_or(x, handed_on);
        for i in (0..self.layers.len()).rev() {
            let layer = self.layers[i];
            let (w, b) = self.layer_ranges(i);
            let input: &[f32] = if i == 0 {
                dense_input
            } else {
                &pass.outputs[i - 1]
            };
            backend.gemm(
                Gemm::new(layer.inputs, layer.outputs, rows).trans_a(),
                input,
                &delta,
                &mut grads[w.clone()],
            )?;
            backend.column_sums(&delta, &mut grads[b])?;
            if i == 0 && self.conv.is_none() {
                break;
            }
            // d loss / d (this layer's input).
            let mut upstream = vec![0.0; rows * layer.inputs];
            backend.gemm(
                Gemm::new(rows, layer.inputs, layer.outputs).trans_b(),
                &delta,
                &self.params[w],
                &mut upstream,
            )?;
            if i == 0 {
                self.conv_backward(backend, x, rows, pass, upstream, &mut grads)?;
                break;
            }
            if let Some(mask) = pass.masks.get(i - 1) {
                upstream.iter_mut().zip(mask).for_each(|(u, m)| *u *= m);
            }
            let below = self.layers[i - 1];
            // Derivatives come from the layer's pre-dropout output: where
            // the mask dropped a unit, `upstream` is already zero.
            let y: Vec<f32> = match pass.masks.get(i - 1) {
                Some(mask) => pass.outputs[i - 1]
                    .iter()
                    .zip(mask)
                    .map(|(o, m)| if *m > 0.0 { o / m } else { 0.0 })
                    .collect(),
                None => pass.outputs[i - 1].clone(),
            };
            backend.activation_backward(below.activation, &y, &mut upstream)?;
            delta = upstream;
        }
        Ok(grads)
    }

    /// Backpropagates `grad` (d loss / d front output) through the
    /// convolution stages, writing their parameter gradients.
    fn conv_backward(
        &self,
        backend: &dyn Backend,
        x: &[f32],
        rows: usize,
        pass: &ForwardPass,
        grad: Vec<f32>,
        grads: &mut [f32],
    ) -> Result<()> {
        let Some(front) = &self.conv else {
            return Ok(());
        };
        let stages = front.stages(rows);
        let mut offsets = Vec::with_capacity(stages.len());
        let mut offset = 0;
        for stage in &stages {
            offsets.push(offset);
            offset += stage.conv.weight_len() + stage.conv.out_channels;
        }
        let mut grad = grad;
        for (index, stage) in stages.iter().enumerate().rev() {
            let (activated, pooled) = &pass.conv[index];
            let mut grad_activated = match (stage.pool, pooled) {
                (Some(pool), Some((_, argmax))) => {
                    let mut g = vec![0.0; pool.input_len()];
                    backend.max_pool2d_backward(pool, &grad, argmax, &mut g)?;
                    g
                }
                _ => grad,
            };
            backend.activation_backward(front.activation, activated, &mut grad_activated)?;
            let input: &[f32] = index
                .checked_sub(1)
                .map_or(x, |below| handed_on(&pass.conv[below]));
            let (w, b) = (stage.conv.weight_len(), stage.conv.out_channels);
            let start = offsets[index];
            let (weight_grads, rest) = grads[start..start + w + b].split_at_mut(w);
            let mut grad_input = (index > 0).then(|| vec![0.0; stage.conv.input_len()]);
            backend.conv2d_backward(
                stage.conv,
                input,
                &self.params[start..start + w],
                &grad_activated,
                grad_input.as_deref_mut(),
                weight_grads,
                rest,
            )?;
            match grad_input {
                Some(g) => grad = g,
                None => break,
            }
        }
        Ok(())
    }
}
