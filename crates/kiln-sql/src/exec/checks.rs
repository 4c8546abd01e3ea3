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
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::{DataFusionError, Result};

use crate::catalog::check::{CheckDef, CheckOutcome, Expectation, OnFailure, Severity};
use crate::catalog::lake::write_atomically;
use crate::catalog::quote::{quote_ident as quote, quote_literal};
use crate::catalog::tables::results_schema;
use crate::parse::CheckStatement;
use crate::session::{KilnSession, StatementResult};

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

pub(crate) async fn execute_check(
    session: &KilnSession,
    statement: CheckStatement,
) -> Result<StatementResult> {
    match statement {
        CheckStatement::Create { check, or_replace } => {
            create_check(session, check, or_replace).await
        }
        CheckStatement::Run { name } => {
            let check = session
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
            run_checks(session, vec![check]).await
        }
        CheckStatement::RunOn { table } => {
            let checks = checks_on(session, std::slice::from_ref(&table))?;
            if checks.is_empty() {
                return Err(DataFusionError::Plan(format!(
                    "no checks are defined on table '{table}'; create one with CREATE CHECK name ON {table} (...)"
                )));
            }
            run_checks(session, checks).await
        }
        CheckStatement::Show => {
            let catalog = session.lake().catalog().map_err(lake)?;
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
            let removed = session
                .lake()
                .update_catalog(|c| {
                    Ok::<_, crate::catalog::lake::LakeError>(c.checks.remove(&name))
                })
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
pub(crate) async fn resolve(session: &KilnSession, check: &mut CheckDef) -> Result<()> {
    for constraint in &mut check.constraints {
        match &mut constraint.expect {
            Expectation::Freshness {
                interval,
                max_age_seconds,
                ..
            } => {
                let value = scalar_text(
                    session,
                    &format!("SELECT CAST(date_part('epoch', {interval}) AS DOUBLE)"),
                )
                .await?;
                *max_age_seconds = value.parse().map_err(|_| {
                    DataFusionError::Plan(format!(
                        "EXPECT FRESHNESS: {interval} is not an interval"
                    ))
                })?;
            }
            Expectation::Schema { columns } => {
                for c in columns {
                    c.arrow_type = scalar_text(
                        session,
                        &format!("SELECT arrow_typeof(CAST(NULL AS {}))", c.type_sql),
                    )
                    .await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) async fn scalar_text(session: &KilnSession, sql: &str) -> Result<String> {
    let batches = session.context().sql(sql).await?.collect().await?;
    let value = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| datafusion::arrow::util::display::array_value_to_string(b.column(0), 0))
        .transpose()?;
    value.ok_or_else(|| DataFusionError::Internal(format!("no value from {sql}")))
}

pub(crate) async fn create_check(
    session: &KilnSession,
    mut check: CheckDef,
    or_replace: bool,
) -> Result<StatementResult> {
    resolve(session, &mut check)
        .await
        .map_err(|e| DataFusionError::Plan(format!("CREATE CHECK {}: {e}", check.name)))?;
    if !session.table_names().contains(&check.table) {
        return Err(DataFusionError::Plan(format!(
            "CREATE CHECK {}: table '{}' not found",
            check.name, check.table
        )));
    }
    // Plan the measuring query now: unknown columns and bad expressions
    // are errors of CREATE CHECK, not of the nightly run.
    let query = check_query(&check);
    session
        .context()
        .sql(&query)
        .await
        .map_err(|e| DataFusionError::Plan(format!("CREATE CHECK {}: {e}", check.name)))?;
    let name = check.name.clone();
    let existed = session
        .lake()
        .update_catalog(|c| {
            if c.checks.contains_key(&name) && !or_replace {
                return Ok::<_, crate::catalog::lake::LakeError>(Err(()));
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

pub(crate) fn checks_on(session: &KilnSession, tables: &[String]) -> Result<Vec<CheckDef>> {
    Ok(session
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
    session: &KilnSession,
    model: &str,
    tables: &[String],
) -> Result<Vec<CheckOutcome>> {
    let checks = checks_on(session, tables)?;
    if checks.is_empty() {
        return Ok(vec![]);
    }
    let batches = match run_checks(session, checks).await {
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

pub(crate) async fn run_checks(
    session: &KilnSession,
    checks: Vec<CheckDef>,
) -> Result<StatementResult> {
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut batches = vec![];
    let mut errors = vec![];
    let mut handling = vec![];
    for check in &checks {
        let run = run_check(session, check, &run_id).await?;
        errors.extend(run.errors);
        for warning in run.warnings {
            session.warn(warning);
        }
        batches.push(run.batch);
        if !run.failing_rows.is_empty() {
            handling.push((check, run.failing_rows));
        }
    }
    record_check_results(session, &batches)?;
    for (check, failing) in handling {
        separate_failing_rows(session, check, &failing).await?;
    }
    if !errors.is_empty() {
        return Err(DataFusionError::Execution(format!(
            "{} (results recorded in kiln.check_results, run {run_id})",
            errors.join("; ")
        )));
    }
    Ok(StatementResult::rows(results_schema(), batches))
}

pub(crate) async fn run_check(
    session: &KilnSession,
    check: &CheckDef,
    run_id: &str,
) -> Result<CheckRun> {
    let measures = measures(check);
    let result = session
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
    let now = crate::exec::ml::now_utc();
    let mut rows: Vec<[String; 8]> = vec![];
    let mut numbers = vec![];
    let (mut errors, mut warnings, mut failing_rows) = (vec![], vec![], vec![]);
    for (m, value) in measures.iter().zip(&values) {
        let constraint = &check.constraints[m.constraint];
        let severity = constraint.severity.unwrap_or(check.severity);
        // No rows: nothing violates a row-level expectation.
        let v = value.unwrap_or(0.0);
        let passed = (m.passes)(v);
        let handled = !passed && check.on_failure != OnFailure::Fail && m.row_condition.is_some();
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

/// QUARANTINE INTO / FILTER: appends the rows failing any of `failing`
/// (with the names of the constraints they fail) to the quarantine table,
/// then publishes the table without them (rows outside the check's WHERE
/// stay). Each write is atomic; the quarantine is written first, so an
/// interruption between them duplicates rows rather than losing any.
pub(crate) async fn separate_failing_rows(
    session: &KilnSession,
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
        let exists = session.table_names().contains(quarantine);
        let statement = if exists {
            format!("INSERT INTO {} {select}", quote(quarantine))
        } else {
            format!("CREATE TABLE {} AS {select}", quote(quarantine))
        };
        // Boxed: execute() can lead back here (a statement may run checks).
        let written = Box::pin(session.execute(&statement)).await?;
        if let Some(message) = written.message {
            session.warn(format!("check '{}': {message}", check.name));
        }
    }
    Box::pin(session.execute(&format!(
        "INSERT OVERWRITE {table} SELECT checked.* FROM {from} WHERE NOT ({bad})"
    )))
    .await?;
    Ok(())
}

/// Appends a run's rows to `kiln.check_results`: one Parquet file per
/// run, written aside and renamed into place (a reader never sees half).
pub(crate) fn record_check_results(session: &KilnSession, batches: &[RecordBatch]) -> Result<()> {
    let dir = session.lake().check_results_dir();
    std::fs::create_dir_all(&dir)?;
    let id = uuid::Uuid::new_v4();
    write_atomically(&dir.join(format!("run-{id}.parquet")), |file| {
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, results_schema(), None)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.close()?;
        Ok::<_, DataFusionError>(())
    })
}

fn lake(e: crate::catalog::lake::LakeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
