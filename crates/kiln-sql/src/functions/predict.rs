//! `predict('model', col, ...)` and `predict_proba('model', col, ...)`: scalar
//! functions usable in any query. They run wherever the expression is
//! evaluated (executors), loading the model from the lake's registry once per
//! process and version. `'model@3'` selects version 3; the latest is the default.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use kiln_kernels::cpu::CpuBackend;
use kiln_ml::{Model, Task};

use crate::catalog::registry::{ModelCard, ModelRegistry};
use crate::functions::batch::to_batch;

/// Which output of the model a function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Prediction,
    Probability,
}

/// `model` or `model@N`.
pub fn parse_model_ref(text: &str) -> Result<(String, Option<u64>)> {
    match text.split_once('@') {
        None => Ok((text.to_string(), None)),
        Some((name, version)) => {
            let v = version
                .trim_start_matches('v')
                .parse::<u64>()
                .map_err(|_| {
                    DataFusionError::Plan(format!(
                        "invalid model reference '{text}': write 'name' or 'name@VERSION'"
                    ))
                })?;
            Ok((name.to_string(), Some(v)))
        }
    }
}

type Loaded = Arc<(Model, ModelCard)>;

#[derive(Debug)]
pub struct PredictUdf {
    output: Output,
    registry: ModelRegistry,
    lake: PathBuf,
    signature: Signature,
    cache: Mutex<HashMap<(String, u64), Loaded>>,
}

impl PartialEq for PredictUdf {
    fn eq(&self, other: &Self) -> bool {
        self.output == other.output && self.lake == other.lake
    }
}

impl Eq for PredictUdf {}

impl Hash for PredictUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.output.hash(state);
        self.lake.hash(state);
    }
}

/// The `predict` and `predict_proba` functions over the lake at `lake`.
/// Every UDF Kiln adds, as each process (client, scheduler, executor) registers them.
pub fn kiln_udfs(lake: PathBuf) -> Vec<ScalarUDF> {
    let mut udfs = predict_udfs(lake);
    udfs.extend(crate::functions::pii::pii_udfs());
    udfs.extend(crate::functions::features::feature_udfs());
    udfs
}

pub fn predict_udfs(lake: PathBuf) -> Vec<ScalarUDF> {
    [Output::Prediction, Output::Probability]
        .into_iter()
        .map(|output| {
            ScalarUDF::new_from_impl(PredictUdf {
                output,
                registry: ModelRegistry::new(&lake),
                lake: lake.clone(),
                signature: Signature::variadic_any(Volatility::Stable),
                cache: Mutex::new(HashMap::new()),
            })
        })
        .collect()
}

impl PredictUdf {
    fn load(&self, reference: &str) -> Result<Loaded> {
        let (name, version) = parse_model_ref(reference)?;
        let version = self.registry.resolve(&name, version)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(&(name.clone(), version)) {
            return Ok(Arc::clone(hit));
        }
        let loaded = Arc::new(self.registry.load(&name, version)?);
        cache.insert((name, version), Arc::clone(&loaded));
        Ok(loaded)
    }

    fn output_type(&self, card: &ModelCard) -> DataType {
        match (self.output, card.task) {
            (Output::Prediction, Task::Regression) => DataType::Float64,
            (Output::Prediction, Task::Clustering { .. }) => DataType::Int64,
            (Output::Prediction, _) => label_output_type(card.label_type.as_deref()),
            (Output::Probability, Task::MulticlassClassification { classes }) => {
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float64, true)),
                    classes as i32,
                )
            }
            (Output::Probability, _) => DataType::Float64,
        }
    }

    fn model_name_arg(&self, value: Option<&ScalarValue>) -> Result<String> {
        match value {
            Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
            ) => Ok(s.clone()),
            _ => Err(DataFusionError::Plan(format!(
                "{}('model', feature, ...) needs the model name as a string literal first",
                self.name()
            ))),
        }
    }
}

/// Classifiers predict a value of the label's own type: integers, booleans, else text.
fn label_output_type(label_type: Option<&str>) -> DataType {
    match label_type {
        Some(t) if t.starts_with("Int") || t.starts_with("UInt") => DataType::Int64,
        Some("Boolean") => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

impl ScalarUDFImpl for PredictUdf {
    fn name(&self) -> &str {
        match self.output {
            Output::Prediction => "predict",
            Output::Probability => "predict_proba",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "predict's type comes from return_field_from_args".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let reference = self.model_name_arg(args.scalar_arguments.first().copied().flatten())?;
        let loaded = self.load(&reference)?;
        let (model, card) = loaded.as_ref();
        let given = args.arg_fields.len().saturating_sub(1);
        if given != card.features.len() && !card.transform.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "model '{}' was trained with TRANSFORM (...): in Kiln SQL, PREDICT MODEL {} AS <query> \
                 and predict() on the raw columns apply the fitted transforms; called directly, {}() takes \
                 the transformed features ({})",
                card.name,
                card.name,
                self.name(),
                expected_schema(card)
            )));
        }
        if given != card.features.len() {
            return Err(DataFusionError::Plan(format!(
                "{}('{reference}', ...) takes the model's {} feature column(s) ({}), got {given}",
                self.name(),
                card.features.len(),
                expected_schema(card)
            )));
        }
        for (field, expected) in args.arg_fields[1..].iter().zip(&card.features) {
            let width = crate::functions::batch::feature_width(field.name(), field.data_type())
                .map_err(|e| {
                    DataFusionError::Plan(format!(
                        "{e}; the model expects {}",
                        expected_schema(card)
                    ))
                })?;
            if width != expected.width {
                return Err(DataFusionError::Plan(format!(
                    "feature '{}' has width {width} but the model's '{}' has width {}; the model expects {}",
                    field.name(),
                    expected.name,
                    expected.width,
                    expected_schema(card)
                )));
            }
        }
        if self.output == Output::Probability
            && !matches!(
                model.task,
                Task::BinaryClassification | Task::MulticlassClassification { .. }
            )
        {
            return Err(DataFusionError::Plan(format!(
                "predict_proba needs a classifier; '{reference}' is a {} model",
                card.model_type
            )));
        }
        Ok(Arc::new(Field::new(
            self.name(),
            self.output_type(card),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let reference = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => self.model_name_arg(Some(s))?,
            _ => {
                return Err(DataFusionError::Plan(
                    "predict needs the model name as a string literal".into(),
                ))
            }
        };
        let loaded = self.load(&reference)?;
        let (model, card) = loaded.as_ref();
        let rows = args.number_rows;
        let columns: Vec<ArrayRef> = args.args[1..]
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let names: Vec<String> = card.features.iter().map(|f| f.name.clone()).collect();
        let batch = to_batch(&names, &columns, None, rows)?;
        let predictions = model
            .predict(&CpuBackend::default(), &batch)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let array: ArrayRef = match (self.output, model.task) {
            (Output::Prediction, Task::Regression) => Arc::new(Float64Array::from_iter_values(
                predictions.values.iter().map(|v| *v as f64),
            )),
            (Output::Prediction, Task::Clustering { .. }) => Arc::new(
                Int64Array::from_iter_values(predictions.values.iter().map(|v| *v as i64)),
            ),
            (Output::Prediction, _) => {
                let classes = card.classes.as_deref().unwrap_or(&[]);
                let text = StringArray::from_iter_values(
                    predictions
                        .values
                        .iter()
                        .map(|v| classes.get(*v as usize).map(String::as_str).unwrap_or("")),
                );
                let target = label_output_type(card.label_type.as_deref());
                if target == DataType::Utf8 {
                    Arc::new(text)
                } else if target == DataType::Boolean {
                    Arc::new(BooleanArray::from_iter(
                        text.iter().map(|t| t.map(|t| t == "true")),
                    ))
                } else {
                    cast(&text, &target)?
                }
            }
            (Output::Probability, Task::MulticlassClassification { classes }) => {
                let values = Float32Array::from(predictions.probabilities.unwrap_or_default());
                let values = cast(&values, &DataType::Float64)?;
                Arc::new(FixedSizeListArray::try_new(
                    Arc::new(Field::new("item", DataType::Float64, true)),
                    classes as i32,
                    values,
                    None,
                )?)
            }
            (Output::Probability, _) => Arc::new(Float64Array::from_iter_values(
                predictions
                    .probabilities
                    .unwrap_or_default()
                    .iter()
                    .map(|v| *v as f64),
            )),
        };
        Ok(ColumnarValue::Array(array))
    }
}

/// `(age Int64, spend Float64, ...)` for error messages.
pub fn expected_schema(card: &ModelCard) -> String {
    let columns: Vec<String> = card
        .features
        .iter()
        .map(|f| format!("{} {}", f.name, f.data_type))
        .collect();
    format!("({})", columns.join(", "))
}
