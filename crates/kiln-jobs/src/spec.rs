//! Job files: a SQL script whose leading `-- key: value` comment lines
//! declare how it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{io_err, JobError, Result};
use crate::schedule::Schedule;

/// The header keys a job file may use.
pub const HEADER_KEYS: &[&str] = &[
    "schedule",
    "timezone",
    "catchup",
    "param",
    "depends_on",
    "retries",
    "retry_backoff",
    "timeout",
    "on_failure",
    "on_failure_webhook",
];

/// Parameters every run gets besides the job's own.
pub const BUILT_IN_PARAMS: &[&str] = &[
    "run_date",
    "run_date_nodash",
    "prev_date",
    "next_date",
    "run_id",
    "job",
    "attempt",
];

/// What a scheduler does about runs it missed while it was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Run every missed date, oldest first.
    All,
    /// Run only the most recent missed date.
    #[default]
    Latest,
    /// Skip missed dates; wait for the next one.
    None,
}

/// One job: its SQL and how it runs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub path: PathBuf,
    /// The script, header included (the header is SQL comments).
    pub sql: String,
    pub schedule: Option<Schedule>,
    pub catch_up: CatchUp,
    /// Declared parameters and their defaults.
    pub params: BTreeMap<String, String>,
    pub depends_on: Vec<String>,
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub retry_backoff: Duration,
    pub timeout: Option<Duration>,
    /// A shell command run with the failed run's record as JSON on stdin.
    pub on_failure: Option<String>,
    /// A URL the failed run's record is POSTed to as JSON.
    pub on_failure_webhook: Option<String>,
}

impl JobSpec {
    /// Reads and validates a job file; the job's name is the file's stem.
    pub fn load(path: &Path) -> Result<Self> {
        let sql = std::fs::read_to_string(path).map_err(io_err(path))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        Self::parse(&name, path, &sql)
    }

    /// Parses a job from its text (`path` is used in messages).
    pub fn parse(name: &str, path: &Path, sql: &str) -> Result<Self> {
        let invalid = |line: usize, message: String| JobError::InvalidHeader {
            path: path.to_path_buf(),
            line,
            message,
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                1,
                format!(
                    "job name '{name}' (the file name) may use only letters, digits, '_' and '-'"
                ),
            ));
        }
        let mut spec = JobSpec {
            name: name.to_string(),
            path: path.to_path_buf(),
            sql: sql.to_string(),
            schedule: None,
            catch_up: CatchUp::default(),
            params: BTreeMap::new(),
            depends_on: vec![],
            retries: 0,
            retry_backoff: Duration::from_secs(30),
            timeout: None,
            on_failure: None,
            on_failure_webhook: None,
        };
        let mut cron = None;
        let mut timezone = None;
        for (index, line) in sql.lines().enumerate() {
            let line_no = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            let Some(comment) = trimmed.strip_prefix("--") else {
                break;
            };
            let Some((key, value)) = header_entry(comment) else {
                continue;
            };
            let value = value.to_string();
            match key {
                "schedule" => cron = Some((line_no, value)),
                "timezone" => timezone = Some(value),
                "catchup" => {
                    spec.catch_up = match value.to_ascii_lowercase().as_str() {
                        "all" => CatchUp::All,
                        "latest" => CatchUp::Latest,
                        "none" => CatchUp::None,
                        _ => {
                            return Err(invalid(
                                line_no,
                                format!("catchup must be all, latest or none, not '{value}'"),
                            ))
                        }
                    }
                }
                "param" => {
                    let Some((param, default)) = value.split_once('=') else {
                        return Err(invalid(
                            line_no,
                            format!("write 'param: name = default', not 'param: {value}'"),
                        ));
                    };
                    let param = param.trim();
                    if BUILT_IN_PARAMS.contains(&param) {
                        return Err(invalid(
                            line_no,
                            format!("'{param}' is a built-in parameter; choose another name"),
                        ));
                    }
                    if param.is_empty()
                        || !param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(invalid(
                            line_no,
                            format!(
                                "parameter name '{param}' may use only letters, digits and '_'"
                            ),
                        ));
                    }
                    spec.params
                        .insert(param.to_string(), default.trim().to_string());
                }
                "depends_on" => spec.depends_on.extend(
                    value
                        .split(',')
                        .map(|d| d.trim().to_string())
                        .filter(|d| !d.is_empty()),
                ),
                "retries" => {
                    spec.retries = value.parse().map_err(|_| {
                        invalid(
                            line_no,
                            format!("retries must be a whole number, not '{value}'"),
                        )
                    })?
                }
                "retry_backoff" => spec.retry_backoff = duration(&value, line_no, &invalid)?,
                "timeout" => spec.timeout = Some(duration(&value, line_no, &invalid)?),
                "on_failure" => spec.on_failure = Some(value),
                "on_failure_webhook" => {
                    if !(value.starts_with("http://") || value.starts_with("https://")) {
                        return Err(invalid(
                            line_no,
                            format!("on_failure_webhook must be an http:// or https:// URL, not '{value}'"),
                        ));
                    }
                    spec.on_failure_webhook = Some(value)
                }
                other => {
                    return Err(invalid(
                        line_no,
                        format!(
                            "unknown header key '{other}'; valid keys: {}",
                            HEADER_KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        if let Some((_, expression)) = cron {
            spec.schedule = Some(Schedule::new(
                name,
                &expression,
                timezone.as_deref().unwrap_or("UTC"),
            )?);
        } else if let Some(zone) = timezone {
            // Validate it anyway: a typo should not wait for the day a schedule is added.
            Schedule::time_zone(name, &zone)?;
        }
        Ok(spec)
    }

    /// The job's parameters for one run: defaults, then `overrides` (which must
    /// be declared), then the built-ins.
    pub fn run_params(
        &self,
        overrides: &BTreeMap<String, String>,
        builtins: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut params = self.params.clone();
        for (k, v) in overrides {
            if params.contains_key(k) {
                params.insert(k.clone(), v.clone());
            }
        }
        params.extend(builtins.iter().map(|(k, v)| (k.clone(), v.clone())));
        params
    }
}

/// `key: value` where key is a lowercase identifier; other comments are prose.
fn header_entry(comment: &str) -> Option<(&str, &str)> {
    let (key, value) = comment.trim().split_once(':')?;
    let key = key.trim_end();
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    is_key.then(|| (key, value.trim()))
}

fn duration(
    value: &str,
    line: usize,
    invalid: &impl Fn(usize, String) -> JobError,
) -> Result<Duration> {
    humantime::parse_duration(value).map_err(|e| {
        invalid(
            line,
            format!("invalid duration '{value}' ({e}); write e.g. 30s, 5m, 1h 30m"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<JobSpec> {
        JobSpec::parse("nightly", Path::new("jobs/nightly.sql"), sql)
    }

    #[test]
    fn header_is_parsed() {
        let spec = parse(
            "-- Nightly pipeline: prose comments are fine\n\
             -- schedule: 0 2 * * *\n-- timezone: Europe/Berlin\n\
             -- param: landing = data/landing\n-- param: min_rows=10\n\
             -- depends_on: ingest, features\n-- retries: 2\n-- retry_backoff: 1m\n\
             -- timeout: 1h 30m\n-- catchup: all\n-- on_failure: echo failed\n\
             SELECT 1;\n-- schedule: not a header any more\n",
        )
        .unwrap();
        assert_eq!(spec.schedule.unwrap().expression(), "0 2 * * *");
        assert_eq!(spec.params["landing"], "data/landing");
        assert_eq!(spec.params["min_rows"], "10");
        assert_eq!(spec.depends_on, vec!["ingest", "features"]);
        assert_eq!(spec.retries, 2);
        assert_eq!(spec.retry_backoff, Duration::from_secs(60));
        assert_eq!(spec.timeout, Some(Duration::from_secs(5400)));
        assert_eq!(spec.catch_up, CatchUp::All);
        assert_eq!(spec.on_failure.as_deref(), Some("echo failed"));
    }

    #[test]
    fn bad_headers_name_the_line_and_the_fix() {
        let err = parse("-- retries: two\nSELECT 1").unwrap_err().to_string();
        assert!(
            err.contains("nightly.sql:1") && err.contains("whole number"),
            "{err}"
        );
        let err = parse("\n-- retry: 2\n").unwrap_err().to_string();
        assert!(err.contains(":2") && err.contains("valid keys"), "{err}");
        let err = parse("-- schedule: 0 25 * * *").unwrap_err().to_string();
        assert!(
            err.contains("invalid cron expression '0 25 * * *'"),
            "{err}"
        );
        let err = parse("-- timezone: Mars/Olympus").unwrap_err().to_string();
        assert!(err.contains("unknown time zone 'Mars/Olympus'"), "{err}");
        let err = parse("-- param: run_date = x").unwrap_err().to_string();
        assert!(err.contains("built-in"), "{err}");
        let err = parse("-- timeout: soon").unwrap_err().to_string();
        assert!(err.contains("invalid duration 'soon'"), "{err}");
        let err = JobSpec::parse("bad name", Path::new("x"), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only letters"), "{err}");
    }

    #[test]
    fn overrides_apply_to_declared_params_and_builtins_win() {
        let spec = parse("-- param: a = 1\n-- param: b = 2\n").unwrap();
        let overrides = BTreeMap::from([("a".to_string(), "9".to_string())]);
        let builtins = BTreeMap::from([("run_date".to_string(), "2026-11-01".to_string())]);
        let params = spec.run_params(&overrides, &builtins);
        assert_eq!(params["a"], "9");
        assert_eq!(params["b"], "2");
        assert_eq!(params["run_date"], "2026-11-01");
    }
}
