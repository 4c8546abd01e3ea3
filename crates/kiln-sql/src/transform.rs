//! `TRAIN MODEL ... TRANSFORM (expr AS name, ...)`: feature transforms fitted
//! once on the training data (one aggregate query) and stored with the model
//! as SQL expressions, so `PREDICT` and `EVALUATE` apply exactly the same
//! arithmetic to new rows.
//!
//! Fitted transforms: `standard_scale(x)`, `min_max_scale(x)`,
//! `impute(x, 'mean' | 'median' | value)`, `one_hot(x [, max_categories])`
//! (a vector with one slot per category seen in training, up to
//! `max_categories` (20) in sorted order, plus an "other" slot for unseen
//! values and NULL), `label_encode(x)` (sorted category index; unseen and
//! NULL get the next index), and the stateless `bucketize(x, [b1, b2, ...])`
//! and `polynomial(x, degree)` (a vector `[x, x², …]`). Any other SQL
//! expression is applied as written.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};
use serde::{Deserialize, Serialize};

use crate::parser::{quote_ident as quote, quote_literal as literal};
use crate::session::KilnSession;

/// One `expr AS name` of a TRANSFORM clause, before fitting.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    pub name: String,
    pub kind: TransformKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransformKind {
    StandardScale {
        column: String,
    },
    MinMaxScale {
        column: String,
    },
    Impute {
        column: String,
        with: ImputeWith,
    },
    OneHot {
        column: String,
        max_categories: usize,
    },
    /// Category index in sorted order; unseen values and NULL get the next index.
    LabelEncode {
        column: String,
    },
    /// `[x, x², …, x^degree]` as a vector.
    Polynomial {
        column: String,
        degree: usize,
    },
    Bucketize {
        column: String,
        bounds: Vec<f64>,
    },
    /// Any other expression, applied as written.
    Sql {
        expression: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImputeWith {
    Mean,
    Median,
    Value(String),
}

/// A fitted transform: the output column and the SQL that computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedTransform {
    pub name: String,
    pub sql: String,
    /// The input column a fitted transform consumes (dropped from pass-through).
    pub input: Option<String>,
}

fn syntax(message: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("TRANSFORM: {message}"))
}

fn column_arg(function: &str, args: &[Expr]) -> Result<String> {
    match args.first() {
        Some(Expr::Identifier(id)) => Ok(if id.quote_style.is_some() {
            id.value.clone()
        } else {
            id.value.to_lowercase()
        }),
        _ => Err(syntax(format!(
            "{function}(...) takes a column as its first argument"
        ))),
    }
}

/// Classifies one `expr AS name` of a TRANSFORM clause.
pub fn spec(expr: &Expr, name: String) -> Result<TransformSpec> {
    let Expr::Function(function) = expr else {
        return Ok(TransformSpec {
            name,
            kind: TransformKind::Sql {
                expression: expr.to_string(),
            },
        });
    };
    let function_name = function.name.to_string().to_lowercase();
    let args: Vec<Expr> = match &function.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    };
    let kind = match function_name.as_str() {
        "standard_scale" => TransformKind::StandardScale {
            column: column_arg(&function_name, &args)?,
        },
        "min_max_scale" => TransformKind::MinMaxScale {
            column: column_arg(&function_name, &args)?,
        },
        "impute" => {
            let column = column_arg(&function_name, &args)?;
            let with = match args.get(1) {
                Some(Expr::Value(v)) => match &v.value {
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("mean") => ImputeWith::Mean,
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("median") => ImputeWith::Median,
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("most_frequent") => {
                        return Err(DataFusionError::NotImplemented(
                            "impute(x, 'most_frequent') is not supported yet; use 'mean', 'median' or a value"
                                .to_string(),
                        ))
                    }
                    other => ImputeWith::Value(other.to_string()),
                },
                Some(other) => ImputeWith::Value(other.to_string()),
                None => ImputeWith::Mean,
            };
            TransformKind::Impute { column, with }
        }
        "one_hot" => {
            let column = column_arg(&function_name, &args)?;
            let max_categories = match args.get(1) {
                Some(Expr::Value(v)) => match &v.value {
                    Value::Number(n, _) => {
                        n.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                            syntax("one_hot's max_categories must be a positive whole number")
                        })?
                    }
                    _ => return Err(syntax("one_hot's max_categories must be a number")),
                },
                None => 20,
                Some(_) => return Err(syntax("one_hot's max_categories must be a number")),
            };
            TransformKind::OneHot {
                column,
                max_categories,
            }
        }
        "label_encode" => TransformKind::LabelEncode {
            column: column_arg(&function_name, &args)?,
        },
        "polynomial" => {
            let column = column_arg(&function_name, &args)?;
            let degree = match args.get(1).map(ToString::to_string) {
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|d| (1..=10).contains(d))
                    .ok_or_else(|| {
                        syntax("polynomial's degree must be a whole number from 1 to 10")
                    })?,
                None => 2,
            };
            TransformKind::Polynomial { column, degree }
        }
        "bucketize" => {
            let column = column_arg(&function_name, &args)?;
            let bounds = match args.get(1) {
                Some(Expr::Array(array)) => array
                    .elem
                    .iter()
                    .map(|e| e.to_string().parse::<f64>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        syntax("bucketize bounds must be numbers, e.g. bucketize(x, [0, 10, 100])")
                    })?,
                _ => {
                    return Err(syntax(
                        "bucketize needs bounds, e.g. bucketize(x, [0, 10, 100])",
                    ))
                }
            };
            if bounds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(syntax("bucketize bounds must increase"));
            }
            TransformKind::Bucketize { column, bounds }
        }
        _ => TransformKind::Sql {
            expression: expr.to_string(),
        },
    };
    Ok(TransformSpec { name, kind })
}

impl KilnSession {
    /// Fits `specs` on the rows of `query` with one aggregate query.
    pub(crate) async fn fit_transforms(
        &self,
        query: &str,
        specs: &[TransformSpec],
    ) -> Result<Vec<FittedTransform>> {
        // Aggregates each spec needs, in order.
        let mut aggregates: Vec<String> = vec![];
        for spec in specs {
            match &spec.kind {
                TransformKind::StandardScale { column } => {
                    let c = quote(column);
                    aggregates.push(format!("CAST(avg(CAST({c} AS DOUBLE)) AS DOUBLE)"));
                    aggregates.push(format!("CAST(stddev_pop(CAST({c} AS DOUBLE)) AS DOUBLE)"));
                }
                TransformKind::MinMaxScale { column } => {
                    let c = quote(column);
                    aggregates.push(format!("CAST(min(CAST({c} AS DOUBLE)) AS DOUBLE)"));
                    aggregates.push(format!("CAST(max(CAST({c} AS DOUBLE)) AS DOUBLE)"));
                }
                TransformKind::Impute { column, with } => match with {
                    ImputeWith::Mean => aggregates.push(format!(
                        "CAST(avg(CAST({} AS DOUBLE)) AS DOUBLE)",
                        quote(column)
                    )),
                    ImputeWith::Median => aggregates.push(format!(
                        "CAST(median(CAST({} AS DOUBLE)) AS DOUBLE)",
                        quote(column)
                    )),
                    ImputeWith::Value(_) => {}
                },
                TransformKind::OneHot { column, .. } | TransformKind::LabelEncode { column } => {
                    aggregates.push(format!(
                        "array_sort(array_agg(DISTINCT CAST({} AS VARCHAR)))",
                        quote(column)
                    ))
                }
                TransformKind::Bucketize { .. }
                | TransformKind::Polynomial { .. }
                | TransformKind::Sql { .. } => {}
            }
        }
        let row = if aggregates.is_empty() {
            None
        } else {
            let batches = self
                .context()
                .sql(&format!(
                    "SELECT {} FROM ({query}) AS fit",
                    aggregates.join(", ")
                ))
                .await
                .map_err(|e| DataFusionError::Plan(format!("TRANSFORM: {e}")))?
                .collect()
                .await?;
            batches.into_iter().find(|b| b.num_rows() > 0)
        };
        let number = |i: usize| -> Option<f64> {
            let batch = row.as_ref()?;
            let column =
                datafusion::arrow::compute::cast(batch.column(i), &DataType::Float64).ok()?;
            let column = column.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            column.is_valid(0).then(|| column.value(0))
        };
        let categories_at = |i: usize| -> Vec<String> {
            row.as_ref()
                .and_then(|b| {
                    let list = b.column(i).as_list_opt::<i32>()?;
                    (!list.is_null(0)).then(|| {
                        list.value(0)
                            .as_string_opt::<i32>()
                            .map(|s| s.iter().flatten().map(str::to_string).collect())
                            .unwrap_or_default()
                    })
                })
                .unwrap_or_default()
        };
        let mut next = 0;
        let mut fitted = vec![];
        for spec in specs {
            let (sql, input) = match &spec.kind {
                TransformKind::StandardScale { column } => {
                    let (mean, std) =
                        (number(next).unwrap_or(0.0), number(next + 1).unwrap_or(1.0));
                    next += 2;
                    let std = if std > 0.0 { std } else { 1.0 };
                    (
                        format!("(CAST({} AS DOUBLE) - {mean:?}) / {std:?}", quote(column)),
                        Some(column),
                    )
                }
                TransformKind::MinMaxScale { column } => {
                    let (min, max) = (number(next).unwrap_or(0.0), number(next + 1).unwrap_or(1.0));
                    next += 2;
                    let range = if max > min { max - min } else { 1.0 };
                    (
                        format!("(CAST({} AS DOUBLE) - {min:?}) / {range:?}", quote(column)),
                        Some(column),
                    )
                }
                TransformKind::Impute { column, with } => {
                    let value = match with {
                        ImputeWith::Mean | ImputeWith::Median => {
                            let v = number(next).unwrap_or(0.0);
                            next += 1;
                            format!("{v:?}")
                        }
                        ImputeWith::Value(v) => v.clone(),
                    };
                    (
                        format!(
                            "coalesce(CAST({} AS DOUBLE), CAST({value} AS DOUBLE))",
                            quote(column)
                        ),
                        Some(column),
                    )
                }
                TransformKind::OneHot {
                    column,
                    max_categories,
                } => {
                    let categories = categories_at(next);
                    next += 1;
                    let kept: Vec<String> = categories.into_iter().take(*max_categories).collect();
                    let c = format!("CAST({} AS VARCHAR)", quote(column));
                    let mut slots: Vec<String> = kept
                        .iter()
                        .map(|k| format!("CASE WHEN {c} = {} THEN 1.0 ELSE 0.0 END", literal(k)))
                        .collect();
                    let known = kept
                        .iter()
                        .map(|k| literal(k))
                        .collect::<Vec<_>>()
                        .join(", ");
                    slots.push(if kept.is_empty() {
                        "1.0".to_string()
                    } else {
                        format!(
                            "CASE WHEN {c} IS NULL OR {c} NOT IN ({known}) THEN 1.0 ELSE 0.0 END"
                        )
                    });
                    (
                        format!(
                            "arrow_cast(make_array({}), 'FixedSizeList({}, Float64)')",
                            slots.join(", "),
                            slots.len()
                        ),
                        Some(column),
                    )
                }
                TransformKind::LabelEncode { column } => {
                    let categories = categories_at(next);
                    next += 1;
                    let c = format!("CAST({} AS VARCHAR)", quote(column));
                    let arms: String = categories
                        .iter()
                        .enumerate()
                        .map(|(i, k)| format!(" WHEN {c} = {} THEN {i}.0", literal(k)))
                        .collect();
                    let unseen = format!("{}.0", categories.len());
                    let sql = if arms.is_empty() {
                        unseen
                    } else {
                        format!("CASE{arms} ELSE {unseen} END")
                    };
                    (sql, Some(column))
                }
                TransformKind::Polynomial { column, degree } => {
                    let c = format!("CAST({} AS DOUBLE)", quote(column));
                    let powers: Vec<String> = (1..=*degree)
                        .map(|p| {
                            if p == 1 {
                                c.clone()
                            } else {
                                format!("power({c}, {p})")
                            }
                        })
                        .collect();
                    (
                        format!(
                            "arrow_cast(make_array({}), 'FixedSizeList({degree}, Float64)')",
                            powers.join(", ")
                        ),
                        Some(column),
                    )
                }
                TransformKind::Bucketize { column, bounds } => {
                    let c = format!("CAST({} AS DOUBLE)", quote(column));
                    let arms: String = bounds
                        .iter()
                        .enumerate()
                        .map(|(i, b)| format!(" WHEN {c} < {b:?} THEN {i}.0"))
                        .collect();
                    (
                        format!("CASE{arms} ELSE {}.0 END", bounds.len()),
                        Some(column),
                    )
                }
                TransformKind::Sql { expression } => (expression.clone(), None),
            };
            fitted.push(FittedTransform {
                name: spec.name.clone(),
                sql,
                input: input.cloned(),
            });
        }
        Ok(fitted)
    }
}

/// The training (or scoring) query with `transforms` applied: their outputs
/// replace the columns they consume; every other column passes through.
pub fn transformed_query(
    query: &str,
    columns: &[String],
    transforms: &[FittedTransform],
) -> String {
    let consumed: Vec<&str> = transforms
        .iter()
        .flat_map(|t| [Some(t.name.as_str()), t.input.as_deref()])
        .flatten()
        .collect();
    let mut select: Vec<String> = columns
        .iter()
        .filter(|c| !consumed.contains(&c.as_str()))
        .map(|c| quote(c))
        .collect();
    select.extend(
        transforms
            .iter()
            .map(|t| format!("{} AS {}", t.sql, quote(&t.name))),
    );
    format!("SELECT {} FROM ({query}) AS raw", select.join(", "))
}
