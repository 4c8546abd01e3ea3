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
//! width n here) and the functions of [`crate::functions::features`]. Any
//! other SQL expression is applied as written. The grammar is
//! `parse/transform.rs`, the stored form `catalog/transform.rs`;
//! [`crate::parse::rewrite::rewrite_fitted_calls`] gives the fitted functions
//! a meaning in ordinary queries (window aggregates).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};

use crate::catalog::quote::{quote_ident as quote, quote_literal as literal};
use crate::catalog::transform::{bucketize_sql, polynomial_sql, FittedTransform};
use crate::parse::transform::{ImputeWith, TransformKind, TransformSpec};
use crate::session::KilnSession;

/// Fits `specs` on the rows of `query` with one aggregate query.
pub(crate) async fn fit_transforms(
    session: &KilnSession,
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
            TransformKind::Tfidf { .. } => aggregates.push("CAST(count(*) AS DOUBLE)".to_string()),
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
        let batches = session
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
        let column = datafusion::arrow::compute::cast(batch.column(i), &DataType::Float64).ok()?;
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
                let (mean, std) = (number(next).unwrap_or(0.0), number(next + 1).unwrap_or(1.0));
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
                let idf = inverse_document_frequencies(session, query, column, *buckets, documents)
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
                let value = most_frequent(session, query, column).await?;
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
                    most_frequent_categories(session, query, column, *max_categories).await?
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
                    format!("CASE WHEN {c} IS NULL OR {c} NOT IN ({known}) THEN 1.0 ELSE 0.0 END")
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
            TransformKind::Hashed { columns, .. } | TransformKind::Stateless { columns, .. } => {
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
pub(crate) async fn most_frequent(
    session: &KilnSession,
    query: &str,
    column: &str,
) -> Result<Option<String>> {
    Ok(most_frequent_categories(session, query, column, 1)
        .await?
        .into_iter()
        .next())
}

/// The `limit` most frequent non-NULL values of `column` as text (ties:
/// the smaller text first), returned in sorted order. One grouped aggregation.
pub(crate) async fn most_frequent_categories(
    session: &KilnSession,
    query: &str,
    column: &str,
    limit: usize,
) -> Result<Vec<String>> {
    let c = quote(column);
    let batches = session
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
pub(crate) async fn inverse_document_frequencies(
    session: &KilnSession,
    query: &str,
    column: &str,
    buckets: usize,
    documents: f64,
) -> Result<Vec<f64>> {
    let batches = session
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

/// `column` as a DOUBLE, the input of the numeric transforms.
fn as_double(column: &str) -> String {
    format!("CAST({} AS DOUBLE)", quote(column))
}
