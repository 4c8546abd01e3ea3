//! The table providers over the lake: [`LakeSchema`] (managed tables read
//! from the catalog at each lookup), a managed table's snapshot
//! ([`managed_table_provider`]), and the `kiln` system tables.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::{Constraint, Constraints};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::FileStatisticsCache;

use crate::catalog::lake::{Lake, ManagedTable, TableEntry};

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

/// The table provider reading a managed table's published snapshot; with
/// `statistics`, file statistics are read once per file (the cache checks
/// each file's size and modification time).
pub fn managed_table_provider(
    lake: &Lake,
    name: &str,
    entry: &ManagedTable,
    parquet: datafusion::config::TableParquetOptions,
    statistics: Option<Arc<FileStatisticsCache>>,
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
    let constraints = entry
        .keys
        .iter()
        .map(|key| {
            let columns = key
                .columns
                .iter()
                .map(|c| entry.schema.index_of(c))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| DataFusionError::Execution(format!("lake table '{name}': {e}")))?;
            Ok(if key.primary {
                Constraint::PrimaryKey(columns)
            } else {
                Constraint::Unique(columns)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(
        ListingTable::try_new(config)?
            .with_cache(statistics)
            .with_constraints(Constraints::new_unverified(constraints)),
    ))
}
/// The lake's managed tables as a schema, read from the catalog at each
/// lookup (so a table published by any process is visible at once), plus
/// the tables a session registers itself (external tables, views). The
/// `public` schema of every role: client, scheduler (Flight SQL) and executors.
#[derive(Debug)]
pub struct LakeSchema {
    lake: Lake,
    parquet: TableParquetOptions,
    statistics: Option<Arc<FileStatisticsCache>>,
    session_tables: MemorySchemaProvider,
}

impl LakeSchema {
    /// The schema of the lake at `root`; its tables keep file statistics in
    /// `statistics` (the session runtime's cache).
    pub fn open(
        root: &Path,
        parquet: TableParquetOptions,
        statistics: Option<Arc<FileStatisticsCache>>,
    ) -> Result<Self> {
        Ok(Self {
            lake: Lake::open(root).map_err(DataFusionError::from)?,
            parquet,
            statistics,
            session_tables: MemorySchemaProvider::new(),
        })
    }

    fn managed(&self) -> Vec<(String, ManagedTable)> {
        self.lake
            .catalog()
            .map(|c| {
                c.tables
                    .into_iter()
                    .filter_map(|(name, entry)| match entry {
                        TableEntry::Managed(m) => Some((name, m)),
                        TableEntry::External(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.managed().into_iter().map(|(n, _)| n).collect();
        names.extend(self.session_tables.table_names());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.session_tables.table(name).await? {
            return Ok(Some(table));
        }
        match self.managed().into_iter().find(|(n, _)| n == name) {
            Some((name, entry)) => Ok(Some(managed_table_provider(
                &self.lake,
                &name,
                &entry,
                self.parquet.clone(),
                self.statistics.clone(),
            )?)),
            None => Ok(None),
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.session_tables.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.session_tables.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.session_tables.table_exist(name) || self.managed().iter().any(|(n, _)| n == name)
    }
}

/// The `kiln` schema of system tables: `kiln.check_results` (the Parquet
/// files checks append to) and `kiln.job_runs` (the run records of `kiln jobs`).
pub fn system_schema(lake: &Lake) -> Result<Arc<dyn SchemaProvider>> {
    let dir = lake.check_results_dir();
    std::fs::create_dir_all(&dir)?;
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let format = ParquetFormat::default();
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(results_schema());
    let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
    datafusion::catalog::SchemaProvider::register_table(
        schema.as_ref(),
        "check_results".to_string(),
        Arc::new(ListingTable::try_new(config)?),
    )?;
    let runs = lake.meta_dir().join("job_runs");
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
    Ok(schema)
}
