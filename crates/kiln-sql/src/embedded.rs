//! Kiln's embedded Ballista cluster: a scheduler and one executor in this
//! process, talking gRPC over loopback exactly as separate processes would.
//!
//! Ballista's own `standalone` setup leaves the executor polling the scheduler
//! every 50 ms, so every stage of every query waits for the next poll. Here
//! the scheduler's `on_work_available` callback wakes the executor's poll
//! loop as soon as a stage becomes runnable, and the loop reports finished
//! tasks at once. Plans, codecs and shuffles are Ballista's, unchanged.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::serde::protobuf::ExecutorRegistration;
use ballista_core::serde::scheduler::{
    ExecutorOperatingSystemSpecification, ExecutorSpecification,
};
use ballista_core::serde::BallistaCodec;
use ballista_core::utils::{create_grpc_server, GrpcServerConfig};
use ballista_core::{ConfigProducer, RuntimeProducer, BALLISTA_PROTOCOL_VERSION};
use ballista_executor::execution_loop::poll_loop;
use ballista_executor::executor::Executor;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::health::ExecutorHealth;
use ballista_executor::metrics::LoggingMetricsCollector;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::metrics::default_metrics_collector;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;

fn config_error(
    what: &str,
) -> impl FnOnce(ballista_core::error::BallistaError) -> DataFusionError + '_ {
    move |e| DataFusionError::Configuration(format!("embedded Ballista {what}: {e}"))
}

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
    /// The executor's shuffle directory; removed when the cluster is dropped.
    _work_dir: tempfile::TempDir,
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

/// Starts a scheduler and an executor with `vcores` task slots, both using
/// `state`'s functions, codecs and configuration.
pub async fn start(state: &SessionState, vcores: usize) -> Result<EmbeddedCluster> {
    let logical = state.config().ballista_logical_extension_codec();
    let physical = state.config().ballista_physical_extension_codec();
    let work_available = Arc::new(Notify::new());

    let scheduler_state = state.clone();
    let scheduler_config = state.config().clone();
    let config_producer: ConfigProducer = Arc::new(move || scheduler_config.clone());
    let cluster = BallistaCluster::new_memory(
        "localhost:0",
        Arc::new(move |_: SessionConfig| Ok(scheduler_state.clone())),
        Arc::clone(&config_producer),
    );
    let notify = Arc::clone(&work_available);
    let policy = SchedulerConfig::default()
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged)
        .with_on_work_available(Arc::new(move |_| notify.notify_one()));
    let mut scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> = SchedulerServer::new(
        "localhost:0".to_string(),
        cluster,
        BallistaCodec::new(Arc::clone(&logical), Arc::clone(&physical)),
        Arc::new(policy),
        default_metrics_collector().map_err(config_error("metrics"))?,
    );
    scheduler.init().await.map_err(config_error("scheduler"))?;
    let max_message = state.config().ballista_grpc_client_max_message_size();
    let scheduler_service = SchedulerGrpcServer::new(scheduler)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let listener = TcpListener::bind("localhost:0").await?;
    let scheduler_url = format!("http://localhost:{}", listener.local_addr()?.port());
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(scheduler_service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    // Task definitions carry their plan, constants included (a folded
    // `range(0, 1000000)` is 8 MB): the executor must accept messages as large
    // as the scheduler may send, or its polls fail and the job never ends.
    let scheduler_client = connect(&scheduler_url)
        .await?
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let work_dir = tempfile::Builder::new()
        .prefix("kiln-executor-")
        .tempdir()?;
    let work_dir_path = work_dir.path().display().to_string();
    let listener = TcpListener::bind("localhost:0").await?;
    let registration = ExecutorRegistration {
        id: ballista_core::ids::new_instance_id(),
        host: Some("localhost".to_string()),
        port: listener.local_addr()?.port() as u32,
        grpc_port: 0,
        specification: Some(
            ExecutorSpecification::default()
                .with_vcores(vcores as u32)
                .into(),
        ),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
    };
    let executor_config = state.config().clone().upgrade_for_ballista();
    let runtime = state.runtime_env().clone();
    let executor = Arc::new(Executor::with_default_execution_engine(
        registration,
        &work_dir_path,
        Arc::new(move |_: &SessionConfig| Ok(Arc::clone(&runtime))) as RuntimeProducer,
        Arc::new(move || executor_config.clone()) as ConfigProducer,
        Arc::new(state.into()),
        Arc::new(LoggingMetricsCollector::default()),
        vcores,
    ));
    let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir_path))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(flight)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    tokio::spawn(poll_loop(
        scheduler_client,
        executor,
        BallistaCodec::<LogicalPlanNode, PhysicalPlanNode>::new(logical, physical),
        Some(Arc::clone(&work_available)),
        None,
        ExecutorHealth::default(),
    ));
    Ok(EmbeddedCluster {
        scheduler_url,
        work_available,
        _work_dir: work_dir,
    })
}

async fn connect(url: &str) -> Result<SchedulerGrpcClient<tonic::transport::Channel>> {
    let mut last_error = None;
    for _ in 0..100 {
        match SchedulerGrpcClient::connect(url.to_string()).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Err(DataFusionError::Configuration(format!(
        "embedded Ballista scheduler at {url} did not answer: {last_error:?}"
    )))
}
