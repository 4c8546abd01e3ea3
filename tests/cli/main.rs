//! Process-level tests of the `kiln` binary: exit codes, scripts, parameters,
//! the bad-statement corpus, output formats, and atomic writes under SIGKILL.

mod cluster;
#[path = "../../crates/kiln-sql/tests/common.rs"]
mod common;
#[path = "../support/datafusion_replay.rs"]
mod datafusion_replay;
mod deploy;
mod jobs;
#[path = "../support/slt.rs"]
mod slt;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `kiln` binary under a 180 s `timeout`, so a hang fails the test
/// instead of stalling CI.
fn kiln() -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--signal=KILL", "180", env!("CARGO_BIN_EXE_kiln")]);
    cmd.current_dir(repo_root())
        .env_remove("KILN_LAKE")
        .env_remove("RUST_LOG");
    cmd
}

/// The `kiln` binary itself (for tests that signal the process).
/// Reads `child`'s stderr until it reports reaching the failpoint `name`
/// (where it then waits, see `KILN_FAILPOINT`); panics if it exits first.
fn wait_for_failpoint(child: &mut std::process::Child, name: &str) {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let reached = format!("failpoint {name} reached");
    loop {
        assert!(
            Instant::now() < deadline,
            "the failpoint {name} was never reached"
        );
        match lines.next() {
            Some(Ok(line)) if line.contains(&reached) => return,
            Some(_) => continue,
            None => panic!("kiln exited before the failpoint {name}"),
        }
    }
}

fn kiln_direct() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.current_dir(repo_root())
        .env_remove("KILN_LAKE")
        .env_remove("RUST_LOG");
    cmd
}

use common::repo_root;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("kiln runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn sql(lake: &Path, statements: &str) -> (i32, String, String) {
    run(kiln()
        .arg("sql")
        .arg("--lake")
        .arg(lake)
        .arg(format!("--command={statements}")))
}

#[test]
fn quickstart_example_runs_end_to_end() {
    let scratch = tempfile::tempdir().unwrap();
    let (code, out, err) = run(kiln()
        .args(["run", "sql/examples/quickstart.sql", "--lake"])
        .arg(scratch.path()));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(err.contains("created table orders (159 rows)"), "{err}");
    assert!(
        out.contains("| pro   | 14        | 4.5        | 2460.57 |"),
        "{out}"
    );
    assert!(err.contains("trained model plan_model v1 (mlp"), "{err}");
    assert!(
        out.contains("| r2     |") && out.contains("| roc_auc "),
        "{out}"
    );
    // Governance: the late orders' negative amount and unknown customer are
    // quarantined with the constraint each failed; the customers check passes.
    assert!(
        err.contains("created table orders_quarantine (2 rows)"),
        "{err}"
    );
    assert!(!err.contains("failed: EXPECT"), "{err}");
    assert!(
        out.contains(
            "| 1160     | 12          | -42.5  | amount BETWEEN 0 AND 10000                     |"
        ) && out.contains(
            "| 1161     | 404         | 23.9   | customer_id REFERENCES customers (customer_id) |"
        ),
        "{out}"
    );
    // TRANSFORM: fitted, stored, re-applied by EVALUATE and PREDICT.
    assert!(
        err.contains("trained model pro_risk v1 (logistic_regression"),
        "{err}"
    );
    assert!(
        out.contains("| customer_id | orders | spend ") && out.contains("| probability "),
        "{out}"
    );
    // Re-running replaces the tables and gives the same SQL answers (model
    // metrics may differ slightly: the rewritten files can land in other
    // partitions, and training is deterministic per seed *and* partitioning).
    let (code, again, err) = run(kiln()
        .args(["run", "sql/examples/quickstart.sql", "--quiet", "--lake"])
        .arg(scratch.path()));
    assert_eq!(code, 0, "stderr: {err}");
    // From the SQL results to the first model metrics (check results carry
    // run ids and times; the quarantine grows by one row per run).
    let before_models = |text: &str| {
        let mut lines: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("| plan "))
            .take_while(|l| !l.starts_with("| metric"))
            .collect();
        lines.pop(); // the metric table's top border, as wide as its values
        lines.join("\n")
    };
    assert!(before_models(&out).contains("2460.57"), "{out}");
    assert_eq!(before_models(&again), before_models(&out));
    assert!(
        err.lines().all(|l| l.starts_with("warning: ")),
        "--quiet prints warnings but no status lines: {err}"
    );
    let models = scratch.path().join("_models/plan_model");
    assert!(models.join("v2/model.safetensors").exists() && models.join("v2/card.json").exists());
}

#[test]
fn run_substitutes_params_and_stops_at_the_failing_statement() {
    let scratch = tempfile::tempdir().unwrap();
    let script = scratch.path().join("job.sql");
    std::fs::write(
        &script,
        "CREATE TABLE daily AS SELECT DATE '${day}' AS day, ${n} AS n;\n\
         SELECT day, n FROM daily;\n\
         \n\
         -- the next statement fails\n\
         SELECT *\n  FROM missing_table;\n\
         SELECT 'never printed';\n",
    )
    .unwrap();
    let lake = scratch.path().join("lake");
    let (code, out, err) = run(kiln()
        .arg("run")
        .arg(&script)
        .args([
            "--param",
            "day=2026-11-01",
            "-p",
            "n=42",
            "--format",
            "csv",
            "--lake",
        ])
        .arg(&lake));
    assert_eq!(code, 1, "stderr: {err}");
    assert_eq!(out, "day,n\n2026-11-01,42\n");
    assert!(
        err.contains("statement at line 5 failed: table 'missing_table' not found"),
        "{err}"
    );
    assert!(!out.contains("never printed"));

    let (code, _, err) = run(kiln().arg("run").arg(&script).arg("--lake").arg(&lake));
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown parameter '${day}' at line 1"),
        "{err}"
    );
    assert!(err.contains("--param day=VALUE"), "{err}");
}

#[test]
fn output_formats_and_stdin() {
    let scratch = tempfile::tempdir().unwrap();
    let (code, out, _) = run(kiln()
        .args([
            "sql",
            "--format",
            "json",
            "-c",
            "SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, NULL ORDER BY a",
            "--lake",
        ])
        .arg(scratch.path()));
    assert_eq!(code, 0);
    assert_eq!(out, "{\"a\":1,\"b\":\"x\"}\n{\"a\":2}\n");

    let mut child = kiln()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 40 + 2 AS answer;")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "answer\n42\n");
}

#[test]
fn cluster_flag_without_a_scheduler_fails_clearly() {
    let scratch = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let (code, _, err) = run(kiln()
        .args([
            "sql",
            "--cluster",
            "df://127.0.0.1:1",
            "-c",
            "SELECT 1",
            "--lake",
        ])
        .arg(scratch.path()));
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the Kiln scheduler at http://127.0.0.1:1")
            && err.contains("kiln scheduler"),
        "{err}"
    );
    let (code, _, err) = run(kiln()
        .args(["sql", "--cluster", "127.0.0.1", "-c", "SELECT 1", "--lake"])
        .arg(scratch.path()));
    assert_eq!(code, 1);
    assert!(err.contains("expected df://HOST:PORT"), "{err}");
}

#[test]
fn usage_errors_exit_with_2() {
    let (code, _, err) = run(kiln().args(["sql", "-c", "SELECT 1", "-f", "x.sql"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(kiln().args(["run", "x.sql", "--param", "novalue"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected key=value"), "{err}");
}

/// Every statement of tests/corpus/bad_statements.sql fails with exit code 1
/// and a one-line reason, and never panics.
#[test]
fn bad_statement_corpus_fails_cleanly() {
    let corpus =
        std::fs::read_to_string(repo_root().join("tests/corpus/bad_statements.sql")).unwrap();
    let mut cases: Vec<(String, String)> = Vec::new();
    for block in corpus.split("-- case: ").skip(1) {
        let (name, body) = block.split_once('\n').unwrap();
        cases.push((name.trim().to_string(), body.trim().to_string()));
    }
    assert!(cases.len() >= 30, "corpus has {} cases", cases.len());
    let scratch = tempfile::tempdir().unwrap();
    // Seed a table so statements that reference `t` reach execution.
    let lake = scratch.path().join("lake");
    assert_eq!(sql(&lake, "CREATE TABLE t AS SELECT 1 AS a").0, 0);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let chunks: Vec<_> = cases.chunks(cases.len().div_ceil(3)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let lake = &lake;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for (name, statement) in chunk {
                        let (code, _, err) = sql(lake, statement);
                        let clean = code == 1
                            && err.starts_with("error: ")
                            && !err.contains("panicked")
                            && !err.contains("RUST_BACKTRACE")
                            && !err.contains("Kiln panicked");
                        if !clean {
                            failures.push(format!("{name}: exit {code}, stderr: {err}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The seeded table is intact after all of that.
    let (code, out, _) = sql(&lake, "SELECT a FROM t");
    assert_eq!(code, 0);
    assert!(out.contains("| 1 |"), "{out}");
}

/// SIGKILL during `CREATE OR REPLACE TABLE ... AS` leaves the previous table
/// exactly as it was, and the next write removes the dead staging directory.
#[test]
fn killed_ctas_leaves_no_partial_table() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    assert_eq!(sql(&lake, "CREATE TABLE big AS SELECT 1 AS n").0, 0);
    let script = scratch.path().join("big.sql");
    std::fs::write(
        &script,
        "CREATE OR REPLACE TABLE big AS \
         SELECT a.n * 100000 + b.n AS n, repeat('x', 50) AS pad \
         FROM (SELECT unnest(range(0, 400)) AS n) a \
         CROSS JOIN (SELECT unnest(range(0, 400)) AS n) b;",
    )
    .unwrap();
    // Killed with its files written to the staging directory, just before
    // publishing (the failpoint waits there).
    let mut child = kiln_direct()
        .arg("run")
        .arg(&script)
        .arg("--lake")
        .arg(&lake)
        .env("KILN_FAILPOINT", "before-publish")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let table_dir = lake.join("big");
    wait_for_failpoint(&mut child, "before-publish");
    let staging_with_files = std::fs::read_dir(&table_dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().starts_with("_staging-")
                && std::fs::read_dir(e.path())
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
        });
    assert!(staging_with_files, "the write staged its files");
    child.kill().unwrap();
    child.wait().unwrap();

    let (code, out, err) = sql(&lake, "SELECT count(*) AS c, max(n) AS m FROM big");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("| 1 | 1 |"), "the old table is intact: {out}");

    assert_eq!(sql(&lake, "INSERT INTO big VALUES (2)").0, 0);
    let leftovers: Vec<_> = std::fs::read_dir(&table_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the published snapshot remains: {leftovers:?}"
    );
    assert!(leftovers[0].starts_with('v'));
}

/// A model trained by one `kiln` process predicts identically in two later,
/// separate processes (weights and card loaded from the lake).
#[test]
fn models_predict_identically_in_fresh_processes() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let (code, _, err) = sql(
        &lake,
        "CREATE TABLE pts AS SELECT CAST(n % 17 AS DOUBLE) / 8.5 - 1.0 AS a, CAST(n % 11 AS DOUBLE) / 5.5 - 1.0 AS b \
         FROM (SELECT unnest(range(0, 374)) AS n); \
         TRAIN MODEL m USING mlp OPTIONS (hidden_units = [8], epochs = 3, seed = 5) LABEL b AS SELECT a, b FROM pts",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("epoch 3/3"), "progress lines: {err}");
    let query = "SELECT a, predict('m', a) AS p FROM pts ORDER BY a LIMIT 20";
    let first = run(kiln()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg(format!("--command={query}")));
    let second = run(kiln()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg(format!("--command={query}")));
    assert_eq!(first.0, 0, "{}", first.2);
    assert_eq!(first.1, second.1);
    assert_eq!(first.1.lines().count(), 21);
}
