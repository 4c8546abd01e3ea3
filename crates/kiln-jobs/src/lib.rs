//! Kiln's nightly jobs, free of DataFusion: a job is a SQL file whose
//! leading `-- key: value` comments declare its cron schedule and time zone,
//! parameters, dependencies, retries, timeout and failure hooks
//! ([`JobSpec`]); a folder of them is a [`JobSet`] with its dependency order.
//! [`run_job`] performs one run (attempts, backoff, one [`RunRecord`] per
//! attempt in the lake's [`History`]) through a caller-supplied function
//! that executes the SQL, and [`run_scheduler`] fires due runs on an
//! injectable [`Clock`] with a catch-up policy for missed ones.
//!
//! Must not depend on DataFusion, Arrow or Ballista (a test walks
//! `Cargo.lock`): the CLI supplies the SQL side.
//!
//! ```
//! use std::path::Path;
//! let sql = "-- schedule: @daily\n-- retries: 2\n-- param: region = eu\nSELECT '${region}';\n";
//! let job = kiln_jobs::JobSpec::parse("nightly", Path::new("jobs/nightly.sql"), sql).unwrap();
//! assert_eq!((job.retries, job.params["region"].as_str()), (2, "eu"));
//! assert!(kiln_jobs::JobSpec::parse("bad name", Path::new("x.sql"), sql).is_err());
//! ```

mod error;
mod graph;
mod history;
mod runner;
mod schedule;
mod spec;

pub use error::{JobError, Result};
pub use graph::JobSet;
pub use history::{host_name, write_atomically, History, RunLock, RunRecord, RunStatus, Trigger};
pub use runner::{
    backoff, builtin_params, date_range, parse_date, run_failure_hooks, run_job, today,
    AttemptReport,
};
pub use schedule::{
    run_scheduler, Clock, DueRun, RunFuture, Schedule, SchedulerState, SystemClock,
};
pub use spec::{CatchUp, JobSpec, BUILT_IN_PARAMS, HEADER_KEYS};
