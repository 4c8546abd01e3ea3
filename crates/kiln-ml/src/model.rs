//! A model: its type, task, parameters, loss and prediction.

use kiln_kernels::Backend;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Targets};
use crate::network::{ConvFront, Network};
use crate::options::{ModelType, TaskChoice, TrainOptions};
use crate::standardize::Standardization;
use crate::{MlError, Result};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Regression,
    BinaryClassification,
    MulticlassClassification { classes: usize },
    Clustering { k: usize },
}

/// Model parameters plus everything needed to use them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub model_type: ModelType,
    pub task: Task,
    /// Feature width (after vectors are flattened).
    pub dims: usize,
    /// The network of the gradient-trained types.
    pub network: Option<Network>,
    /// kmeans centroids, `k × dims`.
    #[serde(skip)]
    pub centroids: Vec<f32>,
    /// Applied to the features (and a regression label) around the network:
    /// the network's parameters are in standardized units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardization: Option<Standardization>,
}

/// Predictions for a batch: one value per row (a regression value, a class
/// index or a cluster index), plus class probabilities for classifiers
/// (`rows × 1` for binary: P(class 1); `rows × classes` for multiclass).
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub values: Vec<f32>,
    pub probabilities: Option<Vec<f32>>,
}

impl Model {
    /// A freshly initialised model. `classes` is the number of distinct labels
    /// for classifiers (`None` for regression labels).
    pub fn new(
        model_type: ModelType,
        dims: usize,
        classes: Option<usize>,
        options: &TrainOptions,
    ) -> Result<Self> {
        if dims == 0 {
            return Err(MlError::InvalidData(
                "the model needs at least one feature column".into(),
            ));
        }
        let task = match (model_type, classes) {
            (ModelType::Kmeans, _) => Task::Clustering { k: options.k },
            (ModelType::LinearRegression, _) => Task::Regression,
            (ModelType::Mlp | ModelType::Cnn, _) if options.task == Some(TaskChoice::Regression) => Task::Regression,
            (ModelType::Mlp | ModelType::Cnn, None) if options.task != Some(TaskChoice::Classification) => Task::Regression,
            (_, Some(n)) if n < 2 => {
                return Err(MlError::InvalidData(format!(
                    "the label has {n} class; classification needs at least two"
                )))
            }
            (ModelType::LogisticRegression, Some(2)) => Task::BinaryClassification,
            (ModelType::LogisticRegression, Some(n)) => {
                return Err(MlError::InvalidData(format!(
                    "logistic_regression is binary but the label has {n} classes; use softmax_regression"
                )))
            }
            (ModelType::Mlp | ModelType::Cnn, Some(2)) => Task::BinaryClassification,
            (ModelType::SoftmaxRegression | ModelType::Mlp | ModelType::Cnn, Some(n)) => Task::MulticlassClassification { classes: n },
            (_, None) => {
                return Err(MlError::InvalidData(format!(
                    "{model_type} needs a class label (integer, boolean or string)"
                )))
            }
        };
        let outputs = match task {
            Task::Regression | Task::BinaryClassification => 1,
            Task::MulticlassClassification { classes } => classes,
            Task::Clustering { .. } => 0,
        };
        let network = match model_type {
            ModelType::Kmeans => None,
            ModelType::Mlp => Some(Network::new(
                dims,
                &options.hidden_units,
                outputs,
                options.activation,
                options.seed,
            )),
            ModelType::Cnn => Some(Network::with_conv_front(
                conv_front(dims, options)?,
                &options.hidden_units,
                outputs,
                options.activation,
                options.seed,
            )),
            _ => Some(Network::new(
                dims,
                &[],
                outputs,
                options.activation,
                options.seed,
            )),
        };
        Ok(Self {
            model_type,
            task,
            dims,
            network,
            centroids: vec![],
            standardization: None,
        })
    }

    /// The parameters that rounds update and files store.
    pub fn params(&self) -> &[f32] {
        match &self.network {
            Some(n) => &n.params,
            None => &self.centroids,
        }
    }

    pub fn set_params(&mut self, params: Vec<f32>) {
        match &mut self.network {
            Some(n) => n.params = params,
            None => self.centroids = params,
        }
    }

    /// The loss of `logits` against `targets` and its gradient.
    pub fn loss(
        &self,
        backend: &dyn Backend,
        logits: &[f32],
        targets: &Targets,
        grad: &mut [f32],
    ) -> Result<f32> {
        Ok(match (self.task, targets) {
            (Task::Regression, Targets::Values(y)) => {
                backend.mean_squared_error(logits, y, grad)?
            }
            (Task::BinaryClassification, Targets::Classes(c)) => {
                let y: Vec<f32> = c.iter().map(|&c| c as f32).collect();
                backend.sigmoid_binary_cross_entropy(logits, &y, grad)?
            }
            (Task::MulticlassClassification { classes }, Targets::Classes(c)) => {
                backend.softmax_cross_entropy(logits, c, classes, grad)?
            }
            _ => {
                return Err(MlError::InvalidData(
                    "the targets do not match the model's task".into(),
                ))
            }
        })
    }

    /// Predicts every row of `batch` (targets are ignored).
    pub fn predict(&self, backend: &dyn Backend, batch: &Batch) -> Result<Predictions> {
        if batch.dims != self.dims {
            return Err(MlError::InvalidData(format!(
                "the model expects {} feature values per row, got {}",
                self.dims, batch.dims
            )));
        }
        let rows = batch.rows();
        if let Task::Clustering { k } = self.task {
            let values = (0..rows)
                .map(|r| {
                    nearest_centroid(
                        &self.centroids,
                        k,
                        &batch.features[r * self.dims..(r + 1) * self.dims],
                    )
                    .0 as f32
                })
                .collect();
            return Ok(Predictions {
                values,
                probabilities: None,
            });
        }
        let network = self
            .network
            .as_ref()
            .expect("supervised models have a network");
        let standardized = self.standardization.as_ref().map(|s| {
            let mut features = batch.features.clone();
            s.apply(&mut features);
            features
        });
        let features = standardized.as_deref().unwrap_or(&batch.features);
        let pass = network.forward(backend, features, rows, None)?;
        let logits = pass.logits();
        Ok(match self.task {
            Task::Regression => {
                let mut values = logits.to_vec();
                if let Some(s) = &self.standardization {
                    s.restore_target(&mut values);
                }
                Predictions {
                    values,
                    probabilities: None,
                }
            }
            Task::BinaryClassification => {
                let p: Vec<f32> = logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect();
                Predictions {
                    values: p
                        .iter()
                        .map(|p| if *p >= 0.5 { 1.0 } else { 0.0 })
                        .collect(),
                    probabilities: Some(p),
                }
            }
            Task::MulticlassClassification { classes } => {
                let mut probabilities = Vec::with_capacity(logits.len());
                let mut values = Vec::with_capacity(rows);
                for z in logits.chunks(classes) {
                    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let exp: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
                    let sum: f32 = exp.iter().sum();
                    let best = exp
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, v)| if *v > exp[b] { i } else { b });
                    values.push(best as f32);
                    probabilities.extend(exp.iter().map(|e| e / sum));
                }
                Predictions {
                    values,
                    probabilities: Some(probabilities),
                }
            }
            Task::Clustering { .. } => unreachable!("handled above"),
        })
    }
}

impl Model {
    /// The weights and intercepts of a linear model (no hidden layer) in the
    /// features' own units: `outputs × dims` weights then `outputs`
    /// intercepts, with any standardization folded in.
    pub fn linear_coefficients(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        let network = self.network.as_ref()?;
        if network.layers.len() != 1 || network.conv.is_some() {
            return None;
        }
        let layer = network.layers[0];
        let (w, b) = network.layer_ranges(0);
        let (weights, biases) = (&network.params[w], &network.params[b]);
        let (mut out_w, mut out_b) = (
            vec![0.0; layer.outputs * layer.inputs],
            vec![0.0; layer.outputs],
        );
        for o in 0..layer.outputs {
            let mut intercept = biases[o] as f64;
            for i in 0..layer.inputs {
                let mut weight = weights[i * layer.outputs + o] as f64;
                if let Some(s) = &self.standardization {
                    weight /= s.scale[i] as f64;
                    intercept -= weight * s.mean[i] as f64;
                }
                out_w[o * layer.inputs + i] = weight;
            }
            out_b[o] = intercept;
        }
        if let Some((mean, scale)) = self.standardization.as_ref().and_then(|s| s.target) {
            out_w.iter_mut().for_each(|w| *w *= scale as f64);
            out_b
                .iter_mut()
                .for_each(|b| *b = *b * scale as f64 + mean as f64);
        }
        Some((out_w, out_b))
    }
}

/// The convolutional front `options` describe, checked against the feature width.
fn conv_front(dims: usize, options: &TrainOptions) -> Result<ConvFront> {
    let input = options.input_shape.ok_or_else(|| {
        MlError::InvalidData(format!(
            "cnn needs input_shape = [channels, height, width] (the rows have {dims} feature values, \
             e.g. input_shape = [1, {side}, {side}] for square grey images)",
            side = (dims as f64).sqrt().round() as usize
        ))
    })?;
    let front = ConvFront {
        input,
        stages: options.conv_layers.clone(),
        pool: options.pool,
        activation: options.activation,
    };
    if front.input_len() != dims {
        return Err(MlError::InvalidData(format!(
            "input_shape {:?} holds {} values but the feature columns give {dims} per row",
            input,
            front.input_len()
        )));
    }
    if front.output_len() == 0 {
        return Err(MlError::InvalidData(format!(
            "input_shape {:?} is too small for {} convolution layer(s) with pool = {}: \
             the images shrink to nothing; use fewer layers or a smaller pool",
            input,
            front.stages.len(),
            front.pool
        )));
    }
    Ok(front)
}

/// Index and squared distance of the centroid nearest to `row`.
pub fn nearest_centroid(centroids: &[f32], k: usize, row: &[f32]) -> (usize, f32) {
    let d = row.len();
    (0..k)
        .map(|c| {
            let dist: f32 = centroids[c * d..(c + 1) * d]
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            (c, dist)
        })
        .fold(
            (0, f32::INFINITY),
            |best, cur| if cur.1 < best.1 { cur } else { best },
        )
}
