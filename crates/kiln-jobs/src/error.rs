use std::path::PathBuf;

/// What can go wrong with job files, schedules, history and runs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{path}:{line}: {message}")]
    InvalidHeader {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("job '{job}': invalid cron expression '{expression}': {reason}; write five fields (minute hour day-of-month month day-of-week), e.g. '0 2 * * *', or an alias such as @daily")]
    InvalidCron {
        job: String,
        expression: String,
        reason: String,
    },
    #[error(
        "job '{job}': unknown time zone '{zone}'; use an IANA name such as UTC or Europe/Berlin"
    )]
    UnknownTimeZone { job: String, zone: String },
    #[error("no job named '{name}' in {dir}{hint}")]
    MissingJob {
        name: String,
        dir: PathBuf,
        hint: String,
    },
    #[error("job '{job}' depends on '{dependency}', which is not a job in {dir}")]
    MissingDependency {
        job: String,
        dependency: String,
        dir: PathBuf,
    },
    #[error("circular job dependencies: {cycle}")]
    CircularDependency { cycle: String },
    #[error("unknown parameter '{name}': {reason}")]
    UnknownParameter { name: String, reason: String },
    #[error("invalid date '{value}': write YYYY-MM-DD")]
    InvalidDate { value: String },
    #[error("job '{job}' is already running (lock {lock} held{holder}); at most one run of a job is active at a time")]
    AlreadyRunning {
        job: String,
        lock: PathBuf,
        holder: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt run record: {reason}")]
    CorruptRecord { path: PathBuf, reason: String },
}

pub type Result<T, E = JobError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> JobError + '_ {
    move |source| JobError::Io {
        path: path.to_path_buf(),
        source,
    }
}
