//! [`KilnSession`]: one connection to a lake, executing statements through Ballista.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    CreateMemoryTable, DdlStatement, DmlStatement, DropTable, LogicalPlan, WriteOp,
};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{HiveDistributionStyle, Statement as SQLStatement};
use futures::FutureExt;

use crate::codec::{KilnLogicalCodec, KilnPhysicalCodec};
use crate::diagnostics;
use crate::lake::{validate_table_name, ExternalTable, Lake, LakeError, ManagedTable, TableEntry};
use crate::parser::{split_statements, ScriptStatement};
use crate::physical::KilnExtensionPlanner;
use crate::udf::kiln_udfs;
use crate::{cluster, embedded};

/// How to open a [`KilnSession`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The lake directory (created if missing).
    pub lake: PathBuf,
    /// `df://host:port` of a Ballista scheduler; `None` runs an embedded cluster.
    pub cluster: Option<String>,
    /// Partitions per stage; defaults to the number of cores.
    pub target_partitions: Option<usize>,
    /// Print per-epoch training progress to stderr.
    pub progress: bool,
    /// The cluster's shared secret (sent to the scheduler with every job).
    pub token: Option<String>,
    /// Connect to the cluster over TLS, trusting this PEM CA certificate.
    pub tls_ca: Option<PathBuf>,
    /// Directories `CREATE EXTERNAL TABLE` may read besides the lake. Empty
    /// means unrestricted on the embedded cluster and "the lake only" on a
    /// remote one.
    pub allowed_paths: Vec<PathBuf>,
}

impl SessionOptions {
    pub fn new(lake: impl Into<PathBuf>) -> Self {
        Self {
            lake: lake.into(),
            cluster: None,
            target_partitions: None,
            progress: true,
            token: None,
            tls_ca: None,
            allowed_paths: vec![],
        }
    }
}

/// What one statement produced: rows for queries, a status line for the rest.
#[derive(Debug, Clone)]
pub struct StatementResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Set for statements that change the lake ("created table t (42 rows)").
    pub message: Option<String>,
    /// Rows a write published (CREATE TABLE AS, INSERT, INGEST).
    pub rows_written: Option<u64>,
}

impl StatementResult {
    pub(crate) fn rows(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            batches,
            message: None,
            rows_written: None,
        }
    }

    pub(crate) fn written(message: impl Into<String>, rows: u64) -> Self {
        Self {
            rows_written: Some(rows),
            ..Self::message(message)
        }
    }

    pub(crate) fn message(message: impl Into<String>) -> Self {
        Self {
            schema: Arc::new(Schema::empty()),
            batches: vec![],
            message: Some(message.into()),
            rows_written: None,
        }
    }

    /// Whether the statement returns a result set (a query, SHOW, DESCRIBE, EXPLAIN).
    pub fn has_rows(&self) -> bool {
        self.message.is_none()
    }

    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A statement of a script that failed, with its position.
#[derive(Debug)]
pub struct ScriptError {
    pub line: u64,
    pub column: u64,
    pub statement: String,
    pub error: DataFusionError,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "error in statement at line {}: {}\n  statement: {}",
            self.line,
            self.error,
            first_line(&self.statement)
        )
    }
}

fn first_line(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or_default();
    if sql.lines().nth(1).is_some() {
        format!("{line} ...")
    } else {
        line.to_string()
    }
}

/// The session configuration shared by every Kiln process (client, scheduler,
/// executors): Ballista's settings plus Kiln's.
pub fn kiln_session_config(target_partitions: Option<usize>) -> SessionConfig {
    let partitions = target_partitions.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(KilnLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(KilnPhysicalCodec::default()))
        .with_information_schema(true)
        .with_target_partitions(partitions)
        .set_bool("ballista.planner.adaptive.enabled", false)
}

/// A connection to a lake. Every query runs as a Ballista job: on an embedded
/// in-process scheduler and executor by default.
pub struct KilnSession {
    ctx: SessionContext,
    lake: Lake,
    progress: bool,
    warnings: Mutex<Vec<String>>,
    /// The in-process cluster, when not connected to a remote one.
    embedded: Option<embedded::EmbeddedCluster>,
    /// Roots external tables must lie under (besides the lake); `None`: anywhere.
    allowed_paths: Option<Vec<PathBuf>>,
}

impl KilnSession {
    /// Opens the lake and starts (or connects to) Ballista, registering every
    /// table of the lake's catalog.
    pub async fn open(options: SessionOptions) -> Result<Self> {
        let lake = Lake::open(&options.lake).map_err(lake_error)?;
        let mut config = kiln_session_config(options.target_partitions);
        if let Some(token) = &options.token {
            config = config.with_ballista_grpc_metadata(HashMap::from([(
                cluster::TOKEN_HEADER.to_string(),
                token.clone(),
            )]));
        }
        if let (Some(ca), Some(_)) = (&options.tls_ca, &options.cluster) {
            config = cluster::client_tls(config, ca)?;
        }
        let state = cluster::kiln_state(config, lake.root())?;
        let (scheduler_url, embedded) = match &options.cluster {
            Some(address) => {
                let url = cluster::with_scheme(
                    &cluster::scheduler_url(address)?,
                    options.tls_ca.is_some(),
                );
                cluster::probe_scheduler(&url, options.token.as_deref(), options.tls_ca.as_deref())
                    .await?;
                (url, None)
            }
            None => {
                let vcores = state.config().target_partitions();
                let embedded =
                    embedded::start(lake.root(), options.target_partitions, vcores).await?;
                (embedded.scheduler_url.clone(), Some(embedded))
            }
        };
        let state = state.upgrade_for_ballista(scheduler_url)?;
        let ctx = SessionContext::new_with_state(state);
        // Ballista's upgrade rebuilds the client's function list: register again.
        for udf in kiln_udfs(lake.root().to_path_buf()) {
            ctx.register_udf(udf);
        }
        let allowed_paths = if options.allowed_paths.is_empty() && options.cluster.is_none() {
            None
        } else {
            Some(
                options
                    .allowed_paths
                    .iter()
                    .map(|p| resolve_path(p))
                    .collect(),
            )
        };
        let session = Self {
            ctx,
            lake,
            progress: options.progress,
            warnings: Mutex::new(vec![]),
            embedded,
            allowed_paths,
        };
        session.register_catalog().await?;
        Ok(session)
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Whether statements run on this process's own embedded cluster.
    pub(crate) fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    pub(crate) fn progress(&self) -> bool {
        self.progress
    }

    /// Warnings collected since the last call (e.g. external tables whose files vanished).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn dialect(&self) -> String {
        self.ctx
            .state()
            .config_options()
            .sql_parser
            .dialect
            .to_string()
    }

    async fn register_catalog(&self) -> Result<()> {
        self.register_system_tables()?;
        let catalog = self.lake.catalog().map_err(lake_error)?;
        for (name, entry) in &catalog.tables {
            match entry {
                TableEntry::Managed(managed) => {
                    let provider = self.managed_provider(name, managed)?;
                    self.ctx.register_table(name.as_str(), provider)?;
                }
                TableEntry::External(external) => {
                    if let Err(e) = self.ctx.sql(&external.ddl).await {
                        self.warn(format!(
                            "external table '{name}' could not be registered ({e}); \
                             fix its files or DROP TABLE {name}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `kiln.check_results`: the Parquet files checks append to.
    fn register_system_tables(&self) -> Result<()> {
        let dir = self.lake.check_results_dir();
        std::fs::create_dir_all(&dir)?;
        let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
        let format = ParquetFormat::default();
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(crate::checks::results_schema());
        let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
        datafusion::catalog::SchemaProvider::register_table(
            schema.as_ref(),
            "check_results".to_string(),
            Arc::new(ListingTable::try_new(config)?),
        )?;
        let runs = self.lake.meta_dir().join("job_runs");
        std::fs::create_dir_all(&runs)?;
        let url = ListingTableUrl::parse(format!("{}/", runs.display()))?;
        let options = ListingOptions::new(Arc::new(
            datafusion::datasource::file_format::json::JsonFormat::default(),
        ))
        .with_file_extension(".json");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(job_runs_schema());
        datafusion::catalog::SchemaProvider::register_table(
            schema.as_ref(),
            "job_runs".to_string(),
            Arc::new(ListingTable::try_new(config)?),
        )?;
        if let Some(catalog) = self.ctx.catalog("datafusion") {
            catalog.register_schema("kiln", schema)?;
        }
        Ok(())
    }

    pub(crate) fn warn(&self, message: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    /// Splits `script` into statements and runs them in order, handing each
    /// result to `on_result`; stops at the first failing statement.
    pub async fn execute_script(
        &self,
        script: &str,
        mut on_result: impl FnMut(&ScriptStatement, StatementResult),
    ) -> std::result::Result<usize, ScriptError> {
        let statements =
            split_statements(script, &self.dialect()).map_err(|error| ScriptError {
                line: 1,
                column: 1,
                statement: String::new(),
                error,
            })?;
        for statement in &statements {
            let result = self
                .execute(&statement.positioned_sql())
                .await
                .map_err(|error| ScriptError {
                    line: statement.line,
                    column: statement.column,
                    statement: statement.text.clone(),
                    error,
                })?;
            on_result(statement, result);
        }
        Ok(statements.len())
    }

    /// Executes one statement. A panic anywhere below becomes an internal error.
    pub async fn execute(&self, sql: &str) -> Result<StatementResult> {
        let mut tables = Vec::new();
        let _in_flight = self
            .embedded
            .as_ref()
            .map(embedded::EmbeddedCluster::in_flight);
        let outcome = AssertUnwindSafe(self.execute_inner(sql, &mut tables))
            .catch_unwind()
            .await;
        let result = match outcome {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(DataFusionError::Internal(format!(
                    "Kiln panicked while executing the statement: {message}"
                )))
            }
        };
        match result {
            Ok(r) => Ok(r),
            Err(e) => Err(diagnostics::explain(e, self, &tables).await),
        }
    }

    async fn execute_inner(&self, sql: &str, tables: &mut Vec<String>) -> Result<StatementResult> {
        if let Some(statement) = crate::ml::parse(sql)? {
            return self.execute_ml(statement).await;
        }
        if let Some(statement) = crate::checks::parse(sql)? {
            return self.execute_check(statement).await;
        }
        if let Some(statement) = crate::ingest::parse(sql)? {
            return self.execute_ingest(statement).await;
        }
        // predict() calls on TRANSFORM models first: the PREDICT MODEL
        // expansion below generates calls that already carry the transforms.
        let rewritten = self.rewrite_predict_calls(sql)?;
        let sql = rewritten.as_deref().unwrap_or(sql);
        let expanded = self.expand_predict_subqueries(sql).await?;
        let sql = expanded.as_deref().unwrap_or(sql);
        let state = self.ctx.state();
        let mut statement = state
            .sql_to_statement(sql, &state.config_options().sql_parser.dialect)
            .map_err(|e| diagnostics::syntax_error_at_end(diagnostics::syntax_error(e), sql))?;

        if let DFStatement::Statement(s) = &mut statement {
            crate::transform::rewrite_fitted_calls(s)?;
        }
        let mut partition_by = vec![];
        let mut external_ddl = None;
        match &mut statement {
            DFStatement::Statement(s) => match s.as_mut() {
                SQLStatement::ShowTables { .. } => return self.show_tables(),
                SQLStatement::Insert(insert) if insert.partitioned.is_some() => {
                    return self.insert_partition(insert).await;
                }
                SQLStatement::CreateTable(create) => {
                    if let HiveDistributionStyle::PARTITIONED { columns } =
                        &create.hive_distribution
                    {
                        partition_by = columns
                            .iter()
                            .map(|c| normalize_ident(&c.name.value, c.name.quote_style))
                            .collect();
                        create.hive_distribution = HiveDistributionStyle::NONE;
                        if create.query.is_none() {
                            return Err(DataFusionError::NotImplemented(
                                "PARTITIONED BY is supported with CREATE TABLE ... AS SELECT only; \
                                 create the table with a query"
                                    .to_string(),
                            ));
                        }
                    }
                }
                _ => {}
            },
            DFStatement::CreateExternalTable(create) => {
                external_ddl = Some(diagnostics::absolute_locations(sql, &mut create.locations)?);
            }
            _ => {}
        }

        let plan = state.statement_to_plan(statement).await?;
        plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.push(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        // Writes to lake tables are Kiln's (staged + published); the catalog is read once.
        let managed_target = match &plan {
            LogicalPlan::Dml(dml) => self.managed_entry(&dml.table_name)?,
            _ => None,
        };
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                self.create_table(create, partition_by).await
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
                let name = create.name.table().to_string();
                for location in &create.locations {
                    self.check_allowed_location(
                        &format!("CREATE EXTERNAL TABLE {name}"),
                        location,
                    )?;
                }
                let temporary = create.temporary;
                let format = create.file_type.clone();
                let locations = create.locations.clone();
                self.ctx
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(
                        create,
                    )))
                    .await?;
                if !temporary {
                    self.check_name_for_lake(&name)?;
                    let entry = TableEntry::External(ExternalTable {
                        ddl: external_ddl.unwrap_or_else(|| sql.trim().to_string()),
                        format,
                        locations,
                    });
                    self.lake
                        .update_catalog(|c| {
                            c.tables.insert(name.clone(), entry);
                            Ok::<_, LakeError>(())
                        })
                        .map_err(lake_error)?;
                }
                Ok(StatementResult::message(format!(
                    "created external table {name}"
                )))
            }
            LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => self.drop_table(drop).await,
            LogicalPlan::Dml(dml) if managed_target.is_some() => {
                self.insert_managed(dml, managed_target.expect("checked by the guard"))
                    .await
            }
            LogicalPlan::DescribeTable(describe) => {
                let schema = describe.schema.as_ref();
                describe_schema(schema)
            }
            plan => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::clone(df.schema().inner());
                let batches = df.collect().await?;
                Ok(StatementResult::rows(schema, batches))
            }
        }
    }

    /// `INSERT [OVERWRITE] t PARTITION (c = v, ...) SELECT ...` (Hive/Spark):
    /// the query gives the other columns, the clause the partition values.
    /// An overwrite replaces that partition's directory and nothing else.
    async fn insert_partition(
        &self,
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
        let entry = self
            .managed_entry(&TableReference::bare(name.as_str()))?
            .ok_or_else(|| {
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
                crate::parser::quote_literal(value),
                crate::parser::quote_ident(column)
            ));
        }
        let source = insert.source.take().ok_or_else(|| {
            DataFusionError::Plan("INSERT ... PARTITION needs a query".to_string())
        })?;
        let query = format!("SELECT {} FROM ({source}) AS __kiln_src", select.join(", "));
        let plan = self.ctx.state().create_logical_plan(&query).await?;
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
        let rows = self
            .write_managed(
                &name,
                input,
                WriteMode {
                    carry,
                    ..WriteMode::default()
                },
                entry.schema,
                entry.partition_by,
            )
            .await?;
        Ok(StatementResult::written(
            format!("inserted {rows} rows into {name}"),
            rows,
        ))
    }

    /// Refuses external tables outside the lake and the allowed roots (when confined).
    /// `statement` names the statement in the error ("CREATE EXTERNAL TABLE t").
    pub(crate) fn check_allowed_location(&self, statement: &str, location: &str) -> Result<()> {
        let Some(allowed) = &self.allowed_paths else {
            return Ok(());
        };
        let path = location.strip_prefix("file://").unwrap_or(location);
        let inside = |root: &Path| {
            let root = normalize(root);
            let candidate = normalize(Path::new(path));
            candidate.starts_with(&root)
        };
        let lake_root = resolve_path(self.lake.root());
        let local = !location.contains("://") || location.starts_with("file://");
        if local && (inside(&lake_root) || allowed.iter().any(|root| inside(root))) {
            return Ok(());
        }
        let roots: Vec<String> = std::iter::once(&lake_root)
            .chain(allowed)
            .map(|p| p.display().to_string())
            .collect();
        Err(DataFusionError::Plan(format!(
            "{statement}: location '{location}' is outside the allowed roots ({}); \
             move the files under the lake or allow the directory with --allow-path DIR (KILN_ALLOWED_PATHS)",
            roots.join(", ")
        )))
    }

    fn check_name_for_lake(&self, name: &str) -> Result<()> {
        validate_table_name(name).map_err(lake_error)
    }

    pub(crate) fn managed_entry(&self, table: &TableReference) -> Result<Option<ManagedTable>> {
        let catalog = self.lake.catalog().map_err(lake_error)?;
        Ok(match catalog.tables.get(table.table()) {
            Some(TableEntry::Managed(m)) => Some(m.clone()),
            _ => None,
        })
    }

    /// Table names known to this session, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("public"))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }

    async fn create_table(
        &self,
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
        if self.ctx.table_exist(name.as_str())? {
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
        if is_plain_create {
            if let Some(field) = input_schema.fields().iter().find(|f| !f.is_nullable()) {
                return Err(DataFusionError::NotImplemented(format!(
                    "NOT NULL on column '{}' is not supported yet: lake tables accept NULL in every column; \
                     remove NOT NULL (a data check can enforce it)",
                    field.name()
                )));
            }
        }
        let table_schema = table_schema(&input_schema, &partition_by)?;
        let rows = if is_plain_create {
            let staged = self.lake.stage(&name).map_err(lake_error)?;
            let entry = self.publish(&name, staged, table_schema, partition_by)?;
            self.register_managed(&name, &entry)?;
            0
        } else {
            self.write_managed(
                &name,
                (*create.input).clone(),
                WriteMode::default(),
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

    async fn insert_managed(
        &self,
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
        let mode = WriteMode {
            carry,
            ..WriteMode::default()
        };
        let rows = self
            .write_managed(
                &name,
                (*dml.input).clone(),
                mode,
                entry.schema,
                entry.partition_by,
            )
            .await?;
        Ok(StatementResult::written(
            format!("inserted {rows} rows into {name}"),
            rows,
        ))
    }

    /// Runs `input` as a Ballista job writing Parquet into a staging directory,
    /// then publishes it as the table's next snapshot. Returns the rows written.
    pub(crate) async fn write_managed(
        &self,
        name: &str,
        input: LogicalPlan,
        mode: WriteMode,
        table_schema: Schema,
        partition_by: Vec<String>,
    ) -> Result<u64> {
        let staged = self.lake.stage(name).map_err(lake_error)?;
        let options = DataFrameWriteOptions::new().with_partition_by(partition_by.clone());
        let df = DataFrame::new(self.ctx.state(), input);
        let written = df
            .write_parquet(&staged.dir_for_writer(), options, None)
            .await?;
        let rows = written
            .first()
            .and_then(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
            .map(|counts| counts.iter().flatten().sum())
            .unwrap_or(0);
        let mut expected = None;
        if let Some((snapshot, replaced)) = &mode.carry {
            if let Some(partition) = replaced {
                only_partition_written(staged.dir(), partition)?;
            }
            self.lake
                .carry_snapshot(name, *snapshot, &staged, replaced.as_deref())
                .map_err(lake_error)?;
            expected = Some(*snapshot);
        }
        failpoint("before-publish");
        let entry = self
            .lake
            .publish(name, staged, expected, |snapshot| ManagedTable {
                schema: table_schema,
                partition_by,
                snapshot,
                ingest_manifest: mode.ingest_manifest,
            })
            .map_err(lake_error)?;
        self.register_managed(name, &entry)?;
        Ok(rows)
    }

    fn publish(
        &self,
        name: &str,
        staged: crate::lake::StagedWrite,
        schema: Schema,
        partition_by: Vec<String>,
    ) -> Result<ManagedTable> {
        self.lake
            .publish(name, staged, None, |snapshot| ManagedTable {
                schema,
                partition_by,
                snapshot,
                ingest_manifest: None,
            })
            .map_err(lake_error)
    }

    fn register_managed(&self, name: &str, entry: &ManagedTable) -> Result<()> {
        let provider = self.managed_provider(name, entry)?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, provider)?;
        Ok(())
    }

    fn managed_provider(&self, name: &str, entry: &ManagedTable) -> Result<Arc<dyn TableProvider>> {
        let parquet = self.ctx.state().table_options().parquet.clone();
        managed_table_provider(&self.lake, name, entry, parquet)
    }

    async fn drop_table(&self, drop: DropTable) -> Result<StatementResult> {
        let name = drop.name.table().to_string();
        let catalog = self.lake.catalog().map_err(lake_error)?;
        if catalog.tables.contains_key(&name) {
            self.ctx.deregister_table(name.as_str())?;
            self.lake.drop_table(&name).map_err(lake_error)?;
            return Ok(StatementResult::message(format!("dropped table {name}")));
        }
        if self.ctx.table_exist(name.as_str())? {
            self.ctx
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
            diagnostics::known_tables_hint(&name, &self.table_names())
        )))
    }

    fn show_tables(&self) -> Result<StatementResult> {
        let catalog = self.lake.catalog().map_err(lake_error)?;
        let mut rows: HashMap<String, [String; 4]> = HashMap::new();
        for (name, entry) in &catalog.tables {
            let row = match entry {
                TableEntry::Managed(m) => [
                    "managed".to_string(),
                    "parquet".to_string(),
                    self.lake.table_dir(name).display().to_string(),
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
        for name in self.table_names() {
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
}

fn describe_schema(schema: &Schema) -> Result<StatementResult> {
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

fn normalize_ident(value: &str, quote: Option<char>) -> String {
    if quote.is_some() {
        value.to_string()
    } else {
        value.to_lowercase()
    }
}

fn lake_table_name(reference: &TableReference) -> Result<String> {
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
fn table_schema(input: &Schema, partition_by: &[String]) -> Result<Schema> {
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

/// `kiln.job_runs`: one row per attempt of a job run (records written by `kiln jobs`).
pub fn job_runs_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::TimeUnit;
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("run_date", DataType::Date32, false),
        Field::new("attempt", DataType::Int64, false),
        Field::new("max_attempts", DataType::Int64, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("started_at", utc(), false),
        Field::new("ended_at", utc(), true),
        Field::new("rows_written", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("params", DataType::Utf8, true),
        Field::new("host", DataType::Utf8, true),
        Field::new("pid", DataType::Int64, true),
    ]))
}

/// The text of a literal partition value: `'x'`, `5`, `DATE '2026-11-01'`.
fn partition_literal(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<String> {
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
fn failpoint(name: &str) {
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
}

/// A partition overwrite must write into its own partition directory only.
fn only_partition_written(staged: &Path, partition: &Path) -> Result<()> {
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

pub(crate) fn lake_error(e: LakeError) -> DataFusionError {
    match e {
        LakeError::InvalidTableName(_) => DataFusionError::Plan(e.to_string()),
        other => DataFusionError::External(Box::new(other)),
    }
}

/// `path` made absolute with `.` and `..` removed, symlinks resolved where it exists.
fn normalize(path: &Path) -> PathBuf {
    let absolute = resolve_path(path);
    if let Ok(real) = absolute.canonicalize() {
        return real;
    }
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lake directory for `path`, resolving `~`-less relative paths against the cwd.
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// DataFusion's planner plus Kiln's extension nodes; used where plans become
/// physical (the scheduler, and executors' re-planning).
#[derive(Debug)]
pub(crate) struct KilnQueryPlanner;

#[async_trait::async_trait]
impl datafusion::execution::context::QueryPlanner for KilnQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::physical_planner::PhysicalPlanner;
        datafusion::physical_planner::DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(KilnExtensionPlanner),
        ])
        .create_physical_plan(logical_plan, session_state)
        .await
    }
}

/// The table provider reading a managed table's published snapshot.
pub(crate) fn managed_table_provider(
    lake: &Lake,
    name: &str,
    entry: &ManagedTable,
    parquet: datafusion::config::TableParquetOptions,
) -> Result<Arc<dyn TableProvider>> {
    let dir = lake.snapshot_dir(name, entry.snapshot);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DataFusionError::Execution(format!("lake table '{name}': {e}")))?;
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let file_fields: Vec<Field> = entry
        .schema
        .fields()
        .iter()
        .filter(|f| !entry.partition_by.contains(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    let partition_cols: Vec<(String, DataType)> = entry
        .partition_by
        .iter()
        .map(|p| {
            entry
                .schema
                .field_with_name(p)
                .map(|f| (p.clone(), f.data_type().clone()))
                .map_err(|e| DataFusionError::Execution(format!("lake table '{name}': {e}")))
        })
        .collect::<Result<_>>()?;
    let format = ParquetFormat::default().with_options(parquet);
    let options = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::new(Schema::new(file_fields)));
    Ok(Arc::new(ListingTable::try_new(config)?))
}
