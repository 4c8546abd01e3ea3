//! The runner and the scheduler loop on a virtual clock: no real waiting.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use kiln_jobs::*;

/// Time that jumps to whatever a sleeper waits for.
#[derive(Clone)]
struct VirtualClock(Arc<AtomicI64>);

impl VirtualClock {
    fn at(s: &str) -> Self {
        let t = DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        Self(Arc::new(AtomicI64::new(t)))
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap()
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> impl Future<Output = ()> + Send {
        self.0.fetch_max(t.timestamp_millis(), Ordering::SeqCst);
        tokio::task::yield_now()
    }
}

fn spec(name: &str, header: &str) -> JobSpec {
    JobSpec::parse(name, Path::new(name), header).unwrap()
}

#[tokio::test]
async fn a_failed_attempt_is_retried_with_backoff_and_both_are_recorded() {
    let lake = tempfile::tempdir().unwrap();
    let history = History::of_lake(lake.path()).unwrap();
    let job = spec(
        "flaky",
        "-- retries: 2\n-- retry_backoff: 10m\n-- param: p = x\n",
    );
    let clock = VirtualClock::at("2026-11-02T02:00:00Z");
    let start = clock.now();
    let date = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let seen = Arc::new(Mutex::new(vec![]));
    let record = run_job(
        &history,
        &job,
        date,
        Trigger::Manual,
        &BTreeMap::new(),
        &clock,
        |params| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(params.clone());
                if params["attempt"] == "1" {
                    Err("injected failure".to_string())
                } else {
                    Ok(AttemptReport { rows_written: 7 })
                }
            }
        },
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.attempt, 2);
    assert_eq!(
        clock.now() - start,
        chrono::Duration::minutes(10),
        "one backoff"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["run_date"], "2026-11-01");
    assert_eq!(seen[0]["prev_date"], "2026-10-31");
    assert_eq!(seen[0]["p"], "x");
    let records = history.records().unwrap();
    let statuses: Vec<_> = records.iter().map(|r| (r.attempt, r.status)).collect();
    assert_eq!(
        statuses,
        [(1, RunStatus::Failed), (2, RunStatus::Succeeded)]
    );
    assert_eq!(records[0].error.as_deref(), Some("injected failure"));
    assert_eq!(records[1].rows_written, Some(7));
    assert_eq!(records[0].run_id, records[1].run_id);
}

#[tokio::test]
async fn a_run_out_of_attempts_fails_runs_the_hook_and_times_out() {
    let lake = tempfile::tempdir().unwrap();
    let history = History::of_lake(lake.path()).unwrap();
    let marker = lake.path().join("hook.json");
    let job = spec(
        "slow",
        &format!(
            "-- retries: 1\n-- retry_backoff: 1s\n-- timeout: 50ms\n-- on_failure: cat > {}\n",
            marker.display()
        ),
    );
    let clock = VirtualClock::at("2026-11-02T02:00:00Z");
    let date = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let record = run_job(
        &history,
        &job,
        date,
        Trigger::Schedule,
        &BTreeMap::new(),
        &clock,
        |_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(AttemptReport::default())
        },
    )
    .await;
    assert_eq!(record.status, RunStatus::TimedOut);
    assert_eq!(record.attempt, 2);
    assert!(record
        .error
        .as_deref()
        .unwrap()
        .contains("timed out after 50ms"));
    let hooked: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(marker).unwrap()).unwrap();
    assert_eq!(hooked, record);
}

#[tokio::test]
async fn the_scheduler_fires_due_jobs_on_a_test_clock() {
    let lake = tempfile::tempdir().unwrap();
    let jobs = JobSet::from_specs(
        lake.path(),
        vec![
            spec(
                "nightly",
                "-- schedule: 0 2 * * *\n-- timezone: Europe/Berlin\n",
            ),
            spec("hourly", "-- schedule: 0 * * * *\n"),
        ],
    )
    .unwrap();
    let clock = VirtualClock::at("2026-11-01T22:00:30Z");
    let fired = Arc::new(Mutex::new(vec![]));
    let nightly_runs = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let launch = {
        let fired = Arc::clone(&fired);
        let nightly_runs = Arc::clone(&nightly_runs);
        let stop = Arc::clone(&stop);
        move |run: DueRun| -> RunFuture {
            fired.lock().unwrap().push(run.clone());
            if run.job == "nightly" && nightly_runs.fetch_add(1, Ordering::SeqCst) == 1 {
                stop.notify_one();
            }
            Box::pin(async {})
        }
    };
    let state = lake.path().join("state.json");
    tokio::time::timeout(
        Duration::from_secs(10),
        run_scheduler(&jobs, state.clone(), &clock, stop.notified(), launch),
    )
    .await
    .expect("virtual time: no real waiting")
    .unwrap();
    let fired = fired.lock().unwrap();
    let nightly: Vec<_> = fired.iter().filter(|r| r.job == "nightly").collect();
    // 02:00 in Berlin is 01:00 UTC in November.
    assert_eq!(
        nightly[0].fire_time.to_rfc3339(),
        "2026-11-02T01:00:00+00:00"
    );
    assert_eq!(nightly[0].run_date.to_string(), "2026-11-01");
    assert_eq!(nightly[1].run_date.to_string(), "2026-11-02");
    // 27 hourly fire times pass; a run still active at the next one queues
    // behind it, so the last few may not have started when the loop stops.
    let hourly: Vec<_> = fired.iter().filter(|r| r.job == "hourly").collect();
    assert!(
        (10..=28).contains(&hourly.len()),
        "{} hourly runs",
        hourly.len()
    );
    assert!(
        hourly
            .windows(2)
            .all(|w| w[1].fire_time - w[0].fire_time == chrono::Duration::hours(1)),
        "one run per hour, in order, none skipped or repeated"
    );
    let saved = SchedulerState::load(&state).unwrap();
    assert!(saved.last_fired["nightly"] >= nightly[1].fire_time);
}
