//! `kiln jobs ...` and `kiln schedule`: runs job files through a Kiln session
//! with `kiln-jobs` doing the bookkeeping (history, retries, locks, cron).
//!
//! Exit codes, for cron and systemd: 0 the run succeeded; 1 it failed (after
//! its retries); 2 the command line or a job file is invalid; 75 (EX_TEMPFAIL)
//! another run of the job is active.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use kiln_cli::args::{JobRunArgs, JobsCommand, OutputFormat, ScheduleArgs};
use kiln_jobs::{
    date_range, host_name, run_job, run_scheduler, today, AttemptReport, DueRun, History, JobError,
    JobSet, JobSpec, RunFuture, RunLock, RunStatus, SystemClock, Trigger, BUILT_IN_PARAMS,
};
use kiln_sql::parse::script::substitute_params;
use kiln_sql::{KilnSession, SessionOptions};

use crate::output::Printer;
use crate::strip_kind;

const EXIT_INVALID: u8 = 2;
const EXIT_BUSY: u8 = 75;

fn invalid(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_INVALID)
}

/// `kiln jobs <command>`.
pub async fn jobs(
    dir: &Path,
    command: JobsCommand,
    options: SessionOptions,
    quiet: bool,
) -> ExitCode {
    let jobs = match JobSet::load(dir) {
        Ok(jobs) => jobs,
        Err(e) => return invalid(e),
    };
    match command {
        JobsCommand::List => {
            list(&jobs);
            ExitCode::SUCCESS
        }
        JobsCommand::Run { name, run, date } => {
            let date = match (date, jobs.get(&name)) {
                (Some(date), _) => date,
                (None, Ok(spec)) => default_run_date(spec),
                (None, Err(e)) => return invalid(e),
            };
            let runner = match Runner::for_job(jobs, &name, &run, options, quiet).await {
                Ok(r) => r,
                Err(code) => return code,
            };
            runner.run(&name, date, Trigger::Manual).await
        }
        JobsCommand::Backfill {
            name,
            run,
            from,
            to,
        } => {
            if from > to {
                return invalid(format!("--from {from} is after --to {to}"));
            }
            let runner = match Runner::for_job(jobs, &name, &run, options, quiet).await {
                Ok(r) => r,
                Err(code) => return code,
            };
            let dates = date_range(from, to);
            for (i, date) in dates.iter().enumerate() {
                if !quiet {
                    eprintln!("backfill {name}: {date} ({}/{})", i + 1, dates.len());
                }
                let code = runner.run(&name, *date, Trigger::Backfill).await;
                if code != ExitCode::SUCCESS {
                    eprintln!(
                        "error: backfill of {name} stopped at {date}; later dates were not run"
                    );
                    return code;
                }
            }
            ExitCode::SUCCESS
        }
        JobsCommand::History {
            name,
            limit,
            format,
        } => history(&jobs, options, name, limit, format, quiet).await,
    }
}

/// The date a run started now processes: for a scheduled job, that of the
/// schedule's latest fire time (what `kiln schedule` would have run, so a
/// cron line or timer at the same time agrees); otherwise today (UTC).
fn default_run_date(spec: &JobSpec) -> NaiveDate {
    let now = Utc::now();
    spec.schedule
        .as_ref()
        .and_then(|s| s.previous_before(now + chrono::Duration::seconds(1)))
        .map(|fire| spec.schedule.as_ref().expect("checked").run_date(fire))
        .unwrap_or_else(today)
}

fn list(jobs: &JobSet) {
    let now = Utc::now();
    let mut rows = vec![[
        "job".to_string(),
        "schedule".to_string(),
        "next run (UTC)".to_string(),
        "depends on".to_string(),
        "parameters".to_string(),
    ]];
    for spec in jobs.iter() {
        let (schedule, next) = match &spec.schedule {
            Some(s) => (
                format!("{} ({})", s.expression(), s.zone()),
                s.next_after(now)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let params: Vec<String> = spec
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        rows.push([
            spec.name.clone(),
            schedule,
            next,
            spec.depends_on.join(", "),
            params.join(" "),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

async fn history(
    jobs: &JobSet,
    options: SessionOptions,
    name: Option<String>,
    limit: usize,
    format: OutputFormat,
    quiet: bool,
) -> ExitCode {
    if let Some(name) = &name {
        if let Err(e) = jobs.get(name) {
            return invalid(e);
        }
    }
    if let Ok(history) = History::of_lake(&options.lake) {
        let _ = history.mark_abandoned(&host_name());
    }
    let session = match kiln_cluster::open(options).await {
        Ok(s) => s,
        Err(e) => return crate::fail(strip_kind(&e)),
    };
    let filter = name
        .map(|n| format!("WHERE job = '{}'", n.replace('\'', "''")))
        .unwrap_or_default();
    let sql = format!(
        "SELECT job, run_date, attempt, status, \"trigger\", started_at, ended_at, rows_written, error \
         FROM kiln.job_runs {filter} ORDER BY started_at DESC, attempt DESC LIMIT {limit}"
    );
    match session.execute(&sql).await {
        Ok(result) => {
            Printer::new(format, quiet).print(&result);
            ExitCode::SUCCESS
        }
        Err(e) => crate::fail(strip_kind(&e)),
    }
}

/// Runs jobs of one folder through one session.
struct Runner {
    jobs: JobSet,
    session: KilnSession,
    history: History,
    overrides: BTreeMap<String, String>,
    no_deps: bool,
    format: OutputFormat,
    quiet: bool,
}

impl Runner {
    /// A runner for `name` (and its dependencies unless `--no-deps`), once
    /// their parameters check out.
    async fn for_job(
        jobs: JobSet,
        name: &str,
        args: &JobRunArgs,
        options: SessionOptions,
        quiet: bool,
    ) -> Result<Self, ExitCode> {
        let order = jobs.order(name).map_err(invalid)?;
        let order: Vec<&JobSpec> = if args.no_deps {
            order.into_iter().filter(|s| s.name == name).collect()
        } else {
            order
        };
        let overrides: BTreeMap<String, String> = args.params.iter().cloned().collect();
        check_params(&order, &overrides).map_err(invalid)?;
        Self::new(jobs, args, options, quiet).await
    }

    async fn new(
        jobs: JobSet,
        args: &JobRunArgs,
        options: SessionOptions,
        quiet: bool,
    ) -> Result<Self, ExitCode> {
        let overrides: BTreeMap<String, String> = args.params.iter().cloned().collect();
        let history = History::of_lake(&options.lake).map_err(crate::fail_display)?;
        let _ = history.mark_abandoned(&host_name());
        let session = kiln_cluster::open(options)
            .await
            .map_err(|e| crate::fail(strip_kind(&e)))?;
        for warning in session.take_warnings() {
            eprintln!("warning: {warning}");
        }
        Ok(Self {
            jobs,
            session,
            history,
            overrides,
            no_deps: args.no_deps,
            format: args.format,
            quiet,
        })
    }

    /// Runs `name` for `date`, after its dependencies that have not
    /// succeeded for that date.
    async fn run(&self, name: &str, date: NaiveDate, trigger: Trigger) -> ExitCode {
        let order = match self.jobs.order(name) {
            Ok(order) => order,
            Err(e) => return invalid(e),
        };
        for spec in order {
            let is_target = spec.name == name;
            if !is_target {
                if self.no_deps {
                    continue;
                }
                match self.history.succeeded(&spec.name, date) {
                    Ok(true) => {
                        if !self.quiet {
                            eprintln!(
                                "{}: dependency {} already succeeded for {date}",
                                name, spec.name
                            );
                        }
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => return crate::fail_display(e),
                }
            }
            let trigger = if is_target {
                trigger
            } else {
                Trigger::Dependency
            };
            let code = self.run_one(spec, date, trigger).await;
            if code != ExitCode::SUCCESS {
                if !is_target {
                    eprintln!(
                        "error: {name} was not run for {date}: its dependency {} failed",
                        spec.name
                    );
                }
                return code;
            }
        }
        ExitCode::SUCCESS
    }

    async fn run_one(&self, spec: &JobSpec, date: NaiveDate, trigger: Trigger) -> ExitCode {
        let _lock = match RunLock::acquire(self.session.lake().root(), &spec.name) {
            Ok(lock) => lock,
            Err(e @ JobError::AlreadyRunning { .. }) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_BUSY);
            }
            Err(e) => return crate::fail_display(e),
        };
        let clock = SystemClock::default();
        let printer = Printer::new(self.format, self.quiet);
        let record = run_job(
            &self.history,
            spec,
            date,
            trigger,
            &self.overrides,
            &clock,
            |params| {
                if !self.quiet {
                    eprintln!(
                        "job {} for {date}: attempt {}/{}",
                        spec.name,
                        params["attempt"],
                        spec.retries + 1
                    );
                }
                execute_job(&self.session, spec, params, &printer)
            },
        )
        .await;
        match record.status {
            RunStatus::Succeeded => {
                if !self.quiet {
                    eprintln!(
                        "job {} for {date} succeeded ({} rows written)",
                        spec.name,
                        record.rows_written.unwrap_or(0)
                    );
                }
                ExitCode::SUCCESS
            }
            status => crate::fail(format!(
                "job {} for {date} {} after {} attempt(s): {}",
                spec.name,
                status.as_str().replace('_', " "),
                record.attempt,
                record.error.unwrap_or_default()
            )),
        }
    }
}

/// Every override names a parameter some job of the run declares, and every
/// `${name}` in their SQL is a declared or built-in parameter.
fn check_params(order: &[&JobSpec], overrides: &BTreeMap<String, String>) -> Result<(), JobError> {
    for key in overrides.keys() {
        if BUILT_IN_PARAMS.contains(&key.as_str()) {
            return Err(JobError::UnknownParameter {
                name: key.clone(),
                reason: "it is built in; set the run date with --date".to_string(),
            });
        }
        if !order.iter().any(|s| s.params.contains_key(key)) {
            let declared: Vec<String> = order
                .iter()
                .flat_map(|s| s.params.keys().map(move |k| format!("{k} ({})", s.name)))
                .collect();
            return Err(JobError::UnknownParameter {
                name: key.clone(),
                reason: if declared.is_empty() {
                    "the jobs of this run declare no parameters".to_string()
                } else {
                    format!("declared parameters: {}", declared.join(", "))
                },
            });
        }
    }
    for spec in order {
        let mut params: HashMap<String, String> = spec
            .params
            .keys()
            .map(|k| (k.clone(), String::new()))
            .collect();
        params.extend(
            BUILT_IN_PARAMS
                .iter()
                .map(|k| (k.to_string(), String::new())),
        );
        if let Err(e) = substitute_params(&spec.sql, &params) {
            return Err(JobError::UnknownParameter {
                name: String::new(),
                reason: format!(
                    "{}: {}; declare it in the header with '-- param: name = default'",
                    spec.path.display(),
                    strip_kind(&e)
                ),
            });
        }
    }
    Ok(())
}

/// One attempt: the job's SQL with its parameters, statement by statement.
async fn execute_job(
    session: &KilnSession,
    spec: &JobSpec,
    params: BTreeMap<String, String>,
    printer: &Printer,
) -> Result<AttemptReport, String> {
    let params: HashMap<String, String> = params.into_iter().collect();
    let script = substitute_params(&spec.sql, &params).map_err(|e| strip_kind(&e))?;
    let mut rows_written = 0;
    session
        .execute_script(&script, |_, result| {
            rows_written += result.rows_written.unwrap_or(0);
            printer.print(&result);
            for warning in session.take_warnings() {
                printer.warn(&warning);
            }
        })
        .await
        .map_err(|e| {
            format!(
                "{}:{}: {}",
                spec.path.display(),
                e.line,
                strip_kind(&e.error)
            )
        })?;
    Ok(AttemptReport { rows_written })
}

/// `kiln schedule`: fires due jobs until SIGTERM / Ctrl-C.
pub async fn schedule(args: ScheduleArgs, options: SessionOptions, quiet: bool) -> ExitCode {
    let jobs = match JobSet::load(&args.dir) {
        Ok(jobs) => jobs,
        Err(e) => return invalid(e),
    };
    for spec in jobs.iter() {
        if let Err(e) = check_params(&[spec], &BTreeMap::new()) {
            return invalid(e);
        }
    }
    if jobs.iter().all(|s| s.schedule.is_none()) {
        return invalid(format!(
            "no job in {} has a schedule; add '-- schedule: 0 2 * * *' to a job's header",
            args.dir.display()
        ));
    }
    let lake = options.lake.clone();
    let args_run = JobRunArgs {
        params: vec![],
        no_deps: false,
        format: OutputFormat::Table,
    };
    let runner = match Runner::new(jobs.clone(), &args_run, options, quiet).await {
        Ok(r) => Arc::new(r),
        Err(code) => return code,
    };
    let clock = match args.start_clock_at {
        Some(start) => SystemClock::starting_at(start),
        None => SystemClock::default(),
    };
    eprintln!(
        "kiln schedule: {} jobs from {}, clock {}",
        jobs.iter().filter(|s| s.schedule.is_some()).count(),
        args.dir.display(),
        kiln_jobs::Clock::now(&clock).to_rfc3339()
    );
    for spec in jobs.iter() {
        if let Some(s) = &spec.schedule {
            if let Some(next) = s.next_after(kiln_jobs::Clock::now(&clock)) {
                eprintln!(
                    "  {}: next run {} (for {})",
                    spec.name,
                    next.to_rfc3339(),
                    s.run_date(next)
                );
            }
        }
    }
    let grace = std::time::Duration::from_secs(args.shutdown_grace);
    let launch = {
        let runner = Arc::clone(&runner);
        move |due: DueRun| -> RunFuture {
            let runner = Arc::clone(&runner);
            Box::pin(async move {
                eprintln!(
                    "kiln schedule: starting {} for {} (due {})",
                    due.job,
                    due.run_date,
                    due.fire_time.to_rfc3339()
                );
                let code = runner.run(&due.job, due.run_date, Trigger::Schedule).await;
                eprintln!(
                    "kiln schedule: {} for {} finished: {}",
                    due.job,
                    due.run_date,
                    if code == ExitCode::SUCCESS {
                        "succeeded"
                    } else {
                        "failed"
                    }
                );
            })
        }
    };
    // A shifted clock keeps its own memory, so a test or dry run never makes
    // the real scheduler think it fired (or missed) runs.
    let state = lake
        .join("_kiln")
        .join("scheduler")
        .join(if args.start_clock_at.is_some() {
            "state-shifted-clock.json"
        } else {
            "state.json"
        });
    let outcome = run_scheduler(&jobs, state, &clock, shutdown_signal(), launch);
    // The grace period starts at the signal: run_scheduler waits for active
    // runs after it, bounded here.
    let result = tokio::select! {
        r = outcome => r,
        _ = async {
            shutdown_signal().await;
            tokio::time::sleep(grace).await;
        } => {
            eprintln!("kiln schedule: active runs did not finish within {} s; exiting", grace.as_secs());
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => {
            eprintln!("kiln schedule: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => crate::fail_display(e),
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
