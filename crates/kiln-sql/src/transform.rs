//! `TRAIN MODEL ... TRANSFORM (expr AS name, ...)`: feature transforms fitted
//! on the training data (one aggregate query, plus one grouped aggregation
//! for each `most_frequent` and `tfidf`) and stored with the model as SQL
//! expressions, so `PREDICT`, `EVALUATE` and `predict()` apply exactly the
//! same arithmetic to new rows.
//!
//! Fitted: `standard_scale`, `min_max_scale`, `robust_scale`, `impute(x,
//! 'mean' | 'median' | 'most_frequent' | value)`, `one_hot(x [, max])` (one
//! slot per sorted category up to `max` (20) plus an "other" slot),
//! `label_encode`, `quantile_bucketize(x, n)`, `tfidf(text, n)` (IDF per hash
//! bucket). Stateless: `bucketize(x, [bounds])`, `polynomial(x, degree)`,
//! `hash_bucket(x, n)` and `feature_cross(a, b, n)` (one-hot vectors of
//! width n here) and the functions of [`crate::feature_fns`]. Any other SQL
//! expression is applied as written. [`rewrite_fitted_calls`] gives the
//! fitted functions a meaning in ordinary queries (window aggregates).

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
    /// `(x - median) / IQR`: scaling that outliers do not dominate.
    RobustScale {
        column: String,
    },
    /// Buckets at the training data's n-quantiles.
    QuantileBucketize {
        column: String,
        buckets: usize,
    },
    /// `hash_bucket(x, n)` / `feature_cross(a, b, n)` as a one-hot vector of width n.
    Hashed {
        columns: Vec<String>,
        buckets: usize,
    },
    /// `tfidf(text, n)`: hashed term frequencies weighted by the training
    /// rows' inverse document frequencies, L2-normalized.
    Tfidf {
        column: String,
        buckets: usize,
    },
    /// A stateless feature function (`hashed_tf`, `day_of_week`, ...) whose
    /// column arguments it consumes.
    Stateless {
        expression: String,
        columns: Vec<String>,
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
    MostFrequent,
    Value(String),
}

/// A fitted transform: the output column and the SQL that computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedTransform {
    pub name: String,
    pub sql: String,
    /// The input column a fitted transform consumes (dropped from pass-through).
    pub input: Option<String>,
    /// Further input columns it consumes (`feature_cross(a, b, n)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_consumes: Vec<String>,
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

/// A function call's positional arguments.
fn unnamed_args(function: &datafusion::sql::sqlparser::ast::Function) -> Vec<Expr> {
    match &function.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// A whole-number argument such as the bucket count `n`.
fn count_arg(
    function: &str,
    arg: Option<&Expr>,
    example: &str,
    min: usize,
    max: usize,
) -> Result<usize> {
    arg.map(ToString::to_string)
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            syntax(format!(
                "{function} needs a whole number from {min} to {max} as its last argument, e.g. {example}"
            ))
        })
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
    let args = unnamed_args(function);
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
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("mean") => {
                        ImputeWith::Mean
                    }
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("median") => {
                        ImputeWith::Median
                    }
                    Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("most_frequent") => {
                        ImputeWith::MostFrequent
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
        "robust_scale" => TransformKind::RobustScale {
            column: column_arg(&function_name, &args)?,
        },
        "quantile_bucketize" => TransformKind::QuantileBucketize {
            column: column_arg(&function_name, &args)?,
            buckets: count_arg(
                &function_name,
                args.get(1),
                "quantile_bucketize(x, 4)",
                2,
                100,
            )?,
        },
        "hash_bucket" => TransformKind::Hashed {
            columns: vec![column_arg(&function_name, &args)?],
            buckets: count_arg(&function_name, args.get(1), "hash_bucket(x, 100)", 1, 65536)?,
        },
        "feature_cross" => {
            let second = column_arg(&function_name, &args[1.min(args.len())..])?;
            TransformKind::Hashed {
                columns: vec![column_arg(&function_name, &args)?, second],
                buckets: count_arg(
                    &function_name,
                    args.get(2),
                    "feature_cross(a, b, 100)",
                    1,
                    65536,
                )?,
            }
        }
        "tfidf" => TransformKind::Tfidf {
            column: column_arg(&function_name, &args)?,
            buckets: count_arg(&function_name, args.get(1), "tfidf(text, 1000)", 1, 65536)?,
        },
        name if crate::feature_fns::is_feature_function(name) => TransformKind::Stateless {
            expression: expr.to_string(),
            columns: args
                .iter()
                .filter_map(|a| match a {
                    Expr::Identifier(id) => Some(if id.quote_style.is_some() {
                        id.value.clone()
                    } else {
                        id.value.to_lowercase()
                    }),
                    _ => None,
                })
                .collect(),
        },
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
                TransformKind::RobustScale { column } => {
                    let c = quote(column);
                    aggregates.push(format!("CAST(median(CAST({c} AS DOUBLE)) AS DOUBLE)"));
                    for q in [0.25, 0.75] {
                        aggregates.push(format!(
                            "CAST(approx_percentile_cont(CAST({c} AS DOUBLE), {q}) AS DOUBLE)"
                        ));
                    }
                }
                TransformKind::QuantileBucketize { column, buckets } => {
                    let c = quote(column);
                    for i in 1..*buckets {
                        aggregates.push(format!(
                            "CAST(approx_percentile_cont(CAST({c} AS DOUBLE), {:?}) AS DOUBLE)",
                            i as f64 / *buckets as f64
                        ));
                    }
                }
                TransformKind::Tfidf { .. } => {
                    aggregates.push("CAST(count(*) AS DOUBLE)".to_string())
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
                    ImputeWith::Value(_) | ImputeWith::MostFrequent => {}
                },
                TransformKind::OneHot { column, .. } | TransformKind::LabelEncode { column } => {
                    aggregates.push(format!(
                        "array_sort(array_agg(DISTINCT CAST({} AS VARCHAR)))",
                        quote(column)
                    ))
                }
                TransformKind::Bucketize { .. }
                | TransformKind::Polynomial { .. }
                | TransformKind::Hashed { .. }
                | TransformKind::Stateless { .. }
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
                    aggregates
                        .iter()
                        .enumerate()
                        .map(|(i, a)| format!("{a} AS stat_{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
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
                TransformKind::RobustScale { column } => {
                    let median = number(next).unwrap_or(0.0);
                    let (q1, q3) = (
                        number(next + 1).unwrap_or(0.0),
                        number(next + 2).unwrap_or(1.0),
                    );
                    next += 3;
                    let iqr = if q3 > q1 { q3 - q1 } else { 1.0 };
                    (
                        format!("(CAST({} AS DOUBLE) - {median:?}) / {iqr:?}", quote(column)),
                        Some(column),
                    )
                }
                TransformKind::QuantileBucketize { column, buckets } => {
                    let mut bounds: Vec<f64> =
                        (0..buckets - 1).filter_map(|i| number(next + i)).collect();
                    next += buckets - 1;
                    bounds.dedup();
                    (bucketize_sql(&as_double(column), &bounds), Some(column))
                }
                TransformKind::Hashed { columns, buckets } => {
                    let index = match columns.as_slice() {
                        [one] => format!("hash_bucket({}, {buckets})", quote(one)),
                        [a, b, ..] => {
                            format!("feature_cross({}, {}, {buckets})", quote(a), quote(b))
                        }
                        [] => unreachable!("hash transforms have a column"),
                    };
                    (
                        format!("one_hot_index({index}, {buckets})"),
                        columns.first(),
                    )
                }
                TransformKind::Tfidf { column, buckets } => {
                    let documents = number(next).unwrap_or(0.0);
                    next += 1;
                    let idf = self
                        .inverse_document_frequencies(query, column, *buckets, documents)
                        .await?;
                    let weights: Vec<String> = idf.iter().map(|w| format!("{w:?}")).collect();
                    (
                        format!(
                            "tfidf({}, {buckets}, make_array({}))",
                            quote(column),
                            weights.join(", ")
                        ),
                        Some(column),
                    )
                }
                TransformKind::Stateless {
                    expression,
                    columns,
                } => (expression.clone(), columns.first()),
                TransformKind::Impute {
                    column,
                    with: ImputeWith::MostFrequent,
                } => {
                    let value = self.most_frequent(query, column).await?;
                    let sql = match value {
                        Some(v) if v.parse::<f64>().is_ok() => format!(
                            "coalesce(CAST({} AS DOUBLE), CAST({} AS DOUBLE))",
                            quote(column),
                            literal(&v)
                        ),
                        Some(v) => format!(
                            "coalesce(CAST({} AS VARCHAR), {})",
                            quote(column),
                            literal(&v)
                        ),
                        None => quote(column),
                    };
                    (sql, Some(column))
                }
                TransformKind::Impute { column, with } => {
                    let value = match with {
                        ImputeWith::Mean | ImputeWith::Median => {
                            let v = number(next).unwrap_or(0.0);
                            next += 1;
                            format!("{v:?}")
                        }
                        ImputeWith::Value(v) => v.clone(),
                        ImputeWith::MostFrequent => unreachable!("handled above"),
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
                    let kept = if categories.len() > *max_categories {
                        self.most_frequent_categories(query, column, *max_categories)
                            .await?
                    } else {
                        categories
                    };
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
                    (polynomial_sql(&as_double(column), *degree), Some(column))
                }
                TransformKind::Bucketize { column, bounds } => {
                    (bucketize_sql(&as_double(column), bounds), Some(column))
                }
                TransformKind::Sql { expression } => (expression.clone(), None),
            };
            let also_consumes = match &spec.kind {
                TransformKind::Hashed { columns, .. }
                | TransformKind::Stateless { columns, .. } => {
                    columns.iter().skip(1).cloned().collect()
                }
                _ => vec![],
            };
            fitted.push(FittedTransform {
                name: spec.name.clone(),
                sql,
                input: input.cloned(),
                also_consumes,
            });
        }
        Ok(fitted)
    }

    /// The most frequent non-NULL value of `column` (ties: the smallest as text).
    async fn most_frequent(&self, query: &str, column: &str) -> Result<Option<String>> {
        Ok(self
            .most_frequent_categories(query, column, 1)
            .await?
            .into_iter()
            .next())
    }

    /// The `limit` most frequent non-NULL values of `column` as text (ties:
    /// the smaller text first), returned in sorted order. One grouped aggregation.
    async fn most_frequent_categories(
        &self,
        query: &str,
        column: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let c = quote(column);
        let batches = self
            .context()
            .sql(&format!(
                "SELECT CAST({c} AS VARCHAR) AS v, count(*) AS n FROM ({query}) AS fit \
                 WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY n DESC, v LIMIT {limit}"
            ))
            .await
            .map_err(|e| DataFusionError::Plan(format!("TRANSFORM: {e}")))?
            .collect()
            .await?;
        let mut values: Vec<String> = batches
            .iter()
            .filter_map(|b| b.column(0).as_string_opt::<i32>())
            .flat_map(|values| {
                values
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        values.sort();
        Ok(values)
    }

    /// Smoothed IDF per hash bucket, as scikit-learn computes it:
    /// `ln((1 + N) / (1 + df)) + 1`, with `df` the rows whose text has a
    /// token in the bucket (one grouped aggregation).
    async fn inverse_document_frequencies(
        &self,
        query: &str,
        column: &str,
        buckets: usize,
        documents: f64,
    ) -> Result<Vec<f64>> {
        let batches = self
            .context()
            .sql(&format!(
                "SELECT b, CAST(count(*) AS DOUBLE) AS df FROM (SELECT unnest(array_distinct(\
                 token_buckets({}, {buckets}))) AS b FROM ({query}) AS fit) AS t GROUP BY b",
                quote(column)
            ))
            .await
            .map_err(|e| DataFusionError::Plan(format!("TRANSFORM: {e}")))?
            .collect()
            .await?;
        let mut df = vec![0.0; buckets];
        for batch in &batches {
            let b = datafusion::arrow::compute::cast(batch.column(0), &DataType::Int64)?;
            let b = b.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let n = batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            for row in 0..batch.num_rows() {
                if let Some(slot) = usize::try_from(b.value(row)).ok().filter(|s| *s < buckets) {
                    df[slot] = n.value(row);
                }
            }
        }
        Ok(df
            .iter()
            .map(|d| ((1.0 + documents) / (1.0 + d)).ln() + 1.0)
            .collect())
    }
}

/// `column` as a DOUBLE, the input of the numeric transforms.
fn as_double(column: &str) -> String {
    format!("CAST({} AS DOUBLE)", quote(column))
}

/// The bucket index of `value` (a DOUBLE expression): 0 below the first bound.
fn bucketize_sql(value: &str, bounds: &[f64]) -> String {
    let arms: String = bounds
        .iter()
        .enumerate()
        .map(|(i, b)| format!(" WHEN {value} < {b:?} THEN {i}.0"))
        .collect();
    if arms.is_empty() {
        "0.0".to_string()
    } else {
        format!("CASE{arms} ELSE {}.0 END", bounds.len())
    }
}

/// `[value, value², …, value^degree]` as a fixed-size vector.
fn polynomial_sql(value: &str, degree: usize) -> String {
    let powers: Vec<String> = (1..=degree)
        .map(|p| {
            if p == 1 {
                value.to_string()
            } else {
                format!("power({value}, {p})")
            }
        })
        .collect();
    format!(
        "arrow_cast(make_array({}), 'FixedSizeList({degree}, Float64)')",
        powers.join(", ")
    )
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
        .flat_map(|t| {
            [Some(t.name.as_str()), t.input.as_deref()]
                .into_iter()
                .flatten()
                .chain(t.also_consumes.iter().map(String::as_str))
        })
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

/// The fitted functions in an ordinary query: each becomes window
/// aggregates over the query's rows (`standard_scale(x)` is
/// `(x - avg(x) OVER ()) / stddev_pop(x) OVER ()`), as BigQuery's
/// `ML.STANDARD_SCALER(x) OVER ()` is. Functions whose output width depends
/// on the data (`one_hot`, `quantile_bucketize`, `tfidf`) exist only in
/// TRANSFORM. Returns whether anything changed.
pub fn rewrite_fitted_calls(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
) -> Result<bool> {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;
    use std::ops::ControlFlow;
    let mut changed = false;
    let flow = visit_expressions_mut(statement, |expr| {
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        if function.over.is_some() {
            return ControlFlow::Continue(());
        }
        let name = function.name.to_string().to_lowercase();
        let args = unnamed_args(function);
        let Some(x) = args.first() else {
            return ControlFlow::Continue(());
        };
        let d = format!("CAST({x} AS DOUBLE)");
        let all = "OVER ()";
        let sql = match name.as_str() {
            "standard_scale" => format!(
                "(({d} - avg({d}) {all}) / coalesce(nullif(stddev_pop({d}) {all}, 0), 1))"
            ),
            "min_max_scale" => format!(
                "(({d} - min({d}) {all}) / coalesce(nullif(max({d}) {all} - min({d}) {all}, 0), 1))"
            ),
            "robust_scale" => format!(
                "(({d} - median({d}) {all}) / coalesce(nullif(approx_percentile_cont({d}, 0.75) {all} \
                 - approx_percentile_cont({d}, 0.25) {all}, 0), 1))"
            ),
            "impute" => match args.get(1).map(|a| a.to_string().to_lowercase()) {
                None => format!("coalesce({d}, avg({d}) {all})"),
                Some(w) if w == "'mean'" => format!("coalesce({d}, avg({d}) {all})"),
                Some(w) if w == "'median'" => format!("coalesce({d}, median({d}) {all})"),
                Some(w) if w == "'most_frequent'" => {
                    return ControlFlow::Break(DataFusionError::NotImplemented(
                        "impute(x, 'most_frequent') outside TRANSFORM is not supported yet; \
                         use it in TRANSFORM (...) or impute with 'mean', 'median' or a value"
                            .to_string(),
                    ))
                }
                Some(_) => format!("coalesce({d}, CAST({} AS DOUBLE))", args[1]),
            },
            "label_encode" => format!(
                "CASE WHEN {x} IS NULL THEN NULL ELSE CAST(dense_rank() OVER (ORDER BY CAST({x} AS VARCHAR)) - 1 AS DOUBLE) END"
            ),
            "polynomial" | "bucketize" => {
                let Ok(spec) = spec(expr, String::new()) else {
                    return ControlFlow::Continue(());
                };
                match spec.kind {
                    TransformKind::Polynomial { degree, .. } => polynomial_sql(&d, degree),
                    TransformKind::Bucketize { bounds, .. } => bucketize_sql(&d, &bounds),
                    _ => return ControlFlow::Continue(()),
                }
            }
            "one_hot" | "quantile_bucketize" => {
                return ControlFlow::Break(DataFusionError::NotImplemented(format!(
                    "{name}(...) works inside TRANSFORM (...) of TRAIN MODEL only: its output width \
                     comes from the training data; in a query use one_hot_index(hash_bucket(x, n), n) \
                     or bucketize(x, [bounds])"
                )))
            }
            _ => return ControlFlow::Continue(()),
        };
        match datafusion::sql::sqlparser::parser::Parser::new(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
        )
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_expr())
        {
            Ok(rewritten) => {
                *expr = rewritten;
                changed = true;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(DataFusionError::Internal(format!(
                "rewriting {name}(...): {e}"
            ))),
        }
    });
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(changed),
    }
}
