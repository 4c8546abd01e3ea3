//! The `kiln` command: SQL over a data lake, executed on Ballista.
//!
//! `kiln sql` runs one-shot statements or an interactive REPL; `kiln run`
//! runs a SQL script with `${param}` substitution; `kiln jobs` and `kiln
//! schedule` run nightly jobs; `kiln scheduler` and `kiln executor` run the
//! processes of a cluster. Exit code 0 means every
//! statement succeeded; 1 means a statement (or the setup) failed; 2 means the
//! command line was invalid.

mod jobs;
mod output;
mod repl;
mod serve;

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use clap::Parser;
use kiln_sql::parse::script::substitute_params;
use kiln_sql::{resolve_path, KilnSession, SessionOptions};

use kiln_cli::args::{Cli, Command};

use crate::output::Printer;

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Ballista's embedded scheduler and executor run as background tasks; do
    // not wait for them on the way out.
    runtime.shutdown_background();
    code
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off"))
        .format_timestamp_millis()
        .init();
    if std::env::var_os("KILN_DEBUG").is_none() {
        // Panics are caught per statement and reported as errors; keep the
        // raw panic text out of the user's terminal unless debugging.
        std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    }
}

async fn run(cli: Cli) -> ExitCode {
    let mut options = SessionOptions::new(resolve_path(&cli.global.lake));
    options.cluster = cli.global.cluster.clone();
    options.progress = !cli.global.quiet;
    options.token = cli.global.token();
    options.tls_ca = cli.global.tls_ca.clone();
    options.allowed_paths = cli.global.allow_paths.clone();
    match cli.command {
        Command::Scheduler(args) => serve::scheduler(args, &cli.global).await,
        Command::Jobs { dir, command } => {
            jobs::jobs(&dir, command, options, cli.global.quiet).await
        }
        Command::Schedule(args) => jobs::schedule(args, options, cli.global.quiet).await,
        Command::Executor(args) => serve::executor(args, &cli.global).await,
        Command::Sql {
            command,
            file,
            format,
        } => {
            let printer = Printer::new(format, cli.global.quiet);
            let script = match (command, file) {
                (Some(sql), _) => Some(sql),
                (None, Some(path)) => match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text),
                    Err(e) => return fail(format!("cannot read '{}': {e}", path.display())),
                },
                (None, None) if std::io::stdin().is_terminal() => None,
                (None, None) => {
                    let mut text = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                        return fail(format!("cannot read SQL from stdin: {e}"));
                    }
                    Some(text)
                }
            };
            let session = match open(options, &printer).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            match script {
                Some(script) => run_script(&session, &script, &printer).await,
                None => repl::run(&session, &printer).await,
            }
        }
        Command::Run {
            file,
            params,
            format,
        } => {
            let printer = Printer::new(format, cli.global.quiet);
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => return fail(format!("cannot read script '{}': {e}", file.display())),
            };
            let params: HashMap<String, String> = params.into_iter().collect();
            let script = match substitute_params(&text, &params) {
                Ok(s) => s,
                Err(e) => return fail(format!("{}: {}", file.display(), strip_kind(&e))),
            };
            let session = match open(options, &printer).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            run_script(&session, &script, &printer).await
        }
    }
}

async fn open(options: SessionOptions, printer: &Printer) -> Result<KilnSession, ExitCode> {
    match kiln_cluster::open(options).await {
        Ok(session) => {
            for warning in session.take_warnings() {
                printer.warn(&warning);
            }
            Ok(session)
        }
        Err(e) => Err(fail(strip_kind(&e))),
    }
}

async fn run_script(session: &KilnSession, script: &str, printer: &Printer) -> ExitCode {
    let outcome = session
        .execute_script(script, |_, result| {
            printer.print(&result);
            for warning in session.take_warnings() {
                printer.warn(&warning);
            }
        })
        .await;
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(format!(
            "statement at line {} failed: {}\n  statement: {}",
            e.line,
            strip_kind(&e.error),
            e.statement.lines().next().unwrap_or_default()
        )),
    }
}

/// DataFusion prefixes errors with their kind ("Error during planning: ");
/// users need the message, the kind is noise. Internal errors keep their
/// "please report" text.
pub fn strip_kind(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "External error: ",
        "Invalid or Unsupported Configuration: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

fn fail_display(e: impl std::fmt::Display) -> ExitCode {
    fail(e.to_string())
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
