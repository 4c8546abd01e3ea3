//! Governance checks: `CREATE [OR REPLACE] CHECK`, `RUN CHECK name`,
//! `RUN CHECKS ON table`, `SHOW CHECKS`, `DROP CHECK`.
//!
//! A check is stored in the lake catalog. Running it evaluates every
//! expectation as an aggregate of **one** query over the table (one
//! distributed scan), records one row per expectation in the system table
//! `kiln.check_results` (Parquet under `_kiln/check_results/`), and fails the
//! statement when an expectation of severity ERROR fails (WARN only records).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use serde::{Deserialize, Serialize};

use crate::parser::{quote_ident as quote, quote_literal};
use crate::session::{KilnSession, StatementResult};

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
    fn as_str(self) -> &'static str {
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
    /// No value of `columns` contains personal data ([`crate::pii::pii_kind`]).
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

/// A parsed check statement.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckStatement {
    Create { check: CheckDef, or_replace: bool },
    Run { name: String },
    RunOn { table: String },
    Show,
    Drop { name: String, if_exists: bool },
}

fn word(parser: &Parser, n: usize) -> String {
    match &parser.peek_nth_token(n).token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    }
}

use crate::ml::{expect_word as expect, ident as name, syntax, take_word as take};

fn token(parser: &mut Parser, t: Token, context: &str) -> Result<()> {
    parser
        .expect_token(&t)
        .map(|_| ())
        .map_err(|e| syntax(format!("{context}: {e}")))
}

fn column_list(parser: &mut Parser, context: &str) -> Result<Vec<String>> {
    token(parser, Token::LParen, context)?;
    let mut columns = vec![name(parser, "a column")?];
    while parser.consume_token(&Token::Comma) {
        columns.push(name(parser, "a column")?);
    }
    token(parser, Token::RParen, context)?;
    Ok(columns)
}

fn number(parser: &mut Parser, context: &str) -> Result<f64> {
    let negative = parser.consume_token(&Token::Minus);
    match parser.next_token().token {
        Token::Number(n, _) => n
            .parse::<f64>()
            .map(|v| if negative { -v } else { v })
            .map_err(|_| syntax(format!("{context}: invalid number {n}"))),
        other => Err(syntax(format!(
            "{context}: expected a number, found {other}"
        ))),
    }
}

fn severity(parser: &mut Parser) -> Result<Option<Severity>> {
    if !take(parser, "SEVERITY") {
        return Ok(None);
    }
    if take(parser, "ERROR") {
        Ok(Some(Severity::Error))
    } else if take(parser, "WARN") || take(parser, "WARNING") {
        Ok(Some(Severity::Warn))
    } else {
        Err(syntax(format!(
            "SEVERITY must be ERROR or WARN, found {}",
            parser.peek_token()
        )))
    }
}

/// Parses one `EXPECT ...` (the word EXPECT already consumed).
fn expectation(parser: &mut Parser) -> Result<Expectation> {
    let first = word(parser, 0);
    let second = word(parser, 1);
    match (first.as_str(), second.as_str()) {
        ("NOT", "NULL") => {
            parser.next_token();
            parser.next_token();
            let columns = column_list(parser, "EXPECT NOT NULL (columns)")?;
            let mut tolerance = 0.0;
            if take(parser, "TOLERANCE") {
                tolerance = number(parser, "TOLERANCE")?;
                if parser.consume_token(&Token::Mod) {
                    tolerance /= 100.0;
                }
                if !(0.0..=1.0).contains(&tolerance) {
                    return Err(syntax("TOLERANCE must be between 0% and 100%"));
                }
            }
            Ok(Expectation::NotNull { columns, tolerance })
        }
        ("UNIQUE", _) => {
            parser.next_token();
            Ok(Expectation::Unique {
                columns: column_list(parser, "EXPECT UNIQUE (columns)")?,
            })
        }
        ("ROW", _) => {
            parser.next_token();
            token(parser, Token::LParen, "EXPECT ROW (expression)")?;
            let expression = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
            token(parser, Token::RParen, "EXPECT ROW (expression)")?;
            Ok(Expectation::Row {
                expression: expression.to_string(),
            })
        }
        ("ROW_COUNT", _) => {
            parser.next_token();
            expect(parser, "BETWEEN", "EXPECT ROW_COUNT BETWEEN lo AND hi")?;
            let low = number(parser, "ROW_COUNT")?;
            expect(parser, "AND", "EXPECT ROW_COUNT BETWEEN lo AND hi")?;
            let high = number(parser, "ROW_COUNT")?;
            Ok(Expectation::RowCount { low, high })
        }
        ("NO", "PII") => {
            parser.next_token();
            parser.next_token();
            Ok(Expectation::NoPii {
                columns: column_list(parser, "EXPECT NO PII (columns)")?,
            })
        }
        ("FRESHNESS", _) => {
            parser.next_token();
            let columns = column_list(parser, "EXPECT FRESHNESS (column) < INTERVAL '...'")?;
            let [column] = columns.as_slice() else {
                return Err(syntax("EXPECT FRESHNESS takes one timestamp column"));
            };
            token(
                parser,
                Token::Lt,
                "EXPECT FRESHNESS (column) < INTERVAL '...'",
            )?;
            let interval = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
            Ok(Expectation::Freshness {
                column: column.clone(),
                interval: interval.to_string(),
                max_age_seconds: f64::NAN,
            })
        }
        ("SCHEMA", _) => {
            parser.next_token();
            token(
                parser,
                Token::LParen,
                "EXPECT SCHEMA (column TYPE [NOT NULL], ...)",
            )?;
            let mut columns = vec![];
            loop {
                let column = name(parser, "a column in EXPECT SCHEMA")?;
                let data_type = parser
                    .parse_data_type()
                    .map_err(|e| syntax(format!("EXPECT SCHEMA column {column}: {e}")))?;
                let not_null = take(parser, "NOT");
                if not_null {
                    expect(parser, "NULL", "EXPECT SCHEMA (column TYPE NOT NULL)")?;
                }
                columns.push(SchemaColumn {
                    name: column,
                    type_sql: data_type.to_string(),
                    arrow_type: String::new(),
                    not_null,
                });
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            token(
                parser,
                Token::RParen,
                "EXPECT SCHEMA (column TYPE [NOT NULL], ...)",
            )?;
            Ok(Expectation::Schema { columns })
        }
        _ => {
            use datafusion::sql::sqlparser::ast::Expr;
            let column_of = |e: &Expr| match e {
                Expr::Identifier(id) => Some(if id.quote_style.is_some() {
                    id.value.clone()
                } else {
                    id.value.to_lowercase()
                }),
                _ => None,
            };
            let parsed = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
            match &parsed {
                Expr::Between {
                    expr,
                    negated: false,
                    low,
                    high,
                } if column_of(expr).is_some() => Ok(Expectation::Between {
                    column: column_of(expr).expect("checked"),
                    low: low.to_string(),
                    high: high.to_string(),
                }),
                Expr::InList {
                    expr,
                    list,
                    negated: false,
                } if column_of(expr).is_some() => Ok(Expectation::In {
                    column: column_of(expr).expect("checked"),
                    values: list.iter().map(ToString::to_string).collect(),
                }),
                e if column_of(e).is_some() && take(parser, "REFERENCES") => {
                    let column = column_of(e).expect("checked");
                    let other_table = name(parser, "a table after REFERENCES")?;
                    let other = column_list(parser, "EXPECT col REFERENCES table (column)")?;
                    let [other_column] = other.as_slice() else {
                        return Err(syntax("REFERENCES takes one column"));
                    };
                    Ok(Expectation::References {
                        column,
                        other_table,
                        other_column: other_column.clone(),
                    })
                }
                e if column_of(e).is_some() && take(parser, "MATCHES") => {
                    let column = column_of(e).expect("checked");
                    match parser.next_token().token {
                        Token::SingleQuotedString(pattern) => {
                            regex_check(&pattern)?;
                            Ok(Expectation::Matches { column, pattern })
                        }
                        other => Err(syntax(format!(
                            "EXPECT {column} MATCHES needs a quoted regular expression, found {other}"
                        ))),
                    }
                }
                other => Err(syntax(format!(
                    "EXPECT {other}: expected NOT NULL (...), UNIQUE (...), col BETWEEN lo AND hi, \
                     col IN (...), col MATCHES 'regex', ROW (...) or ROW_COUNT BETWEEN lo AND hi"
                ))),
            }
        }
    }
}

/// Rejects patterns the regex engine would refuse at run time.
fn regex_check(pattern: &str) -> Result<()> {
    if pattern.contains('\'') {
        return Err(syntax("MATCHES patterns cannot contain a single quote"));
    }
    Ok(())
}

/// Parses a check statement; `None` when `sql` is not one.
pub fn parse(sql: &str) -> Result<Option<CheckStatement>> {
    let dialect = GenericDialect {};
    let Ok(mut parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(None);
    };
    let (w0, w1, w2) = (word(&parser, 0), word(&parser, 1), word(&parser, 2));
    let statement = match (w0.as_str(), w1.as_str(), w2.as_str()) {
        ("CREATE", "CHECK", _) | ("CREATE", "OR", "REPLACE")
            if w1 == "CHECK" || word(&parser, 3) == "CHECK" =>
        {
            parser.next_token();
            let or_replace = take(&mut parser, "OR");
            if or_replace {
                expect(&mut parser, "REPLACE", "CREATE OR REPLACE CHECK")?;
            }
            expect(&mut parser, "CHECK", "CREATE CHECK")?;
            let check_name = name(&mut parser, "a check name")?;
            expect(&mut parser, "ON", "CREATE CHECK name ON table")?;
            let table = name(&mut parser, "a table after ON")?;
            let filter = if take(&mut parser, "WHERE") {
                Some(
                    parser
                        .parse_expr()
                        .map_err(|e| syntax(e.to_string()))?
                        .to_string(),
                )
            } else {
                None
            };
            token(
                &mut parser,
                Token::LParen,
                "CREATE CHECK ... (EXPECT ..., ...)",
            )?;
            let mut constraints = vec![];
            loop {
                expect(&mut parser, "EXPECT", "each constraint of a check")?;
                let expect_kind = expectation(&mut parser)?;
                let text = constraint_text(&expect_kind);
                let severity = severity(&mut parser)?;
                constraints.push(Constraint {
                    expect: expect_kind,
                    severity,
                    text,
                });
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            token(
                &mut parser,
                Token::RParen,
                "CREATE CHECK ... (EXPECT ..., ...)",
            )?;
            let severity = severity(&mut parser)?.unwrap_or(Severity::Error);
            let mut on_failure = OnFailure::Fail;
            if take(&mut parser, "ON") {
                expect(&mut parser, "FAILURE", "ON FAILURE")?;
                on_failure = if take(&mut parser, "FAIL") {
                    OnFailure::Fail
                } else if take(&mut parser, "FILTER") {
                    OnFailure::Filter
                } else if take(&mut parser, "QUARANTINE") {
                    expect(&mut parser, "INTO", "ON FAILURE QUARANTINE INTO table")?;
                    OnFailure::Quarantine {
                        table: name(&mut parser, "a quarantine table")?,
                    }
                } else {
                    return Err(syntax(format!(
                        "ON FAILURE must be FAIL, QUARANTINE INTO table or FILTER, found {}",
                        parser.peek_token()
                    )));
                };
            }
            end(&parser, "CREATE CHECK")?;
            CheckStatement::Create {
                check: CheckDef {
                    name: check_name,
                    table,
                    filter,
                    constraints,
                    severity,
                    on_failure,
                },
                or_replace,
            }
        }
        ("RUN", "CHECK", _) => {
            parser.next_token();
            parser.next_token();
            let check_name = name(&mut parser, "a check name after RUN CHECK")?;
            end(&parser, "RUN CHECK")?;
            CheckStatement::Run { name: check_name }
        }
        ("RUN", "CHECKS", "ON") => {
            for _ in 0..3 {
                parser.next_token();
            }
            let table = name(&mut parser, "a table after RUN CHECKS ON")?;
            end(&parser, "RUN CHECKS ON")?;
            CheckStatement::RunOn { table }
        }
        ("SHOW", "CHECKS", _) => {
            parser.next_token();
            parser.next_token();
            end(&parser, "SHOW CHECKS")?;
            CheckStatement::Show
        }
        ("DROP", "CHECK", _) => {
            parser.next_token();
            parser.next_token();
            let if_exists = take(&mut parser, "IF");
            if if_exists {
                expect(&mut parser, "EXISTS", "DROP CHECK IF EXISTS")?;
            }
            let check_name = name(&mut parser, "a check name after DROP CHECK")?;
            end(&parser, "DROP CHECK")?;
            CheckStatement::Drop {
                name: check_name,
                if_exists,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(statement))
}

fn end(parser: &Parser, statement: &str) -> Result<()> {
    match parser.peek_token().token {
        Token::EOF | Token::SemiColon => Ok(()),
        other => Err(syntax(format!("{statement}: unexpected {other}"))),
    }
}

/// How a constraint is named in results: its EXPECT clause.
fn constraint_text(e: &Expectation) -> String {
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

/// One measured value of a constraint: its SQL aggregate, the metric's name,
/// and how the value is judged.
struct Measure {
    constraint: usize,
    metric: String,
    sql: String,
    threshold: String,
    passes: Box<dyn Fn(f64) -> bool + Send>,
    /// For row-level expectations: the predicate true on a failing row.
    row_condition: Option<String>,
}

impl Measure {
    /// A count of failing rows that must be zero.
    fn failing_rows(constraint: usize, metric: String, condition: String) -> Self {
        Self {
            constraint,
            metric,
            sql: format!("CAST(sum(CASE WHEN {condition} THEN 1 ELSE 0 END) AS DOUBLE)"),
            threshold: "= 0".to_string(),
            passes: Box::new(|v| v == 0.0),
            row_condition: Some(condition),
        }
    }
}

fn measures(check: &CheckDef) -> Vec<Measure> {
    let mut out = vec![];
    for (i, c) in check.constraints.iter().enumerate() {
        match &c.expect {
            Expectation::NotNull { columns, tolerance } => {
                for column in columns {
                    let tolerance = *tolerance;
                    let condition = format!("{} IS NULL", quote(column));
                    out.push(Measure {
                        constraint: i,
                        metric: format!("null_fraction({column})"),
                        sql: format!(
                            "CAST(sum(CASE WHEN {condition} THEN 1 ELSE 0 END) AS DOUBLE) \
                             / CAST(greatest(count(*), 1) AS DOUBLE)"
                        ),
                        threshold: format!("<= {tolerance}"),
                        passes: Box::new(move |v| v <= tolerance + 1e-12),
                        row_condition: Some(condition),
                    });
                }
            }
            Expectation::Unique { columns } => {
                let key = if columns.len() == 1 {
                    quote(&columns[0])
                } else {
                    format!(
                        "named_struct({})",
                        columns
                            .iter()
                            .map(|c| format!("'{c}', {}", quote(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let all_present = columns
                    .iter()
                    .map(|c| format!("{} IS NOT NULL", quote(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                out.push(Measure {
                    constraint: i,
                    metric: "duplicate_rows".to_string(),
                    sql: format!(
                        "CAST(sum(CASE WHEN {all_present} THEN 1 ELSE 0 END) \
                         - count(DISTINCT CASE WHEN {all_present} THEN {key} END) AS DOUBLE)"
                    ),
                    threshold: "= 0".to_string(),
                    passes: Box::new(|v| v == 0.0),
                    row_condition: None,
                });
            }
            Expectation::Between { column, low, high } => out.push(Measure::failing_rows(
                i,
                "failing_rows".to_string(),
                format!(
                    "{col} IS NOT NULL AND NOT ({col} BETWEEN {low} AND {high})",
                    col = quote(column)
                ),
            )),
            Expectation::In { column, values } => out.push(Measure::failing_rows(
                i,
                "failing_rows".to_string(),
                format!(
                    "{col} IS NOT NULL AND NOT ({col} IN ({}))",
                    values.join(", "),
                    col = quote(column)
                ),
            )),
            Expectation::Matches { column, pattern } => out.push(Measure::failing_rows(
                i,
                "failing_rows".to_string(),
                format!(
                    "{col} IS NOT NULL AND NOT regexp_like(CAST({col} AS VARCHAR), '{pattern}')",
                    col = quote(column)
                ),
            )),
            Expectation::Row { expression } => out.push(Measure::failing_rows(
                i,
                "failing_rows".to_string(),
                format!("NOT coalesce(({expression}), false)"),
            )),
            Expectation::NoPii { columns } => {
                for column in columns {
                    out.push(Measure::failing_rows(
                        i,
                        format!("pii_rows({column})"),
                        format!("pii_kind(CAST({} AS VARCHAR)) IS NOT NULL", quote(column)),
                    ));
                }
            }
            Expectation::Freshness { column, max_age_seconds, .. } => {
                let limit = *max_age_seconds;
                out.push(Measure {
                    constraint: i,
                    metric: format!("age_seconds({column})"),
                    sql: format!(
                        "CAST(date_part('epoch', now()) - date_part('epoch', max({})) AS DOUBLE)",
                        quote(column)
                    ),
                    threshold: format!("< {limit}"),
                    passes: Box::new(move |v| v < limit),
                    row_condition: None,
                });
            }
            Expectation::Schema { columns } => {
                for c in columns {
                    let expected = quote_literal(&c.arrow_type);
                    out.push(Measure {
                        constraint: i,
                        metric: format!("type_mismatch({})", c.name),
                        sql: format!(
                            "CAST(coalesce(max(CASE WHEN arrow_typeof({}) = {expected} THEN 0 ELSE 1 END), 0) AS DOUBLE)",
                            quote(&c.name)
                        ),
                        threshold: format!("= 0 (type {})", c.arrow_type),
                        passes: Box::new(|v| v == 0.0),
                        row_condition: None,
                    });
                    if c.not_null {
                        out.push(Measure::failing_rows(
                            i,
                            format!("null_rows({})", c.name),
                            format!("{} IS NULL", quote(&c.name)),
                        ));
                    }
                }
            }
            Expectation::References { column, .. } => out.push(Measure {
                constraint: i,
                metric: "missing_references".to_string(),
                sql: format!(
                    "CAST(sum(CASE WHEN checked.{} IS NOT NULL AND __ref{i} IS NULL THEN 1 ELSE 0 END) AS DOUBLE)",
                    quote(column)
                ),
                threshold: "= 0".to_string(),
                passes: Box::new(|v| v == 0.0),
                // Over the joins of `reference_joins`.
                row_condition: Some(format!(
                    "checked.{} IS NOT NULL AND __ref{i} IS NULL",
                    quote(column)
                )),
            }),
            Expectation::RowCount { low, high } => {
                let (low, high) = (*low, *high);
                out.push(Measure {
                    constraint: i,
                    metric: "row_count".to_string(),
                    sql: "CAST(count(*) AS DOUBLE)".to_string(),
                    threshold: format!("between {low} and {high}"),
                    passes: Box::new(move |v| v >= low && v <= high),
                    row_condition: None,
                });
            }
        }
    }
    out
}

/// The one query that measures every constraint of `check`.
pub fn check_query(check: &CheckDef) -> String {
    let selections: Vec<String> = measures(check)
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} AS m{i}", m.sql))
        .collect();
    format!(
        "SELECT {} FROM (SELECT * FROM {}{}) AS checked{}",
        selections.join(", "),
        quote(&check.table),
        check
            .filter
            .as_ref()
            .map(|f| format!(" WHERE {f}"))
            .unwrap_or_default(),
        reference_joins(check)
    )
}

/// REFERENCES: one left join per referenced table onto `checked` (the
/// checked table is still scanned once); `__ref<i>` is NULL for a missing reference.
fn reference_joins(check: &CheckDef) -> String {
    check
        .constraints
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.expect {
            Expectation::References { column, other_table, other_column } => Some(format!(
                " LEFT JOIN (SELECT DISTINCT {} AS __ref{i} FROM {}) AS r{i} ON checked.{} = r{i}.__ref{i}",
                quote(other_column),
                quote(other_table),
                quote(column)
            )),
            _ => None,
        })
        .collect()
}

/// The schema of `kiln.check_results` and of RUN CHECK's output.
pub fn results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("check", DataType::Utf8, false),
        Field::new("constraint", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("threshold", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("checked_at", DataType::Utf8, false),
    ]))
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

/// The outcome of running one check.
pub struct CheckRun {
    pub batch: RecordBatch,
    /// Failed constraints of severity ERROR, described.
    pub errors: Vec<String>,
    /// Failed constraints of severity WARN, described.
    pub warnings: Vec<String>,
    /// Failed row-level constraints: the failing-row predicate and the
    /// constraint's text (for QUARANTINE / FILTER).
    pub failing_rows: Vec<(String, String)>,
}

impl KilnSession {
    pub(crate) async fn execute_check(&self, statement: CheckStatement) -> Result<StatementResult> {
        match statement {
            CheckStatement::Create { check, or_replace } => {
                self.create_check(check, or_replace).await
            }
            CheckStatement::Run { name } => {
                let check = self
                    .lake()
                    .catalog()
                    .map_err(lake)?
                    .checks
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "check '{name}' not found; SHOW CHECKS lists them"
                        ))
                    })?;
                self.run_checks(vec![check]).await
            }
            CheckStatement::RunOn { table } => {
                let checks = self.checks_on(std::slice::from_ref(&table))?;
                if checks.is_empty() {
                    return Err(DataFusionError::Plan(format!(
                        "no checks are defined on table '{table}'; create one with CREATE CHECK name ON {table} (...)"
                    )));
                }
                self.run_checks(checks).await
            }
            CheckStatement::Show => {
                let catalog = self.lake().catalog().map_err(lake)?;
                let checks: Vec<&CheckDef> = catalog.checks.values().collect();
                let schema = Arc::new(Schema::new(vec![
                    Field::new("name", DataType::Utf8, false),
                    Field::new("table", DataType::Utf8, false),
                    Field::new("severity", DataType::Utf8, false),
                    Field::new("constraints", DataType::Utf8, false),
                ]));
                let column = |f: &dyn Fn(&CheckDef) -> String| -> ArrayRef {
                    Arc::new(StringArray::from(
                        checks.iter().map(|c| f(c)).collect::<Vec<_>>(),
                    ))
                };
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        column(&|c| c.name.clone()),
                        column(&|c| c.table.clone()),
                        column(&|c| c.severity.as_str().to_string()),
                        column(&|c| {
                            c.constraints
                                .iter()
                                .map(|k| k.text.clone())
                                .collect::<Vec<_>>()
                                .join("; ")
                        }),
                    ],
                )?;
                Ok(StatementResult::rows(schema, vec![batch]))
            }
            CheckStatement::Drop { name, if_exists } => {
                let removed = self
                    .lake()
                    .update_catalog(|c| Ok::<_, crate::lake::LakeError>(c.checks.remove(&name)))
                    .map_err(lake)?;
                match (removed, if_exists) {
                    (Some(_), _) => Ok(StatementResult::message(format!("dropped check {name}"))),
                    (None, true) => Ok(StatementResult::message(format!(
                        "check {name} does not exist, skipped"
                    ))),
                    (None, false) => Err(DataFusionError::Plan(format!(
                        "check '{name}' not found; use DROP CHECK IF EXISTS {name}"
                    ))),
                }
            }
        }
    }

    /// Resolves what CREATE CHECK can fix once: interval lengths and Arrow type names.
    async fn resolve(&self, check: &mut CheckDef) -> Result<()> {
        for constraint in &mut check.constraints {
            match &mut constraint.expect {
                Expectation::Freshness {
                    interval,
                    max_age_seconds,
                    ..
                } => {
                    let value = self
                        .scalar_text(&format!(
                            "SELECT CAST(date_part('epoch', {interval}) AS DOUBLE)"
                        ))
                        .await?;
                    *max_age_seconds = value.parse().map_err(|_| {
                        DataFusionError::Plan(format!(
                            "EXPECT FRESHNESS: {interval} is not an interval"
                        ))
                    })?;
                }
                Expectation::Schema { columns } => {
                    for c in columns {
                        c.arrow_type = self
                            .scalar_text(&format!(
                                "SELECT arrow_typeof(CAST(NULL AS {}))",
                                c.type_sql
                            ))
                            .await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn scalar_text(&self, sql: &str) -> Result<String> {
        let batches = self.context().sql(sql).await?.collect().await?;
        let value = batches
            .first()
            .filter(|b| b.num_rows() > 0)
            .map(|b| datafusion::arrow::util::display::array_value_to_string(b.column(0), 0))
            .transpose()?;
        value.ok_or_else(|| DataFusionError::Internal(format!("no value from {sql}")))
    }

    async fn create_check(&self, mut check: CheckDef, or_replace: bool) -> Result<StatementResult> {
        self.resolve(&mut check)
            .await
            .map_err(|e| DataFusionError::Plan(format!("CREATE CHECK {}: {e}", check.name)))?;
        if !self.table_names().contains(&check.table) {
            return Err(DataFusionError::Plan(format!(
                "CREATE CHECK {}: table '{}' not found",
                check.name, check.table
            )));
        }
        // Plan the measuring query now: unknown columns and bad expressions
        // are errors of CREATE CHECK, not of the nightly run.
        let query = check_query(&check);
        self.context()
            .sql(&query)
            .await
            .map_err(|e| DataFusionError::Plan(format!("CREATE CHECK {}: {e}", check.name)))?;
        let name = check.name.clone();
        let existed = self
            .lake()
            .update_catalog(|c| {
                if c.checks.contains_key(&name) && !or_replace {
                    return Ok::<_, crate::lake::LakeError>(Err(()));
                }
                Ok(Ok(c.checks.insert(name.clone(), check).is_some()))
            })
            .map_err(lake)?
            .map_err(|_| {
                DataFusionError::Plan(format!(
                    "check '{name}' already exists; use CREATE OR REPLACE CHECK {name} or DROP CHECK {name}"
                ))
            })?;
        Ok(StatementResult::message(if existed {
            format!("replaced check {name}")
        } else {
            format!("created check {name}")
        }))
    }

    fn checks_on(&self, tables: &[String]) -> Result<Vec<CheckDef>> {
        Ok(self
            .lake()
            .catalog()
            .map_err(lake)?
            .checks
            .into_values()
            .filter(|c| tables.contains(&c.table))
            .collect())
    }

    /// Runs every check defined on `tables` before `model` trains; an ERROR
    /// failure refuses training (results are recorded either way).
    pub(crate) async fn checks_before_training(
        &self,
        model: &str,
        tables: &[String],
    ) -> Result<Vec<CheckOutcome>> {
        let checks = self.checks_on(tables)?;
        if checks.is_empty() {
            return Ok(vec![]);
        }
        let batches = match self.run_checks(checks).await {
            Ok(result) => result.batches,
            Err(e) => {
                return Err(DataFusionError::Execution(format!(
                    "TRAIN MODEL {model} refused: {}",
                    e.to_string().trim_start_matches("Execution error: ")
                )))
            }
        };
        let mut outcomes = vec![];
        for batch in &batches {
            let text = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
            };
            let values = batch
                .column(4)
                .as_any()
                .downcast_ref::<Float64Array>()
                .cloned();
            if let (
                Some(run),
                Some(check),
                Some(constraint),
                Some(metric),
                Some(values),
                Some(status),
                Some(severity),
            ) = (text(0), text(1), text(2), text(3), values, text(6), text(7))
            {
                for r in 0..batch.num_rows() {
                    outcomes.push(CheckOutcome {
                        run_id: run.value(r).to_string(),
                        check: check.value(r).to_string(),
                        constraint: constraint.value(r).to_string(),
                        metric: metric.value(r).to_string(),
                        value: values.value(r),
                        status: status.value(r).to_string(),
                        severity: severity.value(r).to_string(),
                    });
                }
            }
        }
        Ok(outcomes)
    }

    async fn run_checks(&self, checks: Vec<CheckDef>) -> Result<StatementResult> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut batches = vec![];
        let mut errors = vec![];
        let mut handling = vec![];
        for check in &checks {
            let run = self.run_check(check, &run_id).await?;
            errors.extend(run.errors);
            for warning in run.warnings {
                self.warn(warning);
            }
            batches.push(run.batch);
            if !run.failing_rows.is_empty() {
                handling.push((check, run.failing_rows));
            }
        }
        self.record_check_results(&batches)?;
        for (check, failing) in handling {
            self.separate_failing_rows(check, &failing).await?;
        }
        if !errors.is_empty() {
            return Err(DataFusionError::Execution(format!(
                "{} (results recorded in kiln.check_results, run {run_id})",
                errors.join("; ")
            )));
        }
        Ok(StatementResult::rows(results_schema(), batches))
    }

    async fn run_check(&self, check: &CheckDef, run_id: &str) -> Result<CheckRun> {
        let measures = measures(check);
        let result = self
            .context()
            .sql(&check_query(check))
            .await?
            .collect()
            .await?;
        let values: Vec<Option<f64>> = (0..measures.len())
            .map(|i| {
                result.first().and_then(|b| {
                    let column =
                        datafusion::arrow::compute::cast(b.column(i), &DataType::Float64).ok()?;
                    let column = column.as_any().downcast_ref::<Float64Array>()?.clone();
                    (!column.is_empty() && column.is_valid(0)).then(|| column.value(0))
                })
            })
            .collect();
        let now = crate::ml::now_utc();
        let mut rows: Vec<[String; 8]> = vec![];
        let mut numbers = vec![];
        let (mut errors, mut warnings, mut failing_rows) = (vec![], vec![], vec![]);
        for (m, value) in measures.iter().zip(&values) {
            let constraint = &check.constraints[m.constraint];
            let severity = constraint.severity.unwrap_or(check.severity);
            // No rows: nothing violates a row-level expectation.
            let v = value.unwrap_or(0.0);
            let passed = (m.passes)(v);
            let handled =
                !passed && check.on_failure != OnFailure::Fail && m.row_condition.is_some();
            let status = match (passed, handled, &check.on_failure) {
                (true, _, _) => "pass",
                (false, true, OnFailure::Quarantine { .. }) => "quarantined",
                (false, true, _) => "filtered",
                (false, false, _) => "fail",
            };
            if handled {
                if let Some(condition) = &m.row_condition {
                    failing_rows.push((condition.clone(), constraint.text.clone()));
                }
            } else if !passed {
                let described = format!(
                    "check '{}' failed: EXPECT {} ({} = {v}, expected {})",
                    check.name, constraint.text, m.metric, m.threshold
                );
                match severity {
                    Severity::Error => errors.push(described),
                    Severity::Warn => warnings.push(described),
                }
            }
            rows.push([
                run_id.to_string(),
                check.name.clone(),
                constraint.text.clone(),
                m.metric.clone(),
                String::new(),
                m.threshold.clone(),
                status.to_string(),
                severity.as_str().to_string(),
            ]);
            numbers.push(Some(v));
        }
        let text = |i: usize| -> ArrayRef {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            ))
        };
        let batch = RecordBatch::try_new(
            results_schema(),
            vec![
                text(0),
                text(1),
                text(2),
                text(3),
                Arc::new(Float64Array::from(numbers)),
                text(5),
                text(6),
                text(7),
                Arc::new(StringArray::from(vec![now; rows.len()])),
            ],
        )?;
        Ok(CheckRun {
            batch,
            errors,
            warnings,
            failing_rows,
        })
    }
}

impl KilnSession {
    /// QUARANTINE INTO / FILTER: appends the rows failing any of `failing`
    /// (with the names of the constraints they fail) to the quarantine table,
    /// then publishes the table without them (rows outside the check's WHERE
    /// stay). Each write is atomic; the quarantine is written first, so an
    /// interruption between them duplicates rows rather than losing any.
    async fn separate_failing_rows(
        &self,
        check: &CheckDef,
        failing: &[(String, String)],
    ) -> Result<()> {
        let any_fails = failing
            .iter()
            .map(|(condition, _)| format!("({condition})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let scope = check
            .filter
            .as_ref()
            .map(|f| format!("coalesce(({f}), false) AND "))
            .unwrap_or_default();
        let bad = format!("{scope}({any_fails})");
        let table = quote(&check.table);
        let from = format!("{table} AS checked{}", reference_joins(check));
        if let OnFailure::Quarantine { table: quarantine } = &check.on_failure {
            let reasons = failing
                .iter()
                .map(|(condition, text)| {
                    format!("CASE WHEN {condition} THEN {} END", quote_literal(text))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let select = format!(
                "SELECT checked.*, concat_ws('; ', {reasons}) AS failed_constraints FROM {from} WHERE {bad}"
            );
            let exists = self.table_names().contains(quarantine);
            let statement = if exists {
                format!("INSERT INTO {} {select}", quote(quarantine))
            } else {
                format!("CREATE TABLE {} AS {select}", quote(quarantine))
            };
            // Boxed: execute() can lead back here (a statement may run checks).
            let written = Box::pin(self.execute(&statement)).await?;
            if let Some(message) = written.message {
                self.warn(format!("check '{}': {message}", check.name));
            }
        }
        Box::pin(self.execute(&format!(
            "INSERT OVERWRITE {table} SELECT checked.* FROM {from} WHERE NOT ({bad})"
        )))
        .await?;
        Ok(())
    }

    /// Appends a run's rows to `kiln.check_results`: one Parquet file per
    /// run, written aside and renamed into place (a reader never sees half).
    fn record_check_results(&self, batches: &[RecordBatch]) -> Result<()> {
        let dir = self.lake().check_results_dir();
        std::fs::create_dir_all(&dir)?;
        let id = uuid::Uuid::new_v4();
        let tmp = dir.join(format!(".run-{id}.parquet.tmp"));
        let file = std::fs::File::create(&tmp)?;
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, results_schema(), None)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.close()?;
        std::fs::rename(&tmp, dir.join(format!("run-{id}.parquet")))?;
        Ok(())
    }
}

fn lake(e: crate::lake::LakeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
