//! The `kiln` command line, as clap definitions: the binary parses with
//! them, and tests check the command lines in `deploy/` against them.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};
use kiln_cluster::parse_byte_size;
use kiln_sql::parse::script::parse_param;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "SQL over a data lake, executed on Ballista"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The lake directory: tables and Kiln's metadata (`_kiln/`).
    #[arg(
        long,
        global = true,
        env = "KILN_LAKE",
        default_value = "./lake",
        value_name = "DIR"
    )]
    pub lake: PathBuf,
    /// Submit to a Ballista cluster instead of the embedded one.
    #[arg(long, global = true, value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
    /// Print only query results (no status lines).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// The cluster's shared secret (scheduler: required from clients and
    /// executors; clients and executors: sent to the scheduler).
    #[arg(
        long,
        global = true,
        env = "KILN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A directory external tables may read besides the lake (repeatable).
    /// Without any, external tables may read anywhere on the embedded
    /// cluster, and only the lake with --cluster.
    #[arg(
        long = "allow-path",
        global = true,
        env = "KILN_ALLOWED_PATHS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub allow_paths: Vec<PathBuf>,
    /// PEM CA certificate to trust: connect to the cluster over TLS
    /// (clients and executors).
    #[arg(long, global = true, env = "KILN_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl GlobalArgs {
    /// The token, if set and not empty (`KILN_TOKEN=` means none).
    pub fn token(&self) -> Option<String> {
        self.token.clone().filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL: one-shot with -c or -f, from stdin, or an interactive REPL.
    Sql {
        /// SQL to run (statements separated by `;`).
        #[arg(
            short = 'c',
            long = "command",
            value_name = "SQL",
            conflicts_with = "file"
        )]
        command: Option<String>,
        /// A file of SQL statements to run.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// How query results are printed.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Run a SQL script, substituting `${key}` parameters; stops at the first failing statement.
    Run {
        /// The script.
        file: PathBuf,
        /// A parameter for `${key}` in the script (repeatable).
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// How query results are printed.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Nightly jobs: list them, run one for a date, backfill a range, show run history.
    Jobs {
        /// The jobs folder: one `.sql` file per job.
        #[arg(
            long = "jobs",
            global = true,
            env = "KILN_JOBS",
            default_value = "sql/jobs",
            value_name = "DIR"
        )]
        dir: PathBuf,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Run the jobs scheduler: fires each job of a folder on its cron schedule until stopped.
    Schedule(ScheduleArgs),
    /// Run a cluster scheduler (clients connect with --cluster df://HOST:PORT).
    Scheduler(SchedulerArgs),
    /// Run a cluster executor that takes tasks from a scheduler.
    Executor(ExecutorArgs),
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The jobs of the folder: schedule, next run, dependencies, parameters.
    List,
    /// Run a job (after any dependency that has not succeeded for the date).
    Run {
        /// The job (its file name without `.sql`).
        name: String,
        #[command(flatten)]
        run: JobRunArgs,
        /// The run date, `${run_date}` in the SQL [default: for a scheduled job, the date
        /// of its latest scheduled run (the 02:00 run of a daily job processes yesterday);
        /// otherwise today (UTC)].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<NaiveDate>,
    },
    /// Run a job for every date of a range, oldest first; stops at the first failure.
    Backfill {
        /// The job.
        name: String,
        #[command(flatten)]
        run: JobRunArgs,
        /// The first date.
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        from: NaiveDate,
        /// The last date (inclusive).
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        to: NaiveDate,
    },
    /// Recent runs (one row per attempt), newest first.
    History {
        /// Only this job's runs.
        name: Option<String>,
        /// How many attempts to show.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// How the history is printed.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

#[derive(Debug, Args)]
pub struct JobRunArgs {
    /// Override a parameter the job declares (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Run only this job, not its dependencies.
    #[arg(long)]
    pub no_deps: bool,
    /// How query results of the job are printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The jobs folder.
    #[arg(
        long = "jobs",
        env = "KILN_JOBS",
        default_value = "sql/jobs",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
    /// Seconds to let running jobs finish after SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub shutdown_grace: u64,
    /// Run as if the clock read this time now (RFC 3339), at normal speed; for tests and dry runs.
    #[arg(long, hide = true, value_name = "TIME", value_parser = parse_time)]
    pub start_clock_at: Option<DateTime<Utc>>,
}

fn parse_date(value: &str) -> Result<NaiveDate, String> {
    kiln_jobs::parse_date(value).map_err(|e| e.to_string())
}

fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("invalid time '{value}' ({e}); write e.g. 2026-11-02T01:59:58Z"))
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on for clients, executors, Flight SQL and `GET /health`.
    #[arg(long, default_value = "0.0.0.0:50050", value_name = "HOST:PORT")]
    pub bind: SocketAddr,
    /// Also serve Arrow Flight SQL (ADBC / JDBC Flight SQL drivers) on the same port.
    #[arg(long)]
    pub flight_sql: bool,
    /// Seconds without a poll before an executor is declared lost and its tasks rerun.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub executor_timeout: u64,
    /// Attempts per task before its job fails.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub task_max_failures: usize,
    /// Serve TLS with this PEM certificate (chain); clients then need --tls-ca.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to take tasks from.
    #[arg(long, value_name = "HOST:PORT")]
    pub scheduler: String,
    /// Address to serve shuffle data (Arrow Flight) and `GET /health` on.
    #[arg(long, default_value = "0.0.0.0:50051", value_name = "HOST:PORT")]
    pub bind: SocketAddr,
    /// Host name other executors and clients use to reach this one
    /// [default: the --bind host, or this machine's host name for 0.0.0.0].
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Concurrent tasks [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub slots: Option<usize>,
    /// Directory for shuffle files [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Memory for query operators (e.g. 4GiB); spilling operators spill beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    pub memory_limit: Option<usize>,
    /// Serve shuffle data over TLS with this PEM certificate (chain).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds to let running tasks finish on SIGTERM.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub shutdown_grace: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}
