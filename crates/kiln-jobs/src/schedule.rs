//! Cron schedules in a time zone, the scheduler's memory of what it fired,
//! and the loop that fires due runs on a [`Clock`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, JobError, Result};
use crate::graph::JobSet;
use crate::spec::CatchUp;

/// A cron expression evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    pub fn new(job: &str, expression: &str, zone: &str) -> Result<Self> {
        let cron = Cron::from_str(expression).map_err(|e| JobError::InvalidCron {
            job: job.to_string(),
            expression: expression.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            expression: expression.to_string(),
            cron,
            zone: Self::time_zone(job, zone)?,
        })
    }

    pub fn time_zone(job: &str, zone: &str) -> Result<Tz> {
        zone.parse().map_err(|_| JobError::UnknownTimeZone {
            job: job.to_string(),
            zone: zone.to_string(),
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire time strictly before `before`.
    pub fn previous_before(&self, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&before.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The date a run fired at `fire` processes: the start of the interval
    /// that ends at `fire` (as in Airflow), in the schedule's time zone. The
    /// 02:00 run of a daily job on Nov 2 is the run for Nov 1.
    pub fn run_date(&self, fire: DateTime<Utc>) -> NaiveDate {
        let start = self.previous_before(fire).unwrap_or(fire);
        start.with_timezone(&self.zone).date_naive()
    }
}

/// A run the scheduler decided to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRun {
    pub job: String,
    pub fire_time: DateTime<Utc>,
    pub run_date: NaiveDate,
}

/// What the scheduler fired last, per job; persisted so a restarted
/// scheduler knows which runs it missed.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SchedulerState {
    pub last_fired: BTreeMap<String, DateTime<Utc>>,
}

/// Fire times older than this when the scheduler looks are "missed".
const ON_TIME: ChronoDuration = ChronoDuration::seconds(60);

impl SchedulerState {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| JobError::CorruptRecord {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        crate::history::write_atomically(path, text.as_bytes())
    }

    /// The runs due at `now`, applying each job's catch-up policy to fire
    /// times missed since the last look. A job seen for the first time
    /// starts from `now` (nothing to catch up).
    pub fn due(&mut self, jobs: &JobSet, now: DateTime<Utc>) -> Vec<DueRun> {
        let mut due = vec![];
        for spec in jobs.iter() {
            let Some(schedule) = &spec.schedule else {
                continue;
            };
            let Some(last) = self.last_fired.get(&spec.name).copied() else {
                self.last_fired.insert(spec.name.clone(), now);
                continue;
            };
            let mut fires = vec![];
            let mut t = last;
            while let Some(next) = schedule.next_after(t) {
                if next > now {
                    break;
                }
                fires.push(next);
                t = next;
            }
            let chosen: Vec<DateTime<Utc>> = match spec.catch_up {
                CatchUp::All => fires,
                CatchUp::Latest => fires.last().copied().into_iter().collect(),
                CatchUp::None => fires.into_iter().filter(|f| now - *f <= ON_TIME).collect(),
            };
            due.extend(chosen.into_iter().map(|fire_time| DueRun {
                job: spec.name.clone(),
                fire_time,
                run_date: schedule.run_date(fire_time),
            }));
            self.last_fired.insert(spec.name.clone(), now);
        }
        due
    }

    /// When the next job fires after `now`.
    pub fn next_wake(jobs: &JobSet, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        jobs.iter()
            .filter_map(|s| s.schedule.as_ref()?.next_after(now))
            .min()
    }
}

/// Time, injectable: the real clock in production, a virtual one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    fn sleep_until(&self, t: DateTime<Utc>) -> impl Future<Output = ()> + Send;
}

/// The system clock, optionally shifted (`kiln schedule --start-clock-at`
/// runs a real scheduler as if it were another time).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    pub offset: ChronoDuration,
}

impl SystemClock {
    /// A clock that reads `start` now and runs at real speed.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            offset: start - Utc::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> impl Future<Output = ()> + Send {
        let wait = (t - self.now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait)
    }
}

/// A run to start: the future that performs it.
pub type RunFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Fires due runs until `shutdown` resolves, then waits for active runs.
/// At most one run per job is active; due runs of a busy job queue behind it.
/// `state_path` keeps what was fired across restarts.
pub async fn run_scheduler<C: Clock>(
    jobs: &JobSet,
    state_path: PathBuf,
    clock: &C,
    shutdown: impl Future<Output = ()>,
    mut launch: impl FnMut(DueRun) -> RunFuture,
) -> Result<()> {
    let mut state = SchedulerState::load(&state_path)?;
    let mut queues: HashMap<String, VecDeque<DueRun>> = HashMap::new();
    let mut active: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::pin!(shutdown);
    loop {
        let now = clock.now();
        for run in state.due(jobs, now) {
            log::info!(
                "due: {} for {} (fired {})",
                run.job,
                run.run_date,
                run.fire_time
            );
            queues.entry(run.job.clone()).or_default().push_back(run);
        }
        state.save(&state_path)?;
        for (job, queue) in queues.iter_mut() {
            if active.contains_key(job) {
                continue;
            }
            if let Some(run) = queue.pop_front() {
                let fut = launch(run);
                let tx = done_tx.clone();
                let name = job.clone();
                active.insert(
                    job.clone(),
                    tokio::spawn(async move {
                        fut.await;
                        let _ = tx.send(name);
                    }),
                );
            }
        }
        let wake = SchedulerState::next_wake(jobs, now);
        tokio::select! {
            _ = &mut shutdown => break,
            Some(job) = done_rx.recv() => { active.remove(&job); }
            _ = async {
                match wake {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    for (job, handle) in active {
        log::info!("waiting for the active run of {job} to finish");
        let _ = handle.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn jobs(header: &str) -> JobSet {
        JobSet::from_specs(
            Path::new("jobs"),
            vec![JobSpec::parse("nightly", Path::new("jobs/nightly.sql"), header).unwrap()],
        )
        .unwrap()
    }

    #[test]
    fn run_date_is_the_interval_start_in_the_zone() {
        let daily = Schedule::new("j", "0 2 * * *", "UTC").unwrap();
        let fire = daily.next_after(at("2026-11-01T12:00:00Z")).unwrap();
        assert_eq!(fire, at("2026-11-02T02:00:00Z"));
        assert_eq!(
            daily.run_date(fire),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
        );
        let berlin = Schedule::new("j", "30 1 * * *", "Europe/Berlin").unwrap();
        let fire = berlin.next_after(at("2026-11-01T12:00:00Z")).unwrap();
        assert_eq!(fire, Utc.with_ymd_and_hms(2026, 11, 2, 0, 30, 0).unwrap());
        assert_eq!(
            berlin.run_date(fire),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
        );
    }

    #[test]
    fn catch_up_policies() {
        let mut state = SchedulerState::default();
        let all = jobs("-- schedule: 0 2 * * *\n-- catchup: all\n");
        assert!(state.due(&all, at("2026-11-01T00:00:00Z")).is_empty());
        let due = state.due(&all, at("2026-11-04T03:00:00Z"));
        let dates: Vec<String> = due.iter().map(|d| d.run_date.to_string()).collect();
        assert_eq!(
            dates,
            ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
        );

        let latest = jobs("-- schedule: 0 2 * * *\n");
        let mut state = SchedulerState::default();
        state.due(&latest, at("2026-11-01T00:00:00Z"));
        let due = state.due(&latest, at("2026-11-04T03:00:00Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].run_date.to_string(), "2026-11-03");

        let none = jobs("-- schedule: 0 2 * * *\n-- catchup: none\n");
        let mut state = SchedulerState::default();
        state.due(&none, at("2026-11-01T00:00:00Z"));
        assert!(state.due(&none, at("2026-11-04T03:00:00Z")).is_empty());
        let due = state.due(&none, at("2026-11-05T02:00:10Z"));
        assert_eq!(due.len(), 1, "an on-time fire still runs");
    }
}
