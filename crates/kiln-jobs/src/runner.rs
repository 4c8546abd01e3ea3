//! One run of a job: built-in parameters, attempts with a timeout, retries
//! with exponential backoff, a history record per attempt, and the failure
//! hooks.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};

use crate::history::{host_name, History, RunRecord, RunStatus, Trigger};
use crate::schedule::Clock;
use crate::spec::JobSpec;

/// What a successful attempt reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptReport {
    pub rows_written: u64,
}

/// The built-in parameters of a run.
pub fn builtin_params(
    job: &str,
    run_date: NaiveDate,
    run_id: &str,
    attempt: u32,
) -> BTreeMap<String, String> {
    let day = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    BTreeMap::from([
        ("run_date".to_string(), run_date.to_string()),
        (
            "run_date_nodash".to_string(),
            run_date.format("%Y%m%d").to_string(),
        ),
        (
            "prev_date".to_string(),
            day(run_date.checked_sub_days(Days::new(1))),
        ),
        (
            "next_date".to_string(),
            day(run_date.checked_add_days(Days::new(1))),
        ),
        ("run_id".to_string(), run_id.to_string()),
        ("job".to_string(), job.to_string()),
        ("attempt".to_string(), attempt.to_string()),
    ])
}

/// The wait before retry number `retry` (1-based): backoff, 2×, 4×, ...
pub fn backoff(base: Duration, retry: u32) -> Duration {
    base.saturating_mul(1u32 << retry.saturating_sub(1).min(16))
}

/// Runs `spec` for `run_date`: up to `retries + 1` attempts, each given the
/// run's parameters and bounded by the job's timeout. Every attempt is
/// recorded in `history` when it starts and when it ends. Returns the last
/// attempt's record; on failure the job's hooks have run.
pub async fn run_job<C, F, Fut>(
    history: &History,
    spec: &JobSpec,
    run_date: NaiveDate,
    trigger: Trigger,
    overrides: &BTreeMap<String, String>,
    clock: &C,
    mut attempt_fn: F,
) -> RunRecord
where
    C: Clock,
    F: FnMut(BTreeMap<String, String>) -> Fut,
    Fut: Future<Output = Result<AttemptReport, String>>,
{
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let max_attempts = spec.retries + 1;
    let host = host_name();
    let mut attempt = 1;
    loop {
        let params = spec.run_params(
            overrides,
            &builtin_params(&spec.name, run_date, &run_id, attempt),
        );
        let mut record = RunRecord {
            run_id: run_id.clone(),
            job: spec.name.clone(),
            run_date,
            attempt,
            max_attempts,
            trigger,
            status: RunStatus::Running,
            started_at: clock.now(),
            ended_at: None,
            rows_written: None,
            error: None,
            params: serde_json::to_string(&params).expect("params serialize"),
            host: host.clone(),
            pid: std::process::id(),
        };
        write_record(history, &record);
        let outcome = match spec.timeout {
            Some(limit) => match tokio::time::timeout(limit, attempt_fn(params)).await {
                Ok(outcome) => outcome.map_err(|e| (RunStatus::Failed, e)),
                Err(_) => Err((
                    RunStatus::TimedOut,
                    format!(
                        "timed out after {} (the job's timeout)",
                        humantime::format_duration(limit)
                    ),
                )),
            },
            None => attempt_fn(params).await.map_err(|e| (RunStatus::Failed, e)),
        };
        record.ended_at = Some(clock.now());
        match outcome {
            Ok(report) => {
                record.status = RunStatus::Succeeded;
                record.rows_written = Some(report.rows_written);
            }
            Err((status, error)) => {
                record.status = status;
                record.error = Some(error);
            }
        }
        write_record(history, &record);
        if record.status == RunStatus::Succeeded || attempt >= max_attempts {
            if record.status != RunStatus::Succeeded {
                run_failure_hooks(spec, &record).await;
            }
            return record;
        }
        let wait = backoff(spec.retry_backoff, attempt);
        log::warn!(
            "{} {} attempt {attempt}/{max_attempts} {}: {}; retrying in {}",
            spec.name,
            run_date,
            record.status.as_str(),
            record.error.as_deref().unwrap_or_default(),
            humantime::format_duration(wait)
        );
        let until = clock.now()
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::days(1));
        clock.sleep_until(until).await;
        attempt += 1;
    }
}

fn write_record(history: &History, record: &RunRecord) {
    if let Err(e) = history.write(record) {
        log::error!("could not record the run of {}: {e}", record.job);
    }
}

/// Runs the job's `on_failure` command (the record as JSON on stdin, and
/// `KILN_JOB`, `KILN_RUN_DATE`, `KILN_RUN_STATUS`, `KILN_RUN_ERROR` in its
/// environment) and POSTs the record to `on_failure_webhook`. A failing hook
/// is logged, never fatal: the run has failed already.
pub async fn run_failure_hooks(spec: &JobSpec, record: &RunRecord) {
    let json = serde_json::to_string(record).expect("records serialize");
    if let Some(command) = &spec.on_failure {
        if let Err(e) = run_command_hook(command, record, &json).await {
            log::error!("{}: on_failure command failed: {e}", spec.name);
            eprintln!("warning: job {}: on_failure command failed: {e}", spec.name);
        }
    }
    if let Some(url) = spec.on_failure_webhook.clone() {
        let body = json.clone();
        let posted = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body)
                .map(|_| ())
                .map_err(|e| format!("POST {url}: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = posted {
            log::error!("{}: on_failure_webhook failed: {e}", spec.name);
            eprintln!("warning: job {}: on_failure_webhook failed: {e}", spec.name);
        }
    }
}

async fn run_command_hook(command: &str, record: &RunRecord, json: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("KILN_JOB", &record.job)
        .env("KILN_RUN_DATE", record.run_date.to_string())
        .env("KILN_RUN_ID", &record.run_id)
        .env("KILN_RUN_STATUS", record.status.as_str())
        .env(
            "KILN_RUN_ERROR",
            record.error.as_deref().unwrap_or_default(),
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start '{command}': {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes()).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| format!("'{command}' ran longer than 60 s"))?
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("'{command}' exited with {status}"))
    }
}

/// Every date from `from` to `to`, inclusive.
pub fn date_range(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// Today in UTC, the default `--date` of a manual run.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(value: &str) -> crate::Result<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| crate::JobError::InvalidDate {
        value: value.to_string(),
    })
}
