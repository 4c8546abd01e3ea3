//! Kiln's embedded Ballista cluster: a scheduler and one executor in this
//! process ([`crate::server`]'s, on loopback ports), talking gRPC exactly as
//! separate processes would.
//!
//! Ballista's own `standalone` setup leaves the executor polling the scheduler
//! every 50 ms, so every stage of every query waits for the next poll. Here
//! the scheduler's `on_work_available` callback wakes the executor's poll
//! loop as soon as a stage becomes runnable, and the loop reports finished
//! tasks at once. Its scheduler plans each statement as one stage
//! ([`kiln_sql::Stages::One`]): with one executor in this process, no
//! exchange crosses a machine, so DataFusion's in-memory exchanges replace
//! Ballista's shuffle files and stage hand-offs. Sessions on it plan with
//! DataFusion's join defaults ([`kiln_sql::one_stage_session_config`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::Result;
use kiln_sql::Stages;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::server::{
    self as cluster, ExecutorOptions, RunningExecutor, RunningScheduler, SchedulerOptions,
};

/// How often the executor polls while a statement runs. Ballista's poll loop
/// learns of finished tasks only when it polls, and nothing wakes it when a
/// local task ends; a short poll while a job is in flight keeps stage
/// hand-offs at a few milliseconds instead of Ballista's 50 ms to 1 s.
const IN_FLIGHT_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// A running in-process scheduler + executor; dropped with the process.
pub struct EmbeddedCluster {
    /// `http://localhost:PORT` of the scheduler.
    pub scheduler_url: String,
    work_available: Arc<Notify>,
    _scheduler: RunningScheduler,
    _executor: RunningExecutor,
}

impl EmbeddedCluster {
    /// Keeps the executor polling every few milliseconds until the guard is
    /// dropped. Hold it while a statement executes.
    pub fn in_flight(&self) -> InFlight {
        let notify = Arc::clone(&self.work_available);
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(IN_FLIGHT_POLL_INTERVAL);
            loop {
                interval.tick().await;
                notify.notify_one();
            }
        });
        InFlight { ticker }
    }
}

/// Stops the in-flight polling when dropped.
pub struct InFlight {
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Starts a scheduler and an executor with `vcores` task slots on loopback
/// ports, both with Kiln's session state for `lake`.
pub async fn start(
    lake: &Path,
    target_partitions: Option<usize>,
    vcores: usize,
) -> Result<EmbeddedCluster> {
    let work_available = Arc::new(Notify::new());
    let mut scheduler_options = SchedulerOptions::new(lake);
    scheduler_options.target_partitions = target_partitions;
    scheduler_options.stages = Stages::One;
    let scheduler = cluster::start_scheduler(
        TcpListener::bind("localhost:0").await?,
        &scheduler_options,
        Some(Arc::clone(&work_available)),
    )
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
    let executor = cluster::start_executor(
        TcpListener::bind("localhost:0").await?,
        &executor_options,
        Some(Arc::clone(&work_available)),
    )
    .await?;
    Ok(EmbeddedCluster {
        scheduler_url,
        work_available,
        _scheduler: scheduler,
        _executor: executor,
    })
}
