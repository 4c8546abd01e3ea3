//! `TRAIN MODEL ... OPTIONS (...)`: parsed once, validated, with defaults.

use std::fmt;

use kiln_kernels::{Activation, Optimizer};
use serde::{Deserialize, Serialize};

use crate::{MlError, Result};

/// The model types `TRAIN MODEL ... USING` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    LinearRegression,
    LogisticRegression,
    SoftmaxRegression,
    Mlp,
    Cnn,
    Kmeans,
}

impl ModelType {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "linear_regression" => Self::LinearRegression,
            "logistic_regression" => Self::LogisticRegression,
            "softmax_regression" => Self::SoftmaxRegression,
            "mlp" => Self::Mlp,
            "cnn" => Self::Cnn,
            "kmeans" => Self::Kmeans,
            _ => return Err(MlError::UnknownModelType(name.to_string())),
        })
    }

    pub fn is_supervised(self) -> bool {
        self != Self::Kmeans
    }

    fn valid_options(self) -> Vec<&'static str> {
        const COMMON: [&str; 14] = [
            "epochs",
            "batch_size",
            "learning_rate",
            "optimizer",
            "l2",
            "seed",
            "validation_fraction",
            "early_stopping_patience",
            "device",
            "warm_start",
            "momentum",
            "standardize",
            "max_iterations",
            "tol",
        ];
        let extra: &[&str] = match self {
            Self::LinearRegression => &["solver", "l1"],
            Self::Mlp => &["hidden_units", "activation", "dropout", "task"],
            Self::Cnn => &[
                "input_shape",
                "conv_layers",
                "pool",
                "augment",
                "hidden_units",
                "activation",
                "dropout",
                "task",
            ],
            Self::LogisticRegression | Self::SoftmaxRegression => &["l1"],
            Self::Kmeans => {
                return vec![
                    "epochs",
                    "k",
                    "seed",
                    "device",
                    "warm_start",
                    "validation_fraction",
                ]
            }
        };
        COMMON.iter().chain(extra).copied().collect()
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        f.write_str(name.as_deref().unwrap_or("?"))
    }
}

/// A value written in `OPTIONS (key = value)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<f64>),
    /// A list of lists, e.g. `conv_layers = [[16, 3], [32, 3]]`.
    Lists(Vec<Vec<f64>>),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => write!(f, "'{s}'"),
            Self::List(l) => write!(f, "{l:?}"),
            Self::Lists(l) => write!(f, "{l:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Adam,
    /// Full-batch L-BFGS: one round per objective evaluation ([`crate::lbfgs`]).
    Lbfgs,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sgd => "sgd",
            Self::Momentum => "momentum",
            Self::Adam => "adam",
            Self::Lbfgs => "lbfgs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// Training with `optimizer` (L-BFGS or mini-batch steps).
    Sgd,
    /// Exact least squares from summed XᵀX and Xᵀy (linear regression).
    Normal,
    /// Linear regression's default, as Spark's `auto`: the normal equations
    /// up to [`NORMAL_MAX_DIMS`] feature values, L-BFGS beyond.
    Auto,
}

/// The widest feature vector `solver = 'auto'` solves by the normal
/// equations (each partition sums a dims² matrix).
pub const NORMAL_MAX_DIMS: usize = 4096;

/// Options that only the mini-batch optimizers use: naming one without an
/// optimizer keeps linear models on the mini-batch path (Adam).
const MINI_BATCH_OPTIONS: [&str; 5] = [
    "epochs",
    "learning_rate",
    "batch_size",
    "momentum",
    "early_stopping_patience",
];
/// Options that only L-BFGS uses (and `l1` above zero, which OWL-QN solves).
const LBFGS_OPTIONS: [&str; 2] = ["max_iterations", "tol"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    Auto,
}

/// `task` for mlp: chosen from the label type unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskChoice {
    Classification,
    Regression,
}

/// Validated training options with their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub optimizer: OptimizerKind,
    pub momentum: f32,
    pub l2: f32,
    pub seed: u64,
    pub validation_fraction: f32,
    pub early_stopping_patience: Option<usize>,
    pub device: DeviceChoice,
    pub warm_start: bool,
    pub solver: Solver,
    pub hidden_units: Vec<usize>,
    #[serde(with = "crate::serde_activation")]
    pub activation: Activation,
    pub dropout: f32,
    pub k: usize,
    pub task: Option<TaskChoice>,
    /// cnn: `[channels, height, width]` of each image.
    #[serde(default)]
    pub input_shape: Option<[usize; 3]>,
    /// cnn: `(filters, kernel)` per convolution layer.
    #[serde(default)]
    pub conv_layers: Vec<(usize, usize)>,
    /// cnn: max-pool window after each convolution (1: none).
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// cnn: random horizontal flips and ±1-pixel shifts while training.
    #[serde(default)]
    pub augment: Augment,
    /// Standardize features (and a regression label) inside the model.
    /// Cards written before the option existed read as `false`, which is
    /// what those models did.
    #[serde(default)]
    pub standardize: bool,
    /// L1 on the weights (OWL-QN; linear models with `optimizer = 'lbfgs'`).
    #[serde(default)]
    pub l1: f32,
    /// L-BFGS: most accepted steps.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: usize,
    /// L-BFGS: stop when the objective's relative decrease falls below this.
    #[serde(default = "default_tolerance")]
    pub tol: f64,
}

fn default_max_iterations() -> usize {
    100
}

fn default_tolerance() -> f64 {
    1e-6
}

fn default_pool() -> usize {
    2
}

/// Data augmentation for image models (`augment = 'flip,shift'`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    pub flip: bool,
    pub shift: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 256,
            learning_rate: 0.01,
            optimizer: OptimizerKind::Adam,
            momentum: 0.9,
            l2: 0.0,
            seed: 42,
            validation_fraction: 0.0,
            early_stopping_patience: None,
            device: DeviceChoice::Cpu,
            warm_start: false,
            solver: Solver::Sgd,
            hidden_units: vec![64],
            activation: Activation::Relu,
            dropout: 0.0,
            k: 8,
            task: None,
            input_shape: None,
            conv_layers: vec![(16, 3), (32, 3)],
            pool: default_pool(),
            augment: Augment::default(),
            standardize: true,
            l1: 0.0,
            max_iterations: default_max_iterations(),
            tol: default_tolerance(),
        }
    }
}

fn invalid(option: &str, problem: &str, value: &OptionValue) -> MlError {
    MlError::InvalidOption {
        option: option.to_string(),
        problem: problem.to_string(),
        value: value.to_string(),
    }
}

fn number(option: &str, value: &OptionValue) -> Result<f64> {
    match value {
        OptionValue::Number(n) if n.is_finite() => Ok(*n),
        other => Err(invalid(option, "must be a number", other)),
    }
}

fn positive_int(option: &str, value: &OptionValue) -> Result<usize> {
    let n = number(option, value)?;
    if n >= 1.0 && n.fract() == 0.0 && n <= 1e9 {
        Ok(n as usize)
    } else {
        Err(invalid(option, "must be a positive whole number", value))
    }
}

fn whole_numbers(option: &str, value: &OptionValue) -> Result<Vec<usize>> {
    match value {
        OptionValue::List(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|v| *v >= 1.0 && v.fract() == 0.0 && *v <= 1e9) =>
        {
            Ok(items.iter().map(|v| *v as usize).collect())
        }
        other => Err(invalid(
            option,
            "must be a list of positive whole numbers",
            other,
        )),
    }
}

fn text<'a>(option: &str, value: &'a OptionValue, allowed: &[&str]) -> Result<&'a str> {
    match value {
        OptionValue::Text(s) if allowed.contains(&s.to_ascii_lowercase().as_str()) => {
            Ok(s.as_str())
        }
        other => Err(invalid(
            option,
            &format!("must be one of {}", allowed.join(", ")),
            other,
        )),
    }
}

impl TrainOptions {
    /// Validates `pairs` for `model_type`: unknown keys list the valid ones,
    /// mistyped values say what is expected.
    pub fn parse(model_type: ModelType, pairs: &[(String, OptionValue)]) -> Result<Self> {
        let mut o = Self::default();
        if model_type == ModelType::Kmeans {
            o.epochs = 20;
        }
        if model_type == ModelType::Cnn {
            o.hidden_units = vec![128];
        }
        let valid = model_type.valid_options();
        for (key, value) in pairs {
            let key = key.to_ascii_lowercase();
            if !valid.contains(&key.as_str()) {
                return Err(MlError::UnknownOption {
                    option: key,
                    model_type: model_type.to_string(),
                    valid: valid.join(", "),
                });
            }
            match key.as_str() {
                "epochs" => o.epochs = positive_int(&key, value)?,
                "batch_size" => o.batch_size = positive_int(&key, value)?,
                "k" => o.k = positive_int(&key, value)?,
                "early_stopping_patience" => {
                    o.early_stopping_patience = Some(positive_int(&key, value)?)
                }
                "seed" => {
                    let n = number(&key, value)?;
                    if n < 0.0 || n.fract() != 0.0 {
                        return Err(invalid(&key, "must be a non-negative whole number", value));
                    }
                    o.seed = n as u64;
                }
                "learning_rate" => {
                    let n = number(&key, value)?;
                    if n <= 0.0 {
                        return Err(invalid(&key, "must be greater than 0", value));
                    }
                    o.learning_rate = n as f32;
                }
                "momentum" | "l1" | "l2" | "dropout" | "validation_fraction" => {
                    let n = number(&key, value)?;
                    let unbounded = key == "l1" || key == "l2";
                    let upper = if unbounded { f64::MAX } else { 1.0 };
                    if !(0.0..upper).contains(&n) {
                        return Err(invalid(
                            &key,
                            &format!(
                                "must be in [0, {}{}",
                                if unbounded { "∞" } else { "1" },
                                ")"
                            ),
                            value,
                        ));
                    }
                    match key.as_str() {
                        "momentum" => o.momentum = n as f32,
                        "l1" => o.l1 = n as f32,
                        "l2" => o.l2 = n as f32,
                        "dropout" => o.dropout = n as f32,
                        _ => o.validation_fraction = n as f32,
                    }
                }
                "optimizer" => {
                    o.optimizer = match text(&key, value, &["lbfgs", "sgd", "momentum", "adam"])?
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "lbfgs" => OptimizerKind::Lbfgs,
                        "sgd" => OptimizerKind::Sgd,
                        "momentum" => OptimizerKind::Momentum,
                        _ => OptimizerKind::Adam,
                    }
                }
                "solver" => {
                    o.solver = match text(&key, value, &["auto", "normal", "sgd"])?
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "normal" => Solver::Normal,
                        "auto" => Solver::Auto,
                        _ => Solver::Sgd,
                    }
                }
                "standardize" => match value {
                    OptionValue::Bool(b) => o.standardize = *b,
                    other => return Err(invalid(&key, "must be true or false", other)),
                },
                "max_iterations" => o.max_iterations = positive_int(&key, value)?,
                "tol" => {
                    let n = number(&key, value)?;
                    if !(0.0..1.0).contains(&n) {
                        return Err(invalid(&key, "must be in [0, 1)", value));
                    }
                    o.tol = n;
                }
                "device" => {
                    o.device = match text(&key, value, &["cpu", "cuda", "auto"])?
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "cuda" => DeviceChoice::Cuda,
                        "auto" => DeviceChoice::Auto,
                        _ => DeviceChoice::Cpu,
                    }
                }
                "task" => {
                    o.task = Some(
                        match text(&key, value, &["classification", "regression"])?
                            .to_ascii_lowercase()
                            .as_str()
                        {
                            "regression" => TaskChoice::Regression,
                            _ => TaskChoice::Classification,
                        },
                    )
                }
                "activation" => {
                    o.activation =
                        Activation::parse(text(&key, value, &["relu", "tanh", "sigmoid"])?)
                            .expect("listed")
                }
                "warm_start" => match value {
                    OptionValue::Bool(b) => o.warm_start = *b,
                    other => return Err(invalid(&key, "must be true or false", other)),
                },
                "input_shape" => {
                    let dims = whole_numbers(&key, value)?;
                    o.input_shape = Some(match dims.as_slice() {
                        [h, w] => [1, *h, *w],
                        [c, h, w] => [*c, *h, *w],
                        _ => {
                            return Err(invalid(
                                &key,
                                "must be [channels, height, width] or [height, width]",
                                value,
                            ))
                        }
                    });
                }
                "conv_layers" => {
                    let problem =
                        "must be a list of [filters, kernel] pairs, e.g. [[16, 3], [32, 3]]";
                    let OptionValue::Lists(layers) = value else {
                        return Err(invalid(&key, problem, value));
                    };
                    o.conv_layers = layers
                        .iter()
                        .map(|pair| {
                            match whole_numbers(&key, &OptionValue::List(pair.clone()))
                                .ok()
                                .as_deref()
                            {
                                Some([filters, kernel]) => Ok((*filters, *kernel)),
                                _ => Err(invalid(&key, problem, value)),
                            }
                        })
                        .collect::<Result<_>>()?;
                    if o.conv_layers.is_empty() {
                        return Err(invalid(&key, problem, value));
                    }
                }
                "pool" => o.pool = positive_int(&key, value)?,
                "augment" => {
                    let problem = "must be 'none' or a comma-separated list of flip, shift";
                    let OptionValue::Text(text) = value else {
                        return Err(invalid(&key, problem, value));
                    };
                    o.augment = Augment::default();
                    for part in text.split(',').map(|p| p.trim().to_ascii_lowercase()) {
                        match part.as_str() {
                            "flip" => o.augment.flip = true,
                            "shift" => o.augment.shift = true,
                            "none" | "" => {}
                            _ => return Err(invalid(&key, problem, value)),
                        }
                    }
                }
                "hidden_units" => match value {
                    OptionValue::List(units)
                        if !units.is_empty()
                            && units.iter().all(|u| *u >= 1.0 && u.fract() == 0.0) =>
                    {
                        o.hidden_units = units.iter().map(|u| *u as usize).collect()
                    }
                    OptionValue::Number(_) => o.hidden_units = vec![positive_int(&key, value)?],
                    other => {
                        return Err(invalid(
                            &key,
                            "must be a list of positive whole numbers such as [64, 32]",
                            other,
                        ))
                    }
                },
                _ => unreachable!("listed in valid_options"),
            }
        }
        o.resolve_optimizer(model_type, pairs)?;
        Ok(o)
    }

    /// Picks the optimizer and solver left to their defaults, and refuses
    /// options that the chosen one would ignore.
    fn resolve_optimizer(
        &mut self,
        model_type: ModelType,
        pairs: &[(String, OptionValue)],
    ) -> Result<()> {
        let given = |name: &str| pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
        let mini_batch_option = MINI_BATCH_OPTIONS.iter().find_map(|o| given(o));
        let lbfgs_option = LBFGS_OPTIONS
            .iter()
            .find_map(|o| given(o))
            .or(given("l1").filter(|_| self.l1 > 0.0));
        let linear = matches!(
            model_type,
            ModelType::LinearRegression
                | ModelType::LogisticRegression
                | ModelType::SoftmaxRegression
        );
        if given("optimizer").is_none() {
            self.optimizer = if linear && mini_batch_option.is_none() {
                OptimizerKind::Lbfgs
            } else {
                OptimizerKind::Adam
            };
        }
        if model_type == ModelType::LinearRegression && given("solver").is_none() {
            let gradient_chosen = given("optimizer").is_some()
                || mini_batch_option.is_some()
                || lbfgs_option.is_some();
            self.solver = if gradient_chosen {
                Solver::Sgd
            } else {
                Solver::Auto
            };
        }
        if self.solver == Solver::Normal {
            if model_type != ModelType::LinearRegression {
                return Err(invalid(
                    "solver",
                    "'normal' applies to linear_regression only",
                    &OptionValue::Text("normal".into()),
                ));
            }
            if let Some((key, value)) = given("optimizer").or(mini_batch_option).or(lbfgs_option) {
                return Err(invalid(
                    key,
                    "does not apply to solver 'normal', which solves exactly in one pass; \
                     remove it or use solver = 'sgd'",
                    value,
                ));
            }
            return Ok(());
        }
        if self.optimizer == OptimizerKind::Lbfgs {
            let mut extra = mini_batch_option.into_iter().chain(
                ["dropout", "augment"]
                    .iter()
                    .filter_map(|o| given(o))
                    .filter(|(_, v)| !matches!(v, OptionValue::Number(n) if *n == 0.0))
                    .filter(|(_, v)| !matches!(v, OptionValue::Text(t) if t.eq_ignore_ascii_case("none"))),
            );
            if let Some((key, value)) = extra.next() {
                return Err(invalid(
                    key,
                    "applies to the mini-batch optimizers (sgd, momentum, adam), not to \
                     optimizer 'lbfgs', which steps on the full-batch gradient up to \
                     max_iterations times; set optimizer = 'adam' to use it",
                    value,
                ));
            }
        } else if let Some((key, value)) = lbfgs_option {
            return Err(invalid(
                key,
                &format!(
                    "applies to optimizer 'lbfgs' only (the optimizer is '{}'; it runs `epochs` passes)",
                    self.optimizer.name()
                ),
                value,
            ));
        }
        Ok(())
    }

    /// The kernels' optimizer for these options.
    pub fn optimizer(&self) -> Optimizer {
        match self.optimizer {
            OptimizerKind::Sgd => Optimizer::Sgd {
                learning_rate: self.learning_rate,
                l2: self.l2,
            },
            OptimizerKind::Momentum => Optimizer::Momentum {
                learning_rate: self.learning_rate,
                momentum: self.momentum,
                l2: self.l2,
            },
            // L-BFGS takes its steps in the driver; the kernels' optimizer is
            // not used then, Adam is only a placeholder.
            OptimizerKind::Adam | OptimizerKind::Lbfgs => Optimizer::Adam {
                learning_rate: self.learning_rate,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
                l2: self.l2,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, OptionValue)]) -> Vec<(String, OptionValue)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_and_validates() {
        let o = TrainOptions::parse(
            ModelType::Mlp,
            &pairs(&[
                ("epochs", OptionValue::Number(5.0)),
                ("hidden_units", OptionValue::List(vec![64.0, 32.0])),
                ("activation", OptionValue::Text("tanh".into())),
                ("optimizer", OptionValue::Text("SGD".into())),
            ]),
        )
        .unwrap();
        assert_eq!(
            (o.epochs, o.hidden_units.clone(), o.activation),
            (5, vec![64, 32], Activation::Tanh)
        );
        assert_eq!(o.optimizer, OptimizerKind::Sgd);

        let err = TrainOptions::parse(
            ModelType::LogisticRegression,
            &pairs(&[("epoch", OptionValue::Number(1.0))]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown option 'epoch'") && err.contains("valid options: epochs"),
            "{err}"
        );

        let err = TrainOptions::parse(
            ModelType::Mlp,
            &pairs(&[("epochs", OptionValue::Text("ten".into()))]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "option 'epochs' must be a number (got 'ten')");

        // The device is chosen where the rounds run (kiln_ml::device).
        let o = TrainOptions::parse(
            ModelType::Mlp,
            &pairs(&[("device", OptionValue::Text("cuda".into()))]),
        )
        .unwrap();
        assert_eq!(o.device, DeviceChoice::Cuda);
        assert!(TrainOptions::parse(
            ModelType::Mlp,
            &pairs(&[("device", OptionValue::Text("tpu".into()))]),
        )
        .is_err());

        // Linear models default to L-BFGS unless a mini-batch option asks otherwise.
        let o = TrainOptions::parse(ModelType::SoftmaxRegression, &[]).unwrap();
        assert_eq!((o.optimizer, o.standardize), (OptimizerKind::Lbfgs, true));
        let o = TrainOptions::parse(
            ModelType::LogisticRegression,
            &pairs(&[("epochs", OptionValue::Number(5.0))]),
        )
        .unwrap();
        assert_eq!(o.optimizer, OptimizerKind::Adam);
        assert_eq!(
            TrainOptions::parse(ModelType::LinearRegression, &[])
                .unwrap()
                .solver,
            Solver::Auto
        );
        assert_eq!(
            TrainOptions::parse(
                ModelType::LinearRegression,
                &pairs(&[("max_iterations", OptionValue::Number(5.0))])
            )
            .unwrap()
            .solver,
            Solver::Sgd
        );
        // L1 is solved by OWL-QN: linear regression leaves the normal equations.
        let o = TrainOptions::parse(
            ModelType::LinearRegression,
            &pairs(&[("l1", OptionValue::Number(0.1))]),
        )
        .unwrap();
        assert_eq!((o.solver, o.optimizer), (Solver::Sgd, OptimizerKind::Lbfgs));
        assert_eq!(
            TrainOptions::parse(ModelType::Mlp, &[]).unwrap().optimizer,
            OptimizerKind::Adam
        );
        for (model_type, bad, named) in [
            (
                ModelType::LogisticRegression,
                vec![
                    ("optimizer", OptionValue::Text("lbfgs".into())),
                    ("batch_size", OptionValue::Number(8.0)),
                ],
                "option 'batch_size' applies to the mini-batch optimizers",
            ),
            (
                ModelType::Mlp,
                vec![
                    ("optimizer", OptionValue::Text("lbfgs".into())),
                    ("dropout", OptionValue::Number(0.5)),
                ],
                "option 'dropout' applies to the mini-batch optimizers",
            ),
            (
                ModelType::Mlp,
                vec![("tol", OptionValue::Number(1e-3))],
                "option 'tol' applies to optimizer 'lbfgs' only (the optimizer is 'adam'",
            ),
            (
                ModelType::LinearRegression,
                vec![
                    ("solver", OptionValue::Text("normal".into())),
                    ("epochs", OptionValue::Number(3.0)),
                ],
                "option 'epochs' does not apply to solver 'normal'",
            ),
            (
                ModelType::LogisticRegression,
                vec![
                    ("optimizer", OptionValue::Text("adam".into())),
                    ("l1", OptionValue::Number(0.1)),
                ],
                "option 'l1' applies to optimizer 'lbfgs' only",
            ),
            (
                ModelType::LinearRegression,
                vec![
                    ("solver", OptionValue::Text("normal".into())),
                    ("l1", OptionValue::Number(0.1)),
                ],
                "option 'l1' does not apply to solver 'normal'",
            ),
        ] {
            let err = TrainOptions::parse(model_type, &pairs(&bad))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(named), "{err}");
        }

        assert!(ModelType::parse("random_forest")
            .unwrap_err()
            .to_string()
            .contains("valid types"));
    }
}
