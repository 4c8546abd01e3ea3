//! `kiln jobs` and `kiln schedule` as real processes: the example pipeline,
//! retries, backfill, idempotent partitions, exactly-once ingestion across
//! a kill, the scheduler on a shifted clock, hooks and bad job folders.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{kiln, kiln_direct, run, sql, wait_for_failpoint};

fn jobs(lake: &Path, dir: &Path, args: &[&str]) -> (i32, String, String) {
    run(kiln()
        .arg("--lake")
        .arg(lake)
        .arg("jobs")
        .arg("--jobs")
        .arg(dir)
        .args(args))
}

/// `kiln --lake LAKE ARGS...`.
fn in_lake(lake: &Path, args: &[&str]) -> (i32, String, String) {
    run(kiln().arg("--lake").arg(lake).args(args))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

/// Rows of a query as `a|b|c` lines (CSV output without the header).
fn rows(lake: &Path, query: &str) -> Vec<String> {
    let (code, out, err) = in_lake(lake, &["sql", "--format", "csv", "-c", query]);
    assert_eq!(code, 0, "{query}: {err}");
    out.lines().skip(1).map(|l| l.replace(',', "|")).collect()
}

#[test]
fn the_example_nightly_pipeline_runs_and_reruns_idempotently() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let (code, out, err) = in_lake(&lake, &["jobs", "run", "nightly", "--date", "2026-11-01"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ingested 3 new files (427 rows)"), "{err}");
    assert!(
        err.contains("created table activity_quarantine (2 rows)"),
        "{err}"
    );
    assert!(
        err.contains("inserted 141 rows into activity_features"),
        "{err}"
    );
    assert!(err.contains("trained model churn v1"), "{err}");
    assert!(out.contains("roc_auc"), "{out}");
    assert!(
        err.contains("job nightly for 2026-11-01 succeeded"),
        "{err}"
    );

    // Again, and the next day: the dependency is not re-run for a date it
    // succeeded on, partitions are replaced, the model continues warm.
    let (code, _, err) = in_lake(&lake, &["jobs", "run", "nightly", "--date", "2026-11-01"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("dependency ingest_activity already succeeded"),
        "{err}"
    );
    let (code, _, err) = in_lake(&lake, &["jobs", "run", "nightly", "--date", "2026-11-02"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no new files"), "{err}");
    assert_eq!(
        rows(
            &lake,
            "SELECT day, count(*) FROM activity_features GROUP BY day ORDER BY day"
        ),
        ["2026-11-01|141", "2026-11-02|139"]
    );
    assert_eq!(
        rows(
            &lake,
            "SELECT day, count(*) FROM churn_scores GROUP BY day ORDER BY day"
        ),
        ["2026-11-01|141", "2026-11-02|139"]
    );
    assert_eq!(rows(&lake, "SELECT count(*) FROM raw_activity"), ["425"]);
    let (code, out, err) = in_lake(&lake, &["sql", "-c", "DESCRIBE MODEL churn"]);
    assert_eq!(code, 0, "{err}");
    let warm_started_from = out.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (cells.get(1) == Some(&"warm_started_from")).then(|| cells[2].to_string())
    });
    assert_eq!(warm_started_from.as_deref(), Some("2"), "{out}");
    assert_eq!(
        rows(
            &lake,
            "SELECT job, CAST(run_date AS VARCHAR), attempt, status, \"trigger\" FROM kiln.job_runs \
             ORDER BY started_at"
        ),
        [
            "ingest_activity|2026-11-01|1|succeeded|dependency",
            "nightly|2026-11-01|1|succeeded|manual",
            "nightly|2026-11-01|1|succeeded|manual",
            "ingest_activity|2026-11-02|1|succeeded|dependency",
            "nightly|2026-11-02|1|succeeded|manual",
        ]
    );
    let (code, out, err) = in_lake(
        &lake,
        &[
            "jobs", "history", "nightly", "--limit", "2", "--format", "csv",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .starts_with("nightly,2026-11-02,1,succeeded"),
        "{out}"
    );
    let (code, out, _) = run(kiln().args(["jobs", "list"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("nightly")
            && out.contains("0 2 * * * (UTC)")
            && out.contains("ingest_activity"),
        "{out}"
    );
}

#[test]
fn a_failed_attempt_is_retried_and_history_shows_both() {
    let scratch = tempfile::tempdir().unwrap();
    let (lake, dir) = (scratch.path().join("lake"), scratch.path().join("jobs"));
    // The injected failure: division by zero on the first attempt only.
    write(
        &dir,
        "flaky.sql",
        "-- retries: 2\n-- retry_backoff: 1s\n\
         CREATE TABLE IF NOT EXISTS t (x BIGINT);\n\
         INSERT INTO t SELECT 10 / (${attempt} - 1);\n",
    );
    let (code, _, err) = jobs(&lake, &dir, &["run", "flaky", "--date", "2026-11-01"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("attempt 1/3") && err.contains("attempt 2/3"),
        "{err}"
    );
    assert_eq!(
        rows(&lake, "SELECT attempt, status, error IS NOT NULL, rows_written FROM kiln.job_runs ORDER BY attempt"),
        ["1|failed|true|", "2|succeeded|false|1"]
    );
    assert_eq!(rows(&lake, "SELECT x FROM t"), ["10"]);
}

#[test]
fn backfill_writes_one_partition_per_date_and_reruns_replace_it() {
    let scratch = tempfile::tempdir().unwrap();
    let (lake, dir) = (scratch.path().join("lake"), scratch.path().join("jobs"));
    write(
        &dir,
        "daily.sql",
        "-- param: n = 3\n\
         CREATE TABLE IF NOT EXISTS daily PARTITIONED BY (day) AS \
           SELECT 0 AS v, DATE '2000-01-01' AS day WHERE false;\n\
         INSERT OVERWRITE daily PARTITION (day = '${run_date}') \
           SELECT unnest(range(0, ${n}));\n",
    );
    let (code, _, err) = jobs(
        &lake,
        &dir,
        &[
            "backfill",
            "daily",
            "--from",
            "2026-10-30",
            "--to",
            "2026-11-01",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let per_day = "SELECT day, count(*) FROM daily GROUP BY day ORDER BY day";
    assert_eq!(
        rows(&lake, per_day),
        ["2026-10-30|3", "2026-10-31|3", "2026-11-01|3"]
    );
    let (code, _, err) = jobs(
        &lake,
        &dir,
        &["run", "daily", "--date", "2026-10-31", "--param", "n=5"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = jobs(
        &lake,
        &dir,
        &["run", "daily", "--date", "2026-10-31", "--param", "n=5"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        rows(&lake, per_day),
        ["2026-10-30|3", "2026-10-31|5", "2026-11-01|3"]
    );
    assert_eq!(
        rows(
            &lake,
            "SELECT \"trigger\", count(*) FROM kiln.job_runs GROUP BY 1 ORDER BY 1"
        ),
        ["backfill|3", "manual|2"]
    );
}

#[test]
fn ingestion_loads_each_file_once_even_across_a_kill() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let landing = scratch.path().join("landing");
    for day in 1..=3 {
        write(
            &landing.join(format!("2026-11-0{day}")),
            "events.csv",
            &format!("id,day,amount\n{day}1,2026-11-0{day},1.5\n{day}2,2026-11-0{day},2.5\n"),
        );
    }
    let ingest = format!("INGEST INTO events FROM '{}' FORMAT CSV", landing.display());
    // Killed after writing the data and the manifest, just before publishing.
    let mut child = kiln_direct()
        .arg("--lake")
        .arg(&lake)
        .args(["sql", "-c", &ingest])
        .env("KILN_FAILPOINT", "before-publish")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_failpoint(&mut child, "before-publish");
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, _, err) = sql(&lake, "SELECT count(*) FROM events");
    assert_ne!(code, 0, "nothing was published: {err}");

    let (code, _, err) = sql(&lake, &ingest);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ingested 3 new files (6 rows)"), "{err}");
    let (code, _, err) = sql(&lake, &ingest);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no new files") && err.contains("3 already ingested"),
        "{err}"
    );
    // A new file, a copy of a loaded one under another name, and a file
    // rewritten in place: only the new one loads.
    write(
        &landing.join("2026-11-04"),
        "events.csv",
        "id,day,amount\n41,2026-11-04,4.5\n",
    );
    std::fs::copy(
        landing.join("2026-11-01/events.csv"),
        landing.join("2026-11-04/copy.csv"),
    )
    .unwrap();
    write(
        &landing.join("2026-11-02"),
        "events.csv",
        "id,day,amount\n99,2026-11-02,9.5\n",
    );
    let (code, _, err) = sql(&lake, &ingest);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ingested 1 new files (1 rows)"), "{err}");
    assert!(err.contains("changed since it was loaded"), "{err}");
    assert_eq!(
        rows(&lake, "SELECT count(*), count(DISTINCT id) FROM events"),
        ["7|7"]
    );
    // The published manifest lists the four loaded files; the killed run's
    // manifest was never referenced and is ignored.
    let catalog: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lake.join("_kiln/catalog.json")).unwrap())
            .unwrap();
    let manifest = catalog["tables"]["events"]["ingest_manifest"]
        .as_str()
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lake.join("_kiln").join(manifest)).unwrap())
            .unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 4, "{manifest}");
}

#[test]
fn the_scheduler_fires_a_due_job_on_a_shifted_clock_and_stops_on_sigterm() {
    let scratch = tempfile::tempdir().unwrap();
    let (lake, dir) = (scratch.path().join("lake"), scratch.path().join("jobs"));
    write(
        &dir,
        "stamp.sql",
        "-- schedule: 0 2 * * *\n-- timezone: Europe/Berlin\n\
         CREATE TABLE IF NOT EXISTS stamps (d VARCHAR);\n\
         INSERT INTO stamps VALUES ('${run_date}');\n",
    );
    // 01:00:58 UTC is 01:59:58 in Berlin: the 02:00 run is two seconds away.
    let mut child = kiln_direct()
        .arg("--lake")
        .arg(&lake)
        .args(["schedule", "--jobs"])
        .arg(&dir)
        .args(["--start-clock-at", "2026-11-02T00:59:58Z"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut log = String::new();
    loop {
        assert!(Instant::now() < deadline, "the job never finished: {log}");
        match lines.next() {
            Some(Ok(line)) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("stamp for 2026-11-01 finished") {
                    break;
                }
            }
            _ => panic!("the scheduler exited: {log}"),
        }
    }
    assert!(log.contains("finished: succeeded"), "{log}");
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rows(&lake, "SELECT d FROM stamps"), ["2026-11-01"]);
    assert_eq!(
        rows(&lake, "SELECT job, \"trigger\", status FROM kiln.job_runs"),
        ["stamp|schedule|succeeded"]
    );
}

#[test]
fn failure_hooks_exit_codes_and_bad_job_folders() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let dir = scratch.path().join("jobs");
    let hook_out = scratch.path().join("hook.json");
    // A webhook receiver: one request, answered 200, body handed back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).unwrap();
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .unwrap();
                    return text;
                }
            }
            if n == 0 {
                return text;
            }
        }
    });
    write(
        &dir,
        "broken.sql",
        &format!(
            "-- on_failure: cat > {}\n-- on_failure_webhook: http://127.0.0.1:{port}/kiln-hook\n\
             SELECT * FROM no_such_table;\n",
            hook_out.display()
        ),
    );
    write(
        &dir,
        "uses_param.sql",
        "-- param: region = eu\nSELECT '${region}' AS r;\n",
    );
    let (code, _, err) = jobs(&lake, &dir, &["run", "broken", "--date", "2026-11-01"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("job broken for 2026-11-01 failed after 1 attempt(s)")
            && err.contains("no_such_table"),
        "{err}"
    );
    let hook: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&hook_out).unwrap()).unwrap();
    assert_eq!(hook["status"], "failed");
    assert_eq!(hook["job"], "broken");
    let request = received.join().unwrap();
    assert!(request.starts_with("POST /kiln-hook HTTP/1.1"), "{request}");
    assert!(
        request.contains("\"job\":\"broken\"") && request.contains("\"status\":\"failed\""),
        "{request}"
    );

    let (code, out, err) = jobs(
        &lake,
        &dir,
        &["run", "uses_param", "--param", "region=us", "--quiet"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("| us |"), "{out}");
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "x.sql",
            "SELECT 1",
            &["run", "uses_param", "--param", "regoin=us"],
            "unknown parameter 'regoin'",
        ),
        (
            "x.sql",
            "SELECT 1",
            &["run", "nightly"],
            "no job named 'nightly'",
        ),
        (
            "x.sql",
            "-- schedule: 0 25 * * *\nSELECT 1",
            &["list"],
            "invalid cron expression '0 25 * * *'",
        ),
        (
            "x.sql",
            "-- depends_on: y\nSELECT 1",
            &["list"],
            "circular job dependencies: x -> y -> x",
        ),
        (
            "x.sql",
            "SELECT ${nope}",
            &["run", "x"],
            "unknown parameter '${nope}'",
        ),
        (
            "x.sql",
            "SELECT 1",
            &["run", "x", "--date", "2026-13-01"],
            "invalid date '2026-13-01'",
        ),
    ];
    for (i, (file, text, args, expected)) in cases.iter().enumerate() {
        let dir = scratch.path().join(format!("bad-{i}"));
        write(&dir, file, text);
        write(
            &dir,
            "uses_param.sql",
            "-- param: region = eu\nSELECT '${region}';\n",
        );
        write(&dir, "y.sql", "-- depends_on: x\nSELECT 1;\n");
        if !text.contains("depends_on") {
            std::fs::remove_file(dir.join("y.sql")).unwrap();
        }
        let (code, _, err) = jobs(&lake, &dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in: {err}"
        );
    }
}
