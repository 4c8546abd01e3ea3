//! Kiln's Ballista processes: the scheduler and executors of a cluster
//! (`kiln scheduler`, `kiln executor`), also used in-process by
//! [`crate::embedded`], and the client side of connecting to a scheduler.
//!
//! Every role builds its session from [`kiln_sql::kiln_state`], so Kiln's UDFs, query
//! planner and extension codecs are the same on the client, the scheduler and
//! each executor. With a token, every call to the scheduler (clients' jobs,
//! executors' polls, Flight SQL) must carry it in the `x-kiln-token` header:
//! executors add it to their calls, clients through Ballista's gRPC metadata
//! setting, Flight SQL clients as a call header. (`authorization` is left to
//! Flight SQL's own session tokens.) Health: `GET /health` on the scheduler port and on each
//! executor's Flight port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::serde::protobuf::{ExecutorRegistration, ExecutorStoppedParams};
use ballista_core::serde::scheduler::{
    ExecutorOperatingSystemSpecification, ExecutorSpecification,
};
use ballista_core::serde::BallistaCodec;
use ballista_core::{ConfigProducer, RuntimeProducer, BALLISTA_PROTOCOL_VERSION};
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
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
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio_stream::StreamExt;
use tonic::service::RoutesBuilder;
use tonic::transport::Channel;

use crate::handoff::{self, LongPollScheduler, WakeOnDrop};
use kiln_sql::{
    kiln_scheduler_state, kiln_session_config, kiln_state, planning_runtime, task_runtime, Stages,
};

/// The environment variable holding the cluster's shared secret.
pub const TOKEN_ENV: &str = "KILN_TOKEN";

/// `df://host:port` (or `http://host:port`, or `host:port`) → the gRPC URL.
pub fn scheduler_url(cluster: &str) -> Result<String> {
    let address = cluster
        .strip_prefix("df://")
        .or_else(|| cluster.strip_prefix("http://"))
        .unwrap_or(cluster);
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid || address.contains('/') {
        return Err(DataFusionError::Configuration(format!(
            "invalid cluster address '{cluster}': expected df://HOST:PORT, e.g. df://127.0.0.1:50050"
        )));
    }
    Ok(format!("http://{address}"))
}

/// A server's TLS identity: PEM certificate chain and private key.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsIdentity {
    fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                DataFusionError::Configuration(format!(
                    "cannot read the TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "certificate (--tls-cert)")?,
            read(&self.key, "key (--tls-key)")?,
        );
        Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
    }
}

/// Client-side TLS: connect with `https` and trust the PEM CA certificate
/// `ca` (for scheduler, executors' results and shuffles).
pub fn client_tls(config: SessionConfig, ca: &Path) -> Result<SessionConfig> {
    let tls = client_tls_config(ca)?;
    Ok(config
        .with_ballista_use_tls(true)
        .with_ballista_override_create_grpc_client_endpoint(Arc::new(
            move |endpoint: tonic::transport::Endpoint| {
                endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            },
        )))
}

fn client_tls_config(ca: &Path) -> Result<tonic::transport::ClientTlsConfig> {
    let pem = std::fs::read(ca).map_err(|e| {
        DataFusionError::Configuration(format!(
            "cannot read the TLS CA certificate {} (--tls-ca): {e}",
            ca.display()
        ))
    })?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem)))
}

/// `url` with `https` when `tls`.
pub fn with_scheme(url: &str, tls: bool) -> String {
    match (tls, url.strip_prefix("http://")) {
        (true, Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    }
}

/// The header carrying the cluster's shared secret.
pub const TOKEN_HEADER: &str = "x-kiln-token";

fn ballista_error(
    what: &str,
) -> impl FnOnce(ballista_core::error::BallistaError) -> DataFusionError + '_ {
    move |e| DataFusionError::Configuration(format!("Ballista {what}: {e}"))
}

/// How to run a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub lake: PathBuf,
    /// Clients and executors must present this token.
    pub token: Option<String>,
    /// Serve TLS with this identity.
    pub tls: Option<TlsIdentity>,
    /// Serve Arrow Flight SQL on the scheduler port.
    pub flight_sql: bool,
    /// An executor silent for this long is declared lost and its tasks rerun.
    pub executor_timeout: Duration,
    /// Attempts per task before the job fails.
    pub task_max_failures: usize,
    pub target_partitions: Option<usize>,
    /// How plans are cut into stages: [`Stages::One`] only when the one
    /// executor runs in this process.
    pub stages: Stages,
}

impl SchedulerOptions {
    pub fn new(lake: impl Into<PathBuf>) -> Self {
        Self {
            lake: lake.into(),
            token: None,
            tls: None,
            flight_sql: false,
            executor_timeout: Duration::from_secs(60),
            task_max_failures: 4,
            target_partitions: None,
            stages: Stages::Distributed,
        }
    }
}

/// A scheduler serving on a local port.
pub struct RunningScheduler {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningScheduler {
    /// Stops accepting calls and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.served).await {
            Ok(result) => result.map_err(DataFusionError::from),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }
}

/// Starts a scheduler on `listener`.
pub async fn start_scheduler(
    listener: TcpListener,
    options: &SchedulerOptions,
) -> Result<RunningScheduler> {
    let base_config = kiln_session_config(options.target_partitions);
    let logical = base_config.ballista_logical_extension_codec();
    let physical = base_config.ballista_physical_extension_codec();
    let address = listener.local_addr()?;
    let lake = options.lake.clone();
    let stages = options.stages;
    let runtime = planning_runtime()?;
    let producer_config = base_config.clone();
    let config_producer: ConfigProducer = Arc::new(move || producer_config.clone());
    let cluster = BallistaCluster::new_memory(
        address.to_string(),
        Arc::new(move |config: SessionConfig| {
            // Flight SQL clients name lake tables directly (the state's
            // LakeSchema); jobs from Kiln clients carry their scans in the plan.
            kiln_scheduler_state(config, &lake, stages, Arc::clone(&runtime))
        }),
        Arc::clone(&config_producer),
    );
    let max_message = base_config.ballista_grpc_client_max_message_size();
    let mut policy = SchedulerConfig::default()
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged)
        .with_hostname(address.ip().to_string())
        .with_port(address.port())
        .with_grpc_server_max_decoding_message_size(max_message as u32)
        .with_grpc_server_max_encoding_message_size(max_message as u32)
        .with_flight_sql(options.flight_sql);
    policy.executor_timeout_seconds = options.executor_timeout.as_secs().max(1);
    policy.expire_dead_executor_interval_seconds = (options.executor_timeout.as_secs() / 4).max(1);
    policy.task_max_failures = options.task_max_failures.max(1);
    let work_available = Arc::new(Notify::new());
    let notify = Arc::clone(&work_available);
    policy = policy.with_on_work_available(Arc::new(move |_| notify.notify_waiters()));
    let policy = Arc::new(policy);
    let mut scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> = SchedulerServer::new(
        address.to_string(),
        cluster,
        BallistaCodec::new(logical, physical),
        Arc::clone(&policy),
        default_metrics_collector().map_err(ballista_error("metrics"))?,
    );
    scheduler
        .init()
        .await
        .map_err(ballista_error("scheduler"))?;

    let mut routes = RoutesBuilder::default();
    routes.add_service(
        SchedulerGrpcServer::new(LongPollScheduler::new(scheduler.clone(), work_available))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
    );
    if options.flight_sql {
        let proxy = ballista_core::flight_proxy_service::BallistaFlightProxyService::new(
            max_message,
            max_message,
            false,
            None,
        );
        let service =
            ballista_flight_sql::service::BallistaFlightSqlService::new(Arc::new(scheduler), proxy);
        routes.add_service(
            FlightServiceServer::new(service)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        );
    }
    let router = routes
        .routes()
        .into_axum_router()
        .route("/health", axum::routing::get(|| async { "ok\n" }));
    serve(
        listener,
        router,
        options.token.clone(),
        options.tls.as_ref(),
    )
    .map(|(stop, served)| RunningScheduler {
        address,
        stop: Some(stop),
        served,
    })
}

/// Serves `router` on `listener`, requiring `token` on everything but `/health`.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    token: Option<String>,
    tls: Option<&TlsIdentity>,
) -> Result<(
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let router = match token {
        Some(token) => {
            let expected = Arc::new(token);
            router.layer(axum::middleware::from_fn(
                move |request: Request, next: Next| {
                    let expected = Arc::clone(&expected);
                    async move { check_token(&expected, request, next).await }
                },
            ))
        }
        None => router,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    // Every exchange between Kiln's roles is a small HTTP/2 frame answered by
    // the peer: with Nagle on, each waits for the peer's delayed ACK (~40 ms).
    let served = match tls {
        None => tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        }),
        Some(identity) => {
            let mut server = tonic::transport::Server::builder()
                .tls_config(identity.server_config()?)
                .map_err(|e| DataFusionError::Configuration(format!("TLS setup: {e}")))?
                .accept_http1(true);
            let routes = server.add_routes(tonic::service::Routes::from(router));
            tokio::spawn(async move {
                routes
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener).map(|tcp| {
                            tcp.inspect(|tcp| {
                                let _ = tcp.set_nodelay(true);
                            })
                        }),
                        stopped,
                    )
                    .await
                    .map_err(std::io::Error::other)
            })
        }
    };
    Ok((stop, served))
}

async fn check_token(expected: &str, request: Request, next: Next) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    match presented {
        Some(value) if constant_time_eq(value.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => unauthenticated("the Kiln token presented is wrong; check --token / KILN_TOKEN"),
        None => {
            unauthenticated("this Kiln cluster requires a token: pass --token or set KILN_TOKEN")
        }
    }
}

fn unauthenticated(message: &str) -> Response {
    tonic::Status::unauthenticated(message)
        .into_http::<axum::body::Body>()
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// How to run an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub lake: PathBuf,
    /// `http://host:port` of the scheduler.
    pub scheduler_url: String,
    /// The host other processes use to fetch this executor's shuffle output.
    pub advertise_host: String,
    /// Concurrent tasks.
    pub slots: usize,
    /// Shuffle files; a temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// Memory pool per task runtime, in bytes.
    pub memory_limit: Option<usize>,
    pub token: Option<String>,
    /// Serve shuffle data over TLS with this identity.
    pub tls: Option<TlsIdentity>,
    /// Trust this CA when connecting to the scheduler and other executors
    /// (and use `https`).
    pub tls_ca: Option<PathBuf>,
    pub target_partitions: Option<usize>,
}

/// A registered executor polling its scheduler for tasks.
pub struct RunningExecutor {
    pub id: String,
    pub address: SocketAddr,
    slots: usize,
    free_slots: Arc<Semaphore>,
    scheduler: SchedulerGrpcClient<
        tonic::service::interceptor::InterceptedService<Channel, TokenInterceptor>,
    >,
    polling: tokio::task::JoinHandle<std::result::Result<(), ballista_core::error::BallistaError>>,
    ticker: tokio::task::JoinHandle<()>,
    stop_flight: Option<oneshot::Sender<()>>,
    _work_dir: Option<tempfile::TempDir>,
}

impl RunningExecutor {
    /// Resolves when the poll loop ends (the scheduler went away for good or
    /// refused this executor).
    pub async fn wait(&mut self) -> Result<()> {
        match (&mut self.polling).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DataFusionError::Execution(format!("executor stopped: {e}"))),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    /// Graceful stop: takes every slot so no new task starts, waits up to
    /// `grace` for running tasks to finish and report, then tells the
    /// scheduler this executor is gone.
    pub async fn shutdown(mut self, grace: Duration) {
        let drained = tokio::time::timeout(
            grace,
            Arc::clone(&self.free_slots).acquire_many_owned(self.slots as u32),
        )
        .await;
        // Finished tasks are reported on the next poll; give it one round.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.polling.abort();
        let _ = self
            .scheduler
            .executor_stopped(ExecutorStoppedParams {
                executor_id: self.id.clone(),
                reason: if drained.is_ok() {
                    "executor shut down".to_string()
                } else {
                    "executor shut down with tasks still running".to_string()
                },
            })
            .await;
        if let Some(stop) = self.stop_flight.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for RunningExecutor {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Ballista's stage execution, minus per-operator metrics in task reports.
///
/// The scheduler restricts each task's plan to its partitions; when a task
/// gets a slice in which one side of a `UNION ALL` has no partitions, its plan
/// has a different number of operators than the stage's, the scheduler
/// rejects the task's metrics ("task metrics array size ... does not equal
/// the stage metrics array size"), drops its status update and the job never
/// finishes (`SELECT ... FROM t UNION ALL SELECT 1` hangs on executors with
/// one slot). Reports without operator metrics are accepted as they are.
/// Each task's stage executor also wakes the poll loop when the task is done
/// ([`handoff::WakeOnDrop`]).
struct StageEngine {
    inner: DefaultExecutionEngine,
    poll_now: Arc<Notify>,
}

impl ExecutionEngine for StageEngine {
    fn create_query_stage_exec(
        &self,
        job_id: ballista_core::JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let inner = self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(WithoutOperatorMetrics {
            inner,
            _wake: WakeOnDrop(Arc::clone(&self.poll_now)),
        }))
    }
}

#[derive(Debug)]
struct WithoutOperatorMetrics {
    inner: Arc<dyn QueryStageExecutor>,
    _wake: WakeOnDrop,
}

impl std::fmt::Display for WithoutOperatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for WithoutOperatorMetrics {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> Result<Vec<ballista_core::serde::protobuf::ShuffleWritePartition>> {
        self.inner.execute_query_stage(task_id, context).await
    }

    fn collect_plan_metrics(&self) -> Vec<datafusion::physical_plan::metrics::MetricsSet> {
        vec![]
    }

    fn collect_runtime_stats_reports(
        &self,
    ) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(
        &self,
    ) -> Result<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<ballista_core::serde::protobuf::TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}

/// Adds the token (if any) to every call an executor makes to its scheduler.
#[derive(Clone)]
pub struct TokenInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl TokenInterceptor {
    fn new(token: Option<&str>) -> Result<Self> {
        token
            .map(|t| {
                t.parse().map_err(|_| {
                    DataFusionError::Configuration(
                        "the Kiln token must be printable ASCII".to_string(),
                    )
                })
            })
            .transpose()
            .map(Self)
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(TOKEN_HEADER, value.clone());
        }
        Ok(request)
    }
}

/// Starts an executor serving shuffle data on `listener` and polling the
/// scheduler.
pub async fn start_executor(
    listener: TcpListener,
    options: &ExecutorOptions,
) -> Result<RunningExecutor> {
    let mut config = kiln_session_config(options.target_partitions);
    if let Some(ca) = &options.tls_ca {
        config = client_tls(config, ca)?;
    }
    let state = kiln_state(config.clone(), &options.lake)?;
    let scheduler_url = with_scheme(&options.scheduler_url, options.tls_ca.is_some());
    let logical = config.ballista_logical_extension_codec();
    let physical = config.ballista_physical_extension_codec();
    // Task definitions carry their plan, constants included (a folded
    // `range(0, 1000000)` is 8 MB): the executor must accept messages as large
    // as the scheduler may send, or its polls fail and the job never ends.
    let max_message = config.ballista_grpc_client_max_message_size();
    let scheduler = SchedulerGrpcClient::with_interceptor(
        connect(&scheduler_url, options.tls_ca.as_deref()).await?,
        TokenInterceptor::new(options.token.as_deref())?,
    )
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    check_access(scheduler.clone(), &scheduler_url).await?;

    let (work_dir, temp_dir) = match &options.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                DataFusionError::Configuration(format!(
                    "cannot create executor work dir {}: {e}",
                    dir.display()
                ))
            })?;
            (dir.display().to_string(), None)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("kiln-executor-")
                .tempdir()?;
            (dir.path().display().to_string(), Some(dir))
        }
    };
    let address = listener.local_addr()?;
    let id = ballista_core::ids::new_instance_id();
    let registration = ExecutorRegistration {
        id: id.clone(),
        host: Some(options.advertise_host.clone()),
        port: address.port() as u32,
        grpc_port: 0,
        specification: Some(
            ExecutorSpecification::default()
                .with_vcores(options.slots as u32)
                .into(),
        ),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
    };
    let runtime = match options.memory_limit {
        Some(bytes) => RuntimeEnvBuilder::new()
            .with_memory_limit(bytes, 1.0)
            .build_arc()?,
        None => Arc::new(RuntimeEnv::default()),
    };
    let executor_config = config.upgrade_for_ballista();
    let poll_now = Arc::new(Notify::new());
    let executor = Arc::new(Executor::new(
        registration,
        &work_dir,
        Arc::new(move |config: &SessionConfig| task_runtime(&runtime, config)) as RuntimeProducer,
        Arc::new(move || executor_config.clone()) as ConfigProducer,
        Arc::new((&state).into()),
        Arc::new(LoggingMetricsCollector::default()),
        options.slots,
        Arc::new(StageEngine {
            inner: DefaultExecutionEngine::new(),
            poll_now: Arc::clone(&poll_now),
        }),
    ));

    let health = ExecutorHealth::default();
    let ready = health.clone();
    let mut routes = RoutesBuilder::default();
    routes.add_service(
        FlightServiceServer::new(BallistaFlightService::new(work_dir))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
    );
    let router = routes.routes().into_axum_router().route(
        "/health",
        axum::routing::get(move || {
            let ready = ready.is_ready();
            async move {
                if ready {
                    (axum::http::StatusCode::OK, "ok\n")
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "not registered with the scheduler yet\n",
                    )
                }
            }
        }),
    );
    let (stop_flight, _) = serve(listener, router, None, options.tls.as_ref())?;

    let free_slots = Arc::new(Semaphore::new(options.slots.max(1)));
    let polling = tokio::spawn(poll_loop(
        scheduler.clone(),
        executor,
        BallistaCodec::<LogicalPlanNode, PhysicalPlanNode>::new(logical, physical),
        Some(Arc::clone(&poll_now)),
        Some(Arc::clone(&free_slots)),
        health,
    ));
    let ticker = handoff::poll_ticker(poll_now);
    Ok(RunningExecutor {
        id,
        address,
        slots: options.slots.max(1),
        free_slots,
        scheduler,
        polling,
        ticker,
        stop_flight: Some(stop_flight),
        _work_dir: temp_dir,
    })
}

/// Connects to the scheduler at `url` once and checks that it accepts
/// `token`: a client learns at connect time, not at its first job, that the
/// address or the token is wrong.
pub async fn probe_scheduler(url: &str, token: Option<&str>, tls_ca: Option<&Path>) -> Result<()> {
    let endpoint = endpoint(url, tls_ca)?.connect_timeout(Duration::from_secs(10));
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = transport_cause(&e);
        let hint = if cause.contains("certificate") {
            "check --tls-ca: it must be the CA that signed the scheduler's certificate, \
             issued for this host name"
        } else {
            "is `kiln scheduler` running there?"
        };
        DataFusionError::Configuration(format!(
            "cannot reach the Kiln scheduler at {url}: {cause}; {hint}"
        ))
    })?;
    let scheduler = SchedulerGrpcClient::with_interceptor(channel, TokenInterceptor::new(token)?);
    check_access(scheduler, url).await
}

fn transport_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    cause
}

/// Fails fast with a clear error when the scheduler refuses this process's
/// token (Ballista's poll loop would retry a refused poll forever).
async fn check_access(
    mut scheduler: SchedulerGrpcClient<
        tonic::service::interceptor::InterceptedService<Channel, TokenInterceptor>,
    >,
    url: &str,
) -> Result<()> {
    let probe = ballista_core::serde::protobuf::GetJobStatusParams {
        job_id: "kiln-access-check".to_string(),
    };
    match scheduler.get_job_status(probe).await {
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err(DataFusionError::Configuration(format!(
                "the Kiln scheduler at {url} refused the connection: {}",
                status.message()
            )))
        }
        // A scheduler answers Ok (or Internal for a job it cannot read); any
        // other failure, or an HTTP/2 protocol error, means the conversation
        // itself failed (e.g. plain text against a TLS port).
        Err(status)
            if status.code() != tonic::Code::Internal
                || status.message().contains("h2 protocol error") =>
        {
            let hint = if url.starts_with("https://") {
                "check that the scheduler serves TLS with a certificate signed by --tls-ca \
                 and issued for this host name"
            } else {
                "if the scheduler serves TLS, pass --tls-ca (KILN_TLS_CA)"
            };
            Err(DataFusionError::Configuration(format!(
                "cannot talk to the Kiln scheduler at {url} ({}); {hint}",
                status.message()
            )))
        }
        _ => Ok(()),
    }
}

fn endpoint(url: &str, tls_ca: Option<&Path>) -> Result<tonic::transport::Endpoint> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| {
            DataFusionError::Configuration(format!("invalid scheduler address {url}: {e}"))
        })?
        .tcp_nodelay(true);
    match tls_ca {
        Some(ca) => endpoint
            .tls_config(client_tls_config(ca)?)
            .map_err(|e| DataFusionError::Configuration(format!("TLS setup for {url}: {e}"))),
        None => Ok(endpoint),
    }
}

async fn connect(url: &str, tls_ca: Option<&Path>) -> Result<Channel> {
    let endpoint = endpoint(url, tls_ca)?;
    let mut last_error = None;
    for _ in 0..150 {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(DataFusionError::Configuration(format!(
        "the Kiln scheduler at {url} did not answer within 15 s: {}",
        last_error.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Parses a byte size: `1073741824`, `512MiB`, `4G`, `2GB` (powers of 1024).
pub fn parse_byte_size(text: &str) -> std::result::Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size; use e.g. 512MiB or 4GiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}'; use KiB, MiB, GiB or TiB"
            ))
        }
    };
    Ok((value * scale as f64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls() {
        assert_eq!(
            scheduler_url("df://10.0.0.1:50050").unwrap(),
            "http://10.0.0.1:50050"
        );
        assert_eq!(scheduler_url("localhost:1").unwrap(), "http://localhost:1");
        for bad in ["df://host", "df://:1", "df://h:port", "df://h:1/x"] {
            assert!(
                scheduler_url(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("df://HOST:PORT"),
                "{bad}"
            );
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("1024").unwrap(), 1024);
        assert_eq!(parse_byte_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_byte_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_byte_size("1.5k").unwrap(), 1536);
        assert!(parse_byte_size("lots").unwrap_err().contains("512MiB"));
        assert!(parse_byte_size("4 parsecs").unwrap_err().contains("unit"));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer a", b"Bearer a"));
        assert!(!constant_time_eq(b"Bearer a", b"Bearer b"));
        assert!(!constant_time_eq(b"Bearer a", b"Bearer ab"));
    }
}
