//! Stored transforms: a fitted TRANSFORM output as the model card keeps it
//! (its SQL), and the SQL that applies fitted transforms to a query.

use serde::{Deserialize, Serialize};

use crate::catalog::quote::quote_ident as quote;

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

/// The bucket index of `value` (a DOUBLE expression): 0 below the first bound.
pub(crate) fn bucketize_sql(value: &str, bounds: &[f64]) -> String {
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
pub(crate) fn polynomial_sql(value: &str, degree: usize) -> String {
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
