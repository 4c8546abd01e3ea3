//! Stored checks: a check's expectations, severities and failure action as
//! the lake catalog keeps them, and the outcomes a model card records.

use serde::{Deserialize, Serialize};

/// How a failed expectation is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The statement (and a script or job) fails.
    Error,
    /// Recorded and reported; execution continues.
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
        }
    }
}

/// One `EXPECT ...` of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expectation {
    /// Fraction of NULLs per column at most `tolerance` (0 by default).
    NotNull {
        columns: Vec<String>,
        tolerance: f64,
    },
    /// No two rows share the (non-NULL) values of `columns`.
    Unique { columns: Vec<String> },
    /// Non-NULL values lie in `[low, high]` (SQL expressions).
    Between {
        column: String,
        low: String,
        high: String,
    },
    /// Non-NULL values are one of `values` (SQL literals).
    In { column: String, values: Vec<String> },
    /// Non-NULL values match the regular expression.
    Matches { column: String, pattern: String },
    /// The boolean SQL expression holds on every row (NULL counts as false).
    Row { expression: String },
    /// The number of rows lies in `[low, high]`.
    RowCount { low: f64, high: f64 },
    /// No value of `columns` contains personal data (the PII detectors of `functions/pii.rs`).
    NoPii { columns: Vec<String> },
    /// The newest `column` value is younger than `interval` (SQL text);
    /// `max_age_seconds` is resolved by CREATE CHECK.
    Freshness {
        column: String,
        interval: String,
        max_age_seconds: f64,
    },
    /// Columns have these types (`type_sql`, resolved to Arrow type names by
    /// CREATE CHECK) and, where `not_null`, no NULLs.
    Schema { columns: Vec<SchemaColumn> },
    /// Every non-NULL `column` value exists in `other_table.other_column`.
    References {
        column: String,
        other_table: String,
        other_column: String,
    },
}

/// One column of `EXPECT SCHEMA (...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaColumn {
    pub name: String,
    pub type_sql: String,
    pub arrow_type: String,
    pub not_null: bool,
}

/// An expectation with its own severity and the text it was written as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub expect: Expectation,
    pub severity: Option<Severity>,
    pub text: String,
}

/// What a run does with rows that fail row-level expectations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OnFailure {
    /// Fail (ERROR) or record (WARN), leaving the data as it is.
    #[default]
    Fail,
    /// Move failing rows, with the names of the constraints they failed, to
    /// `table`, and publish the passing rows.
    Quarantine { table: String },
    /// Publish only the passing rows.
    Filter,
}

/// A stored check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckDef {
    pub name: String,
    pub table: String,
    pub filter: Option<String>,
    pub constraints: Vec<Constraint>,
    pub severity: Severity,
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// How a constraint is named in results: its EXPECT clause.
pub(crate) fn constraint_text(e: &Expectation) -> String {
    match e {
        Expectation::NotNull { columns, tolerance } if *tolerance > 0.0 => {
            format!(
                "NOT NULL ({}) TOLERANCE {}%",
                columns.join(", "),
                tolerance * 100.0
            )
        }
        Expectation::NotNull { columns, .. } => format!("NOT NULL ({})", columns.join(", ")),
        Expectation::Unique { columns } => format!("UNIQUE ({})", columns.join(", ")),
        Expectation::Between { column, low, high } => format!("{column} BETWEEN {low} AND {high}"),
        Expectation::In { column, values } => format!("{column} IN ({})", values.join(", ")),
        Expectation::Matches { column, pattern } => format!("{column} MATCHES '{pattern}'"),
        Expectation::Row { expression } => format!("ROW ({expression})"),
        Expectation::RowCount { low, high } => format!("ROW_COUNT BETWEEN {low} AND {high}"),
        Expectation::NoPii { columns } => format!("NO PII ({})", columns.join(", ")),
        Expectation::Freshness {
            column, interval, ..
        } => format!("FRESHNESS ({column}) < {interval}"),
        Expectation::Schema { columns } => format!(
            "SCHEMA ({})",
            columns
                .iter()
                .map(|c| format!(
                    "{} {}{}",
                    c.name,
                    c.type_sql,
                    if c.not_null { " NOT NULL" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Expectation::References {
            column,
            other_table,
            other_column,
        } => {
            format!("{column} REFERENCES {other_table} ({other_column})")
        }
    }
}

/// One constraint's result as the model card keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub run_id: String,
    pub check: String,
    pub constraint: String,
    pub metric: String,
    pub value: f64,
    pub status: String,
    pub severity: String,
}
