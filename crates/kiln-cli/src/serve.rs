//! `kiln scheduler` and `kiln executor`: the long-running processes of a
//! cluster. Both stop gracefully on SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;

use kiln_cluster::server::{self as cluster, ExecutorOptions, SchedulerOptions, TlsIdentity};
use kiln_sql::resolve_path;
use tokio::net::TcpListener;

use kiln_cli::args::{ExecutorArgs, GlobalArgs, SchedulerArgs};

use crate::{fail, strip_kind};

pub async fn scheduler(args: SchedulerArgs, global: &GlobalArgs) -> ExitCode {
    let options = SchedulerOptions {
        lake: resolve_path(&global.lake),
        token: global.token(),
        tls: tls_identity(args.tls_cert, args.tls_key),
        flight_sql: args.flight_sql,
        executor_timeout: Duration::from_secs(args.executor_timeout),
        task_max_failures: args.task_max_failures,
        target_partitions: None,
        stages: kiln_sql::Stages::Distributed,
    };
    let listener = match TcpListener::bind(args.bind).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.bind)),
    };
    let running = match cluster::start_scheduler(listener, &options).await {
        Ok(r) => r,
        Err(e) => return fail(strip_kind(&e)),
    };
    println!(
        "kiln scheduler listening on {}{}{}{}",
        running.address,
        if options.tls.is_some() { " (TLS)" } else { "" },
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
        tls: tls_identity(args.tls_cert, args.tls_key),
        tls_ca: global.tls_ca.clone(),
        target_partitions: None,
    };
    let listener = match TcpListener::bind(args.bind).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.bind)),
    };
    let mut running = match cluster::start_executor(listener, &options).await {
        Ok(r) => r,
        Err(e) => return fail(strip_kind(&e)),
    };
    println!(
        "kiln executor {} serving on {} with {slots} slots, scheduler {}",
        running.id,
        running.address,
        cluster::with_scheme(&options.scheduler_url, options.tls_ca.is_some())
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

fn tls_identity(cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsIdentity> {
    Some(TlsIdentity {
        cert: cert?,
        key: key?,
    })
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
