//! Kiln's embedded Ballista cluster: a scheduler and one executor in this
//! process ([`crate::server`]'s, on loopback ports), talking gRPC exactly as
//! separate processes would.
//!
//! Stage hand-offs take a few milliseconds, as on every Kiln cluster
//! ([`crate::handoff`]). Its scheduler plans each statement as one stage
//! ([`kiln_sql::Stages::One`]): with one executor in this process, no
//! exchange crosses a machine, so DataFusion's in-memory exchanges replace
//! Ballista's shuffle files and stage hand-offs. Sessions on it plan with
//! DataFusion's join defaults ([`kiln_sql::one_stage_session_config`]).

use std::path::Path;

use datafusion::error::Result;
use kiln_sql::Stages;
use tokio::net::TcpListener;

use crate::server::{
    self as cluster, ExecutorOptions, RunningExecutor, RunningScheduler, SchedulerOptions,
};

/// A running in-process scheduler + executor; dropped with the process.
pub struct EmbeddedCluster {
    /// `http://localhost:PORT` of the scheduler.
    pub scheduler_url: String,
    _scheduler: RunningScheduler,
    _executor: RunningExecutor,
}

/// Starts a scheduler and an executor with `vcores` task slots on loopback
/// ports, both with Kiln's session state for `lake`.
pub async fn start(
    lake: &Path,
    target_partitions: Option<usize>,
    vcores: usize,
) -> Result<EmbeddedCluster> {
    let mut scheduler_options = SchedulerOptions::new(lake);
    scheduler_options.target_partitions = target_partitions;
    scheduler_options.stages = Stages::One;
    let scheduler =
        cluster::start_scheduler(TcpListener::bind("localhost:0").await?, &scheduler_options)
            .await?;
    let scheduler_url = format!("http://localhost:{}", scheduler.address.port());
    let executor_options = ExecutorOptions {
        lake: lake.to_path_buf(),
        scheduler_url: scheduler_url.clone(),
        advertise_host: "localhost".to_string(),
        slots: vcores,
        work_dir: None,
        memory_limit: None,
        token: None,
        tls: None,
        tls_ca: None,
        target_partitions,
    };
    let executor =
        cluster::start_executor(TcpListener::bind("localhost:0").await?, &executor_options).await?;
    Ok(EmbeddedCluster {
        scheduler_url,
        _scheduler: scheduler,
        _executor: executor,
    })
}
