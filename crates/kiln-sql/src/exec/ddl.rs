//! Lake tables: `CREATE TABLE [PARTITIONED BY] AS`, `CREATE TABLE (cols)`,
//! `INSERT [OVERWRITE]`, `INSERT ... PARTITION (c = v)`, `DROP TABLE`,
//! `SHOW TABLES`, `DESCRIBE`. Every write runs as a Ballista job into a
//! staging directory and is published atomically as the table's next snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{Constraint, Constraints, TableReference};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    CreateMemoryTable, DdlStatement, DmlStatement, DropTable, LogicalPlan, WriteOp,
};
use datafusion::prelude::DataFrame;

use super::diagnostics::known_tables_hint;
use crate::catalog::lake::{validate_table_name, ManagedTable, TableEntry, TableKey};
use crate::error::lake_error;
use crate::session::{KilnSession, StatementResult};

/// `INSERT [OVERWRITE] t PARTITION (c = v, ...) SELECT ...` (Hive/Spark):
/// the query gives the other columns, the clause the partition values.
/// An overwrite replaces that partition's directory and nothing else.
pub(crate) async fn insert_partition(
    session: &KilnSession,
    insert: &mut datafusion::sql::sqlparser::ast::Insert,
) -> Result<StatementResult> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, TableObject};
    let values = insert.partitioned.take().unwrap_or_default();
    let TableObject::TableName(table) = &insert.table else {
        return Err(DataFusionError::Plan(
            "INSERT ... PARTITION needs a table name".to_string(),
        ));
    };
    let name = table.to_string().to_lowercase();
    let entry = managed_entry(session, &TableReference::bare(name.as_str()))?.ok_or_else(|| {
        DataFusionError::Plan(format!(
            "INSERT ... PARTITION: '{name}' is not a lake table; partitions belong to \
                 tables created with CREATE TABLE {name} PARTITIONED BY (...) AS SELECT ..."
        ))
    })?;
    if entry.partition_by.is_empty() {
        return Err(DataFusionError::Plan(format!(
            "INSERT ... PARTITION: table '{name}' is not partitioned; recreate it with \
             PARTITIONED BY (...) or drop the PARTITION clause"
        )));
    }
    if !insert.columns.is_empty() {
        return Err(DataFusionError::NotImplemented(
            "a column list together with PARTITION (...) is not supported yet; \
             select the columns in table order"
                .to_string(),
        ));
    }
    let mut given = HashMap::new();
    for value in &values {
        let (column, literal) = match value {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => (left.to_string(), partition_literal(right)),
            other => (other.to_string(), None),
        };
        let column = column.trim_matches('"').to_lowercase();
        let Some(literal) = literal else {
            return Err(DataFusionError::NotImplemented(format!(
                "PARTITION ({value}): dynamic partitions are not supported yet; give each \
                 partition column a literal value, e.g. PARTITION ({column} = '2026-11-01')"
            )));
        };
        if !entry.partition_by.contains(&column) {
            return Err(DataFusionError::Plan(format!(
                "PARTITION ({value}): '{column}' is not a partition column of '{name}'; \
                 its partition columns are: {}",
                entry.partition_by.join(", ")
            )));
        }
        given.insert(column, literal);
    }
    let mut select = vec!["__kiln_src.*".to_string()];
    let mut dir = PathBuf::new();
    for column in &entry.partition_by {
        let Some(value) = given.get(column) else {
            return Err(DataFusionError::Plan(format!(
                "PARTITION clause of INSERT into '{name}' gives no value for partition \
                 column '{column}'; give all of: {}",
                entry.partition_by.join(", ")
            )));
        };
        let data_type = entry.schema.field_with_name(column)?.data_type().clone();
        let typed = datafusion::scalar::ScalarValue::Utf8(Some(value.clone()))
            .cast_to(&data_type)
            .map_err(|_| {
                DataFusionError::Plan(format!(
                    "PARTITION ({column} = '{value}'): not a valid {data_type} value for \
                     partition column '{column}'"
                ))
            })?
            .to_string();
        if typed.is_empty()
            || !typed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:+ ".contains(c))
        {
            return Err(DataFusionError::NotImplemented(format!(
                "PARTITION ({column} = '{value}'): partition values with characters other \
                 than letters, digits, '-', '_', '.', ':', '+' and spaces are not supported yet"
            )));
        }
        dir.push(format!("{column}={typed}"));
        select.push(format!(
            "arrow_cast({}, '{data_type}') AS {}",
            crate::catalog::quote::quote_literal(value),
            crate::catalog::quote::quote_ident(column)
        ));
    }
    let source = insert
        .source
        .take()
        .ok_or_else(|| DataFusionError::Plan("INSERT ... PARTITION needs a query".to_string()))?;
    let query = format!("SELECT {} FROM ({source}) AS __kiln_src", select.join(", "));
    let plan = session
        .context()
        .state()
        .create_logical_plan(&query)
        .await?;
    let given = plan.schema().fields().len();
    let expected = entry.schema.fields().len();
    if given != expected {
        return Err(DataFusionError::Plan(format!(
            "INSERT into '{name}' PARTITION (...): the query gives {} column(s), the table \
             has {} besides the partition column(s) ({})",
            given - entry.partition_by.len(),
            expected - entry.partition_by.len(),
            entry
                .schema
                .fields()
                .iter()
                .filter(|f| !entry.partition_by.contains(f.name()))
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let casts = plan
        .schema()
        .columns()
        .into_iter()
        .zip(entry.schema.fields())
        .map(|(column, field)| {
            datafusion::prelude::cast(
                datafusion::prelude::Expr::Column(column),
                field.data_type().clone(),
            )
            .alias(field.name())
        });
    let input = datafusion::logical_expr::LogicalPlanBuilder::from(plan)
        .project(casts)?
        .build()?;
    let carry = Some((entry.snapshot, insert.overwrite.then_some(dir)));
    insert_rows(session, &name, input, carry, entry).await
}

pub(crate) fn managed_entry(
    session: &KilnSession,
    table: &TableReference,
) -> Result<Option<ManagedTable>> {
    let catalog = session.lake().catalog().map_err(lake_error)?;
    Ok(match catalog.tables.get(table.table()) {
        Some(TableEntry::Managed(m)) => Some(m.clone()),
        _ => None,
    })
}

pub(crate) async fn create_table(
    session: &KilnSession,
    create: CreateMemoryTable,
    partition_by: Vec<String>,
) -> Result<StatementResult> {
    let name = lake_table_name(&create.name)?;
    if create.temporary {
        return Err(DataFusionError::NotImplemented(
            "CREATE TEMPORARY TABLE is not supported yet: tables live in the lake; \
             use CREATE VIEW for a session-local name"
                .to_string(),
        ));
    }
    if session.context().table_exist(name.as_str())? {
        if create.if_not_exists {
            return Ok(StatementResult::message(format!(
                "table {name} already exists, skipped"
            )));
        }
        if !create.or_replace {
            return Err(DataFusionError::Plan(format!(
                "table '{name}' already exists; use CREATE OR REPLACE TABLE {name} or DROP TABLE {name} first"
            )));
        }
    }
    let input_schema = create.input.schema().as_arrow().clone();
    let is_plain_create = matches!(
        create.input.as_ref(),
        LogicalPlan::EmptyRelation(e) if !e.produce_one_row
    );
    // Declared columns keep NOT NULL; a query's columns stay nullable.
    let table_schema = if is_plain_create {
        input_schema.clone()
    } else {
        table_schema(&input_schema, &partition_by)?
    };
    let keys = table_keys(&create.constraints, &input_schema);
    let rows = if is_plain_create {
        let staged = session.lake().stage(&name).map_err(lake_error)?;
        publish(session, &name, staged, table_schema, partition_by, keys)?;
        forget_session_table(session, &name)?;
        0
    } else {
        let mode = WriteMode {
            keys,
            ..WriteMode::default()
        };
        write_managed(
            session,
            &name,
            (*create.input).clone(),
            mode,
            table_schema,
            partition_by,
        )
        .await?
    };
    Ok(StatementResult::written(
        format!("created table {name} ({rows} rows)"),
        rows,
    ))
}

pub(crate) async fn insert_managed(
    session: &KilnSession,
    dml: DmlStatement,
    entry: ManagedTable,
) -> Result<StatementResult> {
    let name = dml.table_name.table().to_string();
    let carry = match dml.op {
        WriteOp::Insert(datafusion::logical_expr::dml::InsertOp::Append) => {
            Some((entry.snapshot, None))
        }
        WriteOp::Insert(datafusion::logical_expr::dml::InsertOp::Overwrite) => None,
        other => {
            return Err(DataFusionError::NotImplemented(format!(
                "{other} on lake table '{name}' is not supported yet; use INSERT INTO, \
                 INSERT OVERWRITE or CREATE OR REPLACE TABLE ... AS"
            )))
        }
    };
    insert_rows(session, &name, (*dml.input).clone(), carry, entry).await
}

/// Writes `input` into lake table `name` (`entry`), keeping the files
/// `carry` names, and reports the rows inserted.
async fn insert_rows(
    session: &KilnSession,
    name: &str,
    input: LogicalPlan,
    carry: Option<(u64, Option<PathBuf>)>,
    entry: ManagedTable,
) -> Result<StatementResult> {
    let mode = WriteMode {
        carry,
        keys: entry.keys,
        ..WriteMode::default()
    };
    let rows = write_managed(session, name, input, mode, entry.schema, entry.partition_by).await?;
    Ok(StatementResult::written(
        format!("inserted {rows} rows into {name}"),
        rows,
    ))
}

/// Runs `input` as a Ballista job writing Parquet into a staging directory,
/// then publishes it as the table's next snapshot. Returns the rows written.
pub(crate) async fn write_managed(
    session: &KilnSession,
    name: &str,
    input: LogicalPlan,
    mode: WriteMode,
    table_schema: Schema,
    partition_by: Vec<String>,
) -> Result<u64> {
    let staged = session.lake().stage(name).map_err(lake_error)?;
    let options = DataFrameWriteOptions::new().with_partition_by(partition_by.clone());
    let df = DataFrame::new(session.context().state(), input);
    let written = df
        .write_parquet(&staged.dir_for_writer(), options, None)
        .await?;
    let rows = written
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
        .map(|counts| counts.iter().flatten().sum())
        .unwrap_or(0);
    check_not_null(name, &table_schema, staged.dir())?;
    let mut expected = None;
    if let Some((snapshot, replaced)) = &mode.carry {
        if let Some(partition) = replaced {
            only_partition_written(staged.dir(), partition)?;
        }
        session
            .lake()
            .carry_snapshot(name, *snapshot, &staged, replaced.as_deref())
            .map_err(lake_error)?;
        expected = Some(*snapshot);
    }
    failpoint("before-publish");
    session
        .lake()
        .publish(name, staged, expected, |snapshot| ManagedTable {
            schema: table_schema,
            partition_by,
            snapshot,
            ingest_manifest: mode.ingest_manifest,
            keys: mode.keys,
        })
        .map_err(lake_error)?;
    forget_session_table(session, name)?;
    Ok(rows)
}

pub(crate) fn publish(
    session: &KilnSession,
    name: &str,
    staged: crate::catalog::lake::StagedWrite,
    schema: Schema,
    partition_by: Vec<String>,
    keys: Vec<TableKey>,
) -> Result<ManagedTable> {
    session
        .lake()
        .publish(name, staged, None, |snapshot| ManagedTable {
            schema,
            partition_by,
            snapshot,
            ingest_manifest: None,
            keys,
        })
        .map_err(lake_error)
}

/// After a publish: forget any session-level table of that name (an
/// external table replaced by a lake table), so the session reads the new
/// snapshot through [`crate::catalog::tables::LakeSchema`].
fn forget_session_table(session: &KilnSession, name: &str) -> Result<()> {
    session.context().deregister_table(name)?;
    Ok(())
}

pub(crate) async fn drop_table(session: &KilnSession, drop: DropTable) -> Result<StatementResult> {
    let name = drop.name.table().to_string();
    let catalog = session.lake().catalog().map_err(lake_error)?;
    if catalog.tables.contains_key(&name) {
        session.context().deregister_table(name.as_str())?;
        session.lake().drop_table(&name).map_err(lake_error)?;
        return Ok(StatementResult::message(format!("dropped table {name}")));
    }
    if session.context().table_exist(name.as_str())? {
        session
            .context()
            .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::DropTable(drop)))
            .await?;
        return Ok(StatementResult::message(format!("dropped table {name}")));
    }
    if drop.if_exists {
        return Ok(StatementResult::message(format!(
            "table {name} does not exist, skipped"
        )));
    }
    Err(DataFusionError::Plan(format!(
        "table '{name}' not found{}",
        known_tables_hint(&name, &session.table_names())
    )))
}

pub(crate) fn show_tables(session: &KilnSession) -> Result<StatementResult> {
    let catalog = session.lake().catalog().map_err(lake_error)?;
    let mut rows: HashMap<String, [String; 4]> = HashMap::new();
    for (name, entry) in &catalog.tables {
        let row = match entry {
            TableEntry::Managed(m) => [
                "managed".to_string(),
                "parquet".to_string(),
                session.lake().table_dir(name).display().to_string(),
                m.partition_by.join(", "),
            ],
            TableEntry::External(e) => [
                "external".to_string(),
                e.format.to_lowercase(),
                e.locations.join(", "),
                String::new(),
            ],
        };
        rows.insert(name.clone(), row);
    }
    for name in session.table_names() {
        rows.entry(name).or_insert_with(|| {
            [
                "session".to_string(),
                String::new(),
                String::new(),
                String::new(),
            ]
        });
    }
    let mut names: Vec<_> = rows.keys().cloned().collect();
    names.sort();
    let column = |i: usize| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            names.iter().map(|n| rows[n][i].clone()),
        ))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("partitioned_by", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(names.iter().cloned())),
            column(0),
            column(1),
            column(2),
            column(3),
        ],
    )?;
    Ok(StatementResult::rows(schema, vec![batch]))
}

pub(crate) fn describe_schema(schema: &Schema) -> Result<StatementResult> {
    let out = Arc::new(Schema::new(vec![
        Field::new("column_name", DataType::Utf8, false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("is_nullable", DataType::Utf8, false),
    ]));
    let fields = schema.fields();
    let batch = RecordBatch::try_new(
        Arc::clone(&out),
        vec![
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| f.name().clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| f.data_type().to_string()),
            )),
            Arc::new(StringArray::from_iter_values(fields.iter().map(|f| {
                if f.is_nullable() {
                    "YES"
                } else {
                    "NO"
                }
            }))),
        ],
    )?;
    Ok(StatementResult::rows(out, vec![batch]))
}

pub(crate) fn normalize_ident(value: &str, quote: Option<char>) -> String {
    if quote.is_some() {
        value.to_string()
    } else {
        value.to_lowercase()
    }
}

pub(crate) fn lake_table_name(reference: &TableReference) -> Result<String> {
    if let Some(schema) = reference.schema() {
        if schema != "public" {
            return Err(DataFusionError::NotImplemented(format!(
                "schema '{schema}' in table name '{reference}' is not supported yet: \
                 lake tables live in one namespace; write just the table name"
            )));
        }
    }
    let name = reference.table().to_string();
    validate_table_name(&name).map_err(lake_error)?;
    Ok(name)
}

/// The reader's view of a managed table: every column nullable, partition
/// columns last (as Hive-style partitioned files are read back).
pub(crate) fn table_schema(input: &Schema, partition_by: &[String]) -> Result<Schema> {
    for column in partition_by {
        if input.field_with_name(column).is_err() {
            let columns: Vec<_> = input.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(DataFusionError::Plan(format!(
                "PARTITIONED BY column '{column}' is not a column of the query; its columns are: {}",
                columns.join(", ")
            )));
        }
    }
    if !partition_by.is_empty() && partition_by.len() == input.fields().len() {
        return Err(DataFusionError::Plan(
            "PARTITIONED BY cannot name every column: at least one column must be stored in the files"
                .to_string(),
        ));
    }
    let nullable = |f: &Arc<Field>| f.as_ref().clone().with_nullable(true);
    let data = input
        .fields()
        .iter()
        .filter(|f| !partition_by.contains(f.name()))
        .map(nullable);
    let partitions = partition_by.iter().map(|p| {
        nullable(&Arc::new(
            input.field_with_name(p).expect("checked").clone(),
        ))
    });
    Ok(Schema::new(data.chain(partitions).collect::<Vec<_>>()))
}

/// The text of a literal partition value: `'x'`, `5`, `DATE '2026-11-01'`.
pub(crate) fn partition_literal(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    let value = match expr {
        Expr::Value(v) => &v.value,
        Expr::TypedString(t) => &t.value.value,
        _ => return None,
    };
    match value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
        Value::Number(n, _) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Test hook: with `KILN_FAILPOINT=<name>`, the process announces the point
/// on stderr and stops there (a test then kills it), to prove that a crash
/// at that point publishes nothing.
pub(crate) fn failpoint(name: &str) {
    if std::env::var("KILN_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// How a write combines with a table's published data.
#[derive(Debug, Default)]
pub(crate) struct WriteMode {
    /// Keep the files of this snapshot (an append), except a partition
    /// directory that the write replaces. The publish then refuses if the
    /// table moved past this snapshot meanwhile.
    pub carry: Option<(u64, Option<PathBuf>)>,
    /// The ingest manifest to publish with the data.
    pub ingest_manifest: Option<String>,
    /// The table's keys to publish with the data: those `CREATE TABLE`
    /// declared, or the existing table's.
    pub keys: Vec<TableKey>,
}

/// `CREATE TABLE`'s primary-key and unique constraints (indices into the
/// statement's `schema`) by column name.
fn table_keys(constraints: &Constraints, schema: &Schema) -> Vec<TableKey> {
    constraints
        .iter()
        .map(|constraint| {
            let (primary, columns) = match constraint {
                Constraint::PrimaryKey(columns) => (true, columns),
                Constraint::Unique(columns) => (false, columns),
            };
            TableKey {
                primary,
                columns: columns
                    .iter()
                    .map(|&i| schema.field(i).name().clone())
                    .collect(),
            }
        })
        .collect()
}

/// A partition overwrite must write into its own partition directory only.
pub(crate) fn only_partition_written(staged: &Path, partition: &Path) -> Result<()> {
    let mut expected = staged.to_path_buf();
    if let Some(first) = partition.components().next() {
        expected.push(first);
    }
    for entry in std::fs::read_dir(staged)? {
        let path = entry?.path();
        if path != expected {
            return Err(DataFusionError::Internal(format!(
                "a write to partition '{}' produced '{}' outside it; nothing was published",
                partition.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// Refuses a write whose files hold NULL in a NOT NULL column of table
/// `name` (`schema`), from the null counts in the written Parquet footers,
/// before anything is published.
fn check_not_null(name: &str, schema: &Schema, staged: &Path) -> Result<()> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let required: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| !f.is_nullable())
        .map(|f| f.name().as_str())
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut nulls: HashMap<&str, u64> = HashMap::new();
    let mut pending = vec![staged.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            let reader = SerializedFileReader::new(std::fs::File::open(&path)?)?;
            let metadata = reader.metadata();
            let columns = metadata.file_metadata().schema_descr();
            for group in metadata.row_groups() {
                for (i, chunk) in group.columns().iter().enumerate() {
                    let column = columns.column(i);
                    let path = column.path().parts();
                    let Some(&name) = required.iter().find(|n| path.len() == 1 && path[0] == **n)
                    else {
                        continue;
                    };
                    let count = chunk
                        .statistics()
                        .and_then(|s| s.null_count_opt())
                        .unwrap_or(0);
                    *nulls.entry(name).or_default() += count;
                }
            }
        }
    }
    match required
        .iter()
        .find(|c| nulls.get(*c).is_some_and(|n| *n > 0))
    {
        Some(column) => Err(DataFusionError::Execution(format!(
            "column '{column}' of table '{name}' is NOT NULL, but {} rows of this write are NULL \
             there; nothing was written",
            nulls[column]
        ))),
        None => Ok(()),
    }
}
