//! Run history: one JSON record per attempt under `_kiln/job_runs/` (the
//! `kiln.job_runs` system table reads them), and the lock that keeps a job
//! to one active run across processes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, JobError, Result};

/// How an attempt ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The process died mid-run (found by a later `kiln jobs` or scheduler).
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Killed => "killed",
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Schedule,
    Backfill,
    /// Run first because a job that was started depends on it.
    Dependency,
}

/// One attempt of one run of a job: a row of `kiln.job_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    pub run_date: NaiveDate,
    pub attempt: u32,
    pub max_attempts: u32,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub rows_written: Option<u64>,
    pub error: Option<String>,
    /// The run's parameters, as a JSON object.
    pub params: String,
    pub host: String,
    pub pid: u32,
}

/// The folder of run records.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
}

impl History {
    /// The history of the lake rooted at `lake` (`lake/_kiln/job_runs`).
    pub fn of_lake(lake: &Path) -> Result<Self> {
        Self::open(lake.join("_kiln").join("job_runs"))
    }

    pub fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, record: &RunRecord) -> PathBuf {
        self.dir.join(format!(
            "{}-{}-{}-a{}.json",
            record.job, record.run_date, record.run_id, record.attempt
        ))
    }

    /// Writes (or replaces) an attempt's record atomically: readers see the
    /// old record or the new one, never half of one.
    pub fn write(&self, record: &RunRecord) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("records serialize");
        line.push('\n');
        write_atomically(&self.path_of(record), line.as_bytes())
    }

    /// Every record, oldest first.
    pub fn records(&self) -> Result<Vec<RunRecord>> {
        let mut records = vec![];
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(io_err(&path))?;
            let record: RunRecord =
                serde_json::from_str(text.trim()).map_err(|e| JobError::CorruptRecord {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            records.push(record);
        }
        records.sort_by(|a, b| {
            (a.started_at, a.attempt, &a.run_id).cmp(&(b.started_at, b.attempt, &b.run_id))
        });
        Ok(records)
    }

    /// Whether `job` has a succeeded run for `date`.
    pub fn succeeded(&self, job: &str, date: NaiveDate) -> Result<bool> {
        Ok(self
            .records()?
            .iter()
            .any(|r| r.job == job && r.run_date == date && r.status == RunStatus::Succeeded))
    }

    /// Marks records still "running" whose process on this host is gone as
    /// killed. Returns how many were marked.
    pub fn mark_abandoned(&self, host: &str) -> Result<usize> {
        let mut marked = 0;
        for mut record in self.records()? {
            if record.status == RunStatus::Running
                && record.host == host
                && !process_alive(record.pid)
            {
                record.status = RunStatus::Killed;
                record.error = Some(format!(
                    "process {} ended during the run (killed or crashed)",
                    record.pid
                ));
                self.write(&record)?;
                marked += 1;
            }
        }
        Ok(marked)
    }
}

/// Holds `_kiln/jobs/<job>.lock` for the life of a run; dropping releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

impl RunLock {
    pub fn acquire(lake: &Path, job: &str) -> Result<Self> {
        let dir = lake.join("_kiln").join("jobs");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{job}.lock"));
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io_err(&path))?;
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Self { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .map(|pid| format!(" by process {}", pid.trim()))
                    .unwrap_or_default();
                Err(JobError::AlreadyRunning {
                    job: job.to_string(),
                    lock: path,
                    holder,
                })
            }
            Err(fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    file.write_all(bytes).map_err(io_err(file.path()))?;
    file.as_file().sync_all().map_err(io_err(file.path()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .map_err(io_err(path))?;
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// This machine's name, for run records.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(attempt: u32, status: RunStatus, pid: u32) -> RunRecord {
        RunRecord {
            run_id: "r1".into(),
            job: "nightly".into(),
            run_date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            attempt,
            max_attempts: 2,
            trigger: Trigger::Manual,
            status,
            started_at: Utc::now(),
            ended_at: None,
            rows_written: None,
            error: None,
            params: "{}".into(),
            host: "h".into(),
            pid,
        }
    }

    #[test]
    fn records_round_trip_and_replace_by_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::of_lake(dir.path()).unwrap();
        history.write(&record(1, RunStatus::Running, 1)).unwrap();
        history.write(&record(1, RunStatus::Failed, 1)).unwrap();
        history.write(&record(2, RunStatus::Succeeded, 1)).unwrap();
        let records = history.records().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].status, RunStatus::Failed);
        let date = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        assert!(history.succeeded("nightly", date).unwrap());
        assert!(!history.succeeded("other", date).unwrap());
    }

    #[test]
    fn dead_running_records_become_killed() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::of_lake(dir.path()).unwrap();
        history
            .write(&record(1, RunStatus::Running, u32::MAX - 1))
            .unwrap();
        let mut alive = record(2, RunStatus::Running, std::process::id());
        alive.run_id = "r2".into();
        history.write(&alive).unwrap();
        assert_eq!(history.mark_abandoned("h").unwrap(), 1);
        let statuses: Vec<RunStatus> = history
            .records()
            .unwrap()
            .iter()
            .map(|r| r.status)
            .collect();
        assert!(statuses.contains(&RunStatus::Killed) && statuses.contains(&RunStatus::Running));
    }

    #[test]
    fn a_job_runs_once_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path(), "nightly").unwrap();
        let err = RunLock::acquire(dir.path(), "nightly")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already running"), "{err}");
        drop(held);
        RunLock::acquire(dir.path(), "nightly").unwrap();
    }
}
