//! The one place every role's session state is built: the client, the
//! scheduler and each executor call [`kiln_state`] with a config from
//! [`kiln_session_config`], so Kiln's functions, query planner, codecs and
//! lake tables are the same everywhere.

use std::path::Path;
use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::SessionConfig;

use crate::catalog::lake::Lake;
use crate::catalog::tables::{system_schema, LakeSchema};
use crate::functions::kiln_udfs;
use crate::plan::codec::{KilnLogicalCodec, KilnPhysicalCodec};
use crate::plan::local_stage::LocalStageExec;
use crate::plan::physical::kiln_physical_planner;
use crate::plan::task_runtime::KilnRuntimeOptions;
use crate::plan::task_safety::PartitionedHashJoins;

/// Kiln's session state for any role: DataFusion's defaults, Kiln's planner
/// and codecs (in `config`, see [`kiln_session_config`]), the UDFs reading
/// models from `lake`, the lake's tables as the `public` schema
/// ([`LakeSchema`]) and the `kiln` system tables.
pub fn kiln_state(config: SessionConfig, lake: &Path) -> Result<SessionState> {
    build_state(
        SessionStateBuilder::new().with_config(config),
        lake,
        Stages::Distributed,
    )
}

/// [`kiln_state`] for a scheduler job, whose planner cuts plans into
/// `stages` and reads file statistics through `runtime`
/// ([`planning_runtime`], shared by all its jobs).
pub fn kiln_scheduler_state(
    config: SessionConfig,
    lake: &Path,
    stages: Stages,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionState> {
    build_state(
        SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime),
        lake,
        stages,
    )
}

/// [`kiln_state`] for a client session, which plans its statements with a
/// [`planning_runtime`] of its own. `stages` is how the scheduler runs
/// them: cut into stages whose partitions are separate tasks, the client
/// plans hash joins as [`PartitionedHashJoins`].
pub fn kiln_client_state(
    config: SessionConfig,
    lake: &Path,
    stages: Stages,
) -> Result<SessionState> {
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(planning_runtime()?);
    if stages == Stages::Distributed {
        let rules = PartitionedHashJoins::inserted_into(&PhysicalOptimizer::new().rules);
        builder = builder.with_physical_optimizer_rules(rules);
    }
    build_state(builder, lake, Stages::Distributed)
}

/// The runtime a planner (a client session, or a scheduler for all its
/// jobs) plans with, so Parquet footers and file statistics are read once per
/// file, not once per statement (DataFusion's caches check each file's size
/// and modification time). File listings are not cached: a lake or landing
/// directory gains files between statements.
pub fn planning_runtime() -> Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .build_arc()
}

fn build_state(
    mut builder: SessionStateBuilder,
    lake: &Path,
    stages: Stages,
) -> Result<SessionState> {
    // DataFusion rebuilds a session's state with this off after a
    // `SET datafusion.runtime.*`, and the config travels to other roles.
    if let Some(config) = builder.config().as_mut() {
        config
            .options_mut()
            .catalog
            .create_default_catalog_and_schema = true;
    }
    let mut state = builder
        .with_default_features()
        .with_query_planner(Arc::new(KilnQueryPlanner { stages }))
        .build();
    for udf in kiln_udfs(lake.to_path_buf()) {
        datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(udf))?;
    }
    register_lake_schemas(&state, lake)?;
    Ok(state)
}

/// Makes the lake's tables ([`LakeSchema`]) the default catalog's `public`
/// schema and the system tables its `kiln` schema. Ballista's client upgrade
/// replaces the default catalog, so the client registers them again after it.
pub(crate) fn register_lake_schemas(state: &SessionState, lake: &Path) -> Result<()> {
    let name = &state.config_options().catalog.default_catalog;
    let catalog = state.catalog_list().catalog(name).ok_or_else(|| {
        DataFusionError::Configuration(format!(
            "the session has no default catalog '{name}' to register the lake's tables in"
        ))
    })?;
    let lake_schema = LakeSchema::open(
        lake,
        state.table_options().parquet.clone(),
        state.runtime_env().cache_manager.get_file_statistic_cache(),
    )?;
    catalog.register_schema("public", Arc::new(lake_schema))?;
    let system = system_schema(&Lake::open(lake).map_err(DataFusionError::from)?)?;
    catalog.register_schema("kiln", system)?;
    Ok(())
}

/// How a scheduler cuts each statement's plan into Ballista stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stages {
    /// At every exchange, as Ballista does: stages may run on different
    /// executors, their data moved through shuffle files.
    #[default]
    Distributed,
    /// The whole plan as one stage ([`LocalStageExec`]): for a scheduler
    /// whose only executor runs in its process (the embedded cluster).
    One,
}

/// DataFusion's planner plus Kiln's extension nodes; used where plans become
/// physical (the scheduler, and executors' re-planning).
#[derive(Debug, Default)]
pub struct KilnQueryPlanner {
    stages: Stages,
}

#[async_trait::async_trait]
impl datafusion::execution::context::QueryPlanner for KilnQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::physical_planner::PhysicalPlanner;
        let plan = kiln_physical_planner()
            .create_physical_plan(logical_plan, session_state)
            .await?;
        // Ballista answers EXPLAIN itself (with the stages of the explained
        // plan, which come through here again), from DataFusion's ExplainExec.
        let explain = matches!(logical_plan, LogicalPlan::Explain(_));
        Ok(match self.stages {
            Stages::One if !explain => Arc::new(LocalStageExec::new(plan)),
            _ => plan,
        })
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
        .with_option_extension(KilnRuntimeOptions::default())
        .with_target_partitions(partitions)
        .set_bool("ballista.planner.adaptive.enabled", false)
        // Ballista plans sort-merge joins because they can spill and hash
        // joins cannot; neither spills without a bounded memory pool, which
        // executors have only with `--memory-limit`, and sort-merge joins made
        // TPC-H on a cluster 2.2 times slower. Ballista's planner still
        // broadcasts a build side it can prove small.
        .set_bool("datafusion.optimizer.prefer_hash_join", true)
}

/// `config` with the DataFusion defaults that Ballista changes because its
/// plans cross stage boundaries (the thresholds under which a join collects
/// its build side, which Ballista keeps at its broadcast limits), for
/// sessions whose scheduler plans [`Stages::One`]: their plans run in one
/// process, as DataFusion's do. A later `SET` still overrides them.
pub fn one_stage_session_config(config: SessionConfig) -> SessionConfig {
    let defaults = datafusion::config::ConfigOptions::default().optimizer;
    config
        .set_u64(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            defaults.hash_join_single_partition_threshold as u64,
        )
        .set_u64(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            defaults.hash_join_single_partition_threshold_rows as u64,
        )
}
