//! Feed-forward networks over the kernels: dense layers whose parameters live
//! in one flat vector (so averaging, optimizer steps and files see one tensor
//! per layer without copies).

use kiln_kernels::{Activation, Backend, Gemm};
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

/// A stack of dense layers and their parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
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
        for layer in &layers {
            let limit = (6.0 / (layer.inputs + layer.outputs) as f32).sqrt();
            params.extend((0..layer.inputs * layer.outputs).map(|_| rng.gen_range(-limit..limit)));
            params.extend(std::iter::repeat_n(0.0, layer.outputs));
        }
        Self { layers, params }
    }

    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// `(weights, bias)` ranges of layer `i` in `params`.
    pub fn layer_ranges(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let start: usize = self.layers[..i].iter().map(Dense::param_count).sum();
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
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = self.layer_ranges(i);
            let input: &[f32] = if i == 0 { x } else { &outputs[i - 1] };
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
        Ok(ForwardPass { outputs, masks })
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
        for i in (0..self.layers.len()).rev() {
            let layer = self.layers[i];
            let (w, b) = self.layer_ranges(i);
            let input: &[f32] = if i == 0 { x } else { &pass.outputs[i - 1] };
            backend.gemm(
                Gemm::new(layer.inputs, layer.outputs, rows).trans_a(),
                input,
                &delta,
                &mut grads[w.clone()],
            )?;
            backend.column_sums(&delta, &mut grads[b])?;
            if i > 0 {
                let mut upstream = vec![0.0; rows * layer.inputs];
                backend.gemm(
                    Gemm::new(rows, layer.inputs, layer.outputs).trans_b(),
                    &delta,
                    &self.params[w],
                    &mut upstream,
                )?;
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
        }
        Ok(grads)
    }
}
