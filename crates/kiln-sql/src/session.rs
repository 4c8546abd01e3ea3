//! [`KilnSession`]: one connection to a lake, executing statements through Ballista.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::FutureExt;

use crate::catalog::lake::{normalize, resolve_path, Lake, TableEntry};
use crate::catalog::registry::ModelRegistry;
use crate::error::lake_error;
use crate::exec;
use crate::functions::kiln_udfs;
use crate::parse::script::{split_statements, ScriptStatement};
use crate::plan::submit::ClientQueryPlanner;
use crate::state::{kiln_client_state, register_lake_schemas, Stages};

/// How to open a [`KilnSession`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The lake directory (created if missing).
    pub lake: PathBuf,
    /// `df://host:port` of a Ballista scheduler; `None`: an embedded cluster (see `kiln-cluster`).
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

/// A connection to a lake. Every statement runs as Ballista jobs on its
/// [`Cluster`]. Statement families are plain functions over it in `exec`.
pub struct KilnSession {
    ctx: SessionContext,
    lake: Lake,
    progress: bool,
    warnings: Mutex<Vec<String>>,
    cluster: Box<dyn Cluster>,
    /// Roots external tables must lie under (besides the lake); `None`: anywhere.
    allowed_paths: Option<Vec<PathBuf>>,
}

/// The Ballista cluster a session's jobs run on, as the session sees it
/// (`kiln-cluster` starts an embedded one or connects to a remote one).
pub trait Cluster: Send + Sync {
    /// The scheduler's gRPC URL (`http://host:port` or `https://...`).
    fn scheduler_url(&self) -> &str;
    /// Whether the executors are this process (device checks then run before any round).
    fn is_embedded(&self) -> bool;
}

impl KilnSession {
    /// Opens the lake and connects to `cluster`'s scheduler with `config`
    /// (from [`crate::kiln_session_config`], plus the cluster's token and
    /// TLS settings), registering the lake's external tables.
    pub async fn connect(
        options: &SessionOptions,
        config: SessionConfig,
        cluster: Box<dyn Cluster>,
    ) -> Result<Self> {
        let lake = Lake::open(&options.lake).map_err(lake_error)?;
        let stages = if cluster.is_embedded() {
            Stages::One
        } else {
            Stages::Distributed
        };
        let planner = ClientQueryPlanner::new(
            cluster.scheduler_url().to_string(),
            &config,
            stages == Stages::One,
        );
        let config = config.with_ballista_query_planner(Arc::new(planner));
        let state = kiln_client_state(config, lake.root(), stages)?;
        let state = state.upgrade_for_ballista(cluster.scheduler_url().to_string())?;
        register_lake_schemas(&state, lake.root())?;
        let ctx = SessionContext::new_with_state(state);
        // Ballista's upgrade rebuilds the client's function list: register again.
        for udf in kiln_udfs(lake.root().to_path_buf()) {
            ctx.register_udf(udf);
        }
        let allowed_paths = if options.allowed_paths.is_empty() && cluster.is_embedded() {
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
            cluster,
            allowed_paths,
        };
        session.register_external_tables().await?;
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
        self.cluster.is_embedded()
    }

    /// The lake's model registry.
    pub fn registry(&self) -> ModelRegistry {
        ModelRegistry::new(self.lake.root())
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

    /// Managed tables come from [`crate::catalog::tables::LakeSchema`];
    /// external tables are registered from their stored DDL.
    async fn register_external_tables(&self) -> Result<()> {
        let catalog = self.lake.catalog().map_err(lake_error)?;
        for (name, entry) in &catalog.tables {
            if let TableEntry::External(external) = entry {
                if let Err(e) = self.ctx.sql(&external.ddl).await {
                    self.warn(format!(
                        "external table '{name}' could not be registered ({e}); \
                         fix its files or DROP TABLE {name}"
                    ));
                }
            }
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
        let outcome = AssertUnwindSafe(exec::execute(self, sql, &mut tables))
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
            Err(e) => Err(exec::diagnostics::explain(e, self, &tables).await),
        }
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
}
