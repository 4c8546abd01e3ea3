//! `kiln scheduler` and `kiln executor`: the long-running processes of a
//! cluster. Both stop gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiln_sql::cluster::{self, ExecutorOptions, SchedulerOptions};
use kiln_sql::resolve_path;
use tokio::net::TcpListener;

use crate::{fail, strip_kind, GlobalArgs};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on for clients, executors, Flight SQL and `GET /health`.
    #[arg(long, default_value = "0.0.0.0:50050", value_name = "HOST:PORT")]
    bind: SocketAddr,
    /// Also serve Arrow Flight SQL (ADBC / JDBC Flight SQL drivers) on the same port.
    #[arg(long)]
    flight_sql: bool,
    /// Seconds without a poll before an executor is declared lost and its tasks rerun.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    executor_timeout: u64,
    /// Attempts per task before its job fails.
    #[arg(long, default_value_t = 4, value_name = "N")]
    task_max_failures: usize,
    /// TLS certificate (PEM). Not supported yet: terminate TLS in front of the scheduler.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to take tasks from.
    #[arg(long, value_name = "HOST:PORT")]
    scheduler: String,
    /// Address to serve shuffle data (Arrow Flight) and `GET /health` on.
    #[arg(long, default_value = "0.0.0.0:50051", value_name = "HOST:PORT")]
    bind: SocketAddr,
    /// Host name other executors and clients use to reach this one
    /// [default: the --bind host, or this machine's host name for 0.0.0.0].
    #[arg(long, value_name = "HOST")]
    advertise_host: Option<String>,
    /// Concurrent tasks [default: the number of cores].
    #[arg(long, value_name = "N")]
    slots: Option<usize>,
    /// Directory for shuffle files [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Memory for query operators (e.g. 4GiB); spilling operators spill beyond it.
    #[arg(long, value_name = "SIZE", value_parser = cluster::parse_byte_size)]
    memory_limit: Option<usize>,
    /// Seconds to let running tasks finish on SIGTERM.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    shutdown_grace: u64,
}

pub async fn scheduler(args: SchedulerArgs, global: &GlobalArgs) -> ExitCode {
    if args.tls_cert.is_some() {
        return fail(
            "TLS on the scheduler is not supported yet; terminate TLS in a proxy in front \
             of it (see deploy/README.md) or run on a private network"
                .to_string(),
        );
    }
    let options = SchedulerOptions {
        lake: resolve_path(&global.lake),
        token: global.token(),
        flight_sql: args.flight_sql,
        executor_timeout: Duration::from_secs(args.executor_timeout),
        task_max_failures: args.task_max_failures,
        target_partitions: None,
    };
    let listener = match TcpListener::bind(args.bind).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.bind)),
    };
    let running = match cluster::start_scheduler(listener, &options, None).await {
        Ok(r) => r,
        Err(e) => return fail(strip_kind(&e)),
    };
    println!(
        "kiln scheduler listening on {}{}{}",
        running.address,
        if options.flight_sql {
            " (Flight SQL enabled)"
        } else {
            ""
        },
        if options.token.is_some() {
            " (token required)"
        } else {
            ""
        }
    );
    if options.token.is_none() {
        eprintln!(
            "warning: no --token / KILN_TOKEN: anyone who can reach {} can run jobs",
            running.address
        );
    }
    let reason = stop_signal().await;
    println!("kiln scheduler stopping ({reason})");
    match running.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(strip_kind(&e)),
    }
}

pub async fn executor(args: ExecutorArgs, global: &GlobalArgs) -> ExitCode {
    let scheduler_url = match cluster::scheduler_url(&args.scheduler) {
        Ok(url) => url,
        Err(e) => return fail(format!("--scheduler: {}", strip_kind(&e))),
    };
    let advertise_host = args.advertise_host.unwrap_or_else(|| {
        if args.bind.ip().is_unspecified() {
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string())
        } else {
            args.bind.ip().to_string()
        }
    });
    let slots = args.slots.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if slots == 0 {
        return fail("--slots must be at least 1".to_string());
    }
    let options = ExecutorOptions {
        lake: resolve_path(&global.lake),
        scheduler_url,
        advertise_host,
        slots,
        work_dir: args.work_dir,
        memory_limit: args.memory_limit,
        token: global.token(),
        target_partitions: None,
    };
    let listener = match TcpListener::bind(args.bind).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.bind)),
    };
    let mut running = match cluster::start_executor(listener, &options, None).await {
        Ok(r) => r,
        Err(e) => return fail(strip_kind(&e)),
    };
    println!(
        "kiln executor {} serving on {} with {slots} slots, scheduler {}",
        running.id, running.address, options.scheduler_url
    );
    tokio::select! {
        reason = stop_signal() => {
            println!("kiln executor stopping ({reason}); letting running tasks finish");
            running.shutdown(Duration::from_secs(args.shutdown_grace)).await;
            ExitCode::SUCCESS
        }
        ended = running.wait() => match ended {
            Ok(()) => fail("the executor's connection to the scheduler ended".to_string()),
            Err(e) => fail(strip_kind(&e)),
        },
    }
}

async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return "interrupt";
                }
            };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "interrupt",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}
