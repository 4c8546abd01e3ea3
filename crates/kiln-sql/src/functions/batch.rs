//! Arrow columns to the `f32` matrices the ML crate trains on, with errors
//! that name the column and say what to do.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::error::{DataFusionError, Result};
use kiln_ml::{Batch, Targets};

/// How wide a feature column is (1, or the length of a fixed-size vector),
/// or an error explaining why the type cannot be a feature.
pub fn feature_width(name: &str, data_type: &DataType) -> Result<usize> {
    match data_type {
        t if t.is_numeric() || *t == DataType::Boolean => Ok(1),
        DataType::FixedSizeList(field, size) if field.data_type().is_floating() || field.data_type().is_integer() => {
            Ok(*size as usize)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Err(DataFusionError::Plan(format!(
            "feature column '{name}' is a string; encode it as numbers first (for example \
             CASE WHEN {name} = 'x' THEN 1 ELSE 0 END, or a one-hot vector) or leave it out of FEATURES"
        ))),
        other => Err(DataFusionError::Plan(format!(
            "feature column '{name}' has type {other}, which cannot be a feature; use numbers, \
             booleans or fixed-size lists of floats (CAST it, or leave it out of FEATURES)"
        ))),
    }
}

fn as_f64(name: &str, column: &ArrayRef) -> Result<Vec<f64>> {
    let values = cast(column, &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    if values.null_count() > 0 {
        return Err(DataFusionError::Execution(format!(
            "feature column '{name}' has {} NULL value(s); filter them (WHERE {name} IS NOT NULL) or replace them (coalesce)",
            values.null_count()
        )));
    }
    let bad = values.values().iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(DataFusionError::Execution(format!(
            "feature column '{name}' has {bad} NaN or infinite value(s); filter or replace them"
        )));
    }
    Ok(values.values().to_vec())
}

/// The row-major feature matrix of `columns` (named by `names`).
pub fn feature_matrix(
    names: &[String],
    columns: &[ArrayRef],
    rows: usize,
) -> Result<(Vec<f32>, usize)> {
    let mut flat_columns: Vec<(Vec<f64>, usize)> = Vec::with_capacity(columns.len());
    for (name, column) in names.iter().zip(columns) {
        match column.data_type() {
            DataType::FixedSizeList(_, size) => {
                let list: &FixedSizeListArray = column.as_fixed_size_list();
                if list.null_count() > 0 {
                    return Err(DataFusionError::Execution(format!(
                        "feature column '{name}' has {} NULL vector(s); filter them",
                        list.null_count()
                    )));
                }
                flat_columns.push((as_f64(name, list.values())?, *size as usize));
            }
            _ => flat_columns.push((as_f64(name, column)?, 1)),
        }
    }
    let dims: usize = flat_columns.iter().map(|(_, w)| w).sum();
    let mut matrix = Vec::with_capacity(rows * dims);
    for r in 0..rows {
        for (values, width) in &flat_columns {
            matrix.extend(values[r * width..(r + 1) * width].iter().map(|v| *v as f32));
        }
    }
    Ok((matrix, dims))
}

/// What the label column means for training.
#[derive(Debug, Clone)]
pub enum LabelKind {
    Regression,
    /// Class values (as text) to class indices.
    Classes(HashMap<String, u32>),
}

/// The targets of a batch from its label column.
pub fn targets(name: &str, column: &ArrayRef, kind: &LabelKind) -> Result<Targets> {
    if column.null_count() > 0 {
        return Err(DataFusionError::Execution(format!(
            "label column '{name}' has {} NULL value(s); filter them (WHERE {name} IS NOT NULL)",
            column.null_count()
        )));
    }
    match kind {
        LabelKind::Regression => {
            let values = as_f64(name, column).map_err(|e| {
                DataFusionError::Execution(e.to_string().replace("feature column", "label column"))
            })?;
            Ok(Targets::Values(
                values.into_iter().map(|v| v as f32).collect(),
            ))
        }
        LabelKind::Classes(classes) => {
            let text = cast(column, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let indices = text
                .iter()
                .map(|v| {
                    let v = v.unwrap_or_default();
                    classes.get(v).copied().ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "label column '{name}' has class '{v}', which was not seen when the classes were listed"
                        ))
                    })
                })
                .collect::<Result<Vec<u32>>>()?;
            Ok(Targets::Classes(indices))
        }
    }
}

/// A training/prediction batch from Arrow columns: `features` then an optional label.
pub fn to_batch(
    feature_names: &[String],
    feature_columns: &[ArrayRef],
    label: Option<(&str, &ArrayRef, &LabelKind)>,
    rows: usize,
) -> Result<Batch> {
    let (features, dims) = feature_matrix(feature_names, feature_columns, rows)?;
    let targets = match label {
        Some((name, column, kind)) => targets(name, column, kind)?,
        None => Targets::None,
    };
    Ok(Batch {
        features,
        dims,
        targets,
    })
}
