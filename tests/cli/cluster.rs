//! Cluster mode with real processes: `kiln scheduler` and `kiln executor`
//! on 127.0.0.1 with ephemeral ports, a client session connected with
//! `--cluster`-equivalent options. Every process is killed when its
//! [`TestCluster`] drops, and every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_sql::{KilnSession, SessionOptions, StatementResult};

use crate::common::{repo_root, rows, session};
use crate::datafusion_replay::{only_requested, replay_suite, Source, Target};
use crate::kiln_direct;
use crate::slt::{run_suite, Guard};

const TOKEN: &str = "kiln-test-secret";

/// A scheduler and executors as child processes sharing one lake.
pub struct TestCluster {
    pub lake: PathBuf,
    pub port: u16,
    scheduler: Child,
    executors: Vec<Executor>,
    executor_timeout: u64,
    /// Certificates when the cluster serves TLS.
    tls: Option<TestCerts>,
}

/// A CA and a server certificate for localhost / 127.0.0.1, as PEM files.
pub struct TestCerts {
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCerts {
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let certs = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&certs.ca, ca.pem()).unwrap();
        std::fs::write(&certs.cert, server.pem()).unwrap();
        std::fs::write(&certs.key, server_key.serialize_pem()).unwrap();
        certs
    }

    fn server_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--tls-cert".into(),
            self.cert.clone().into(),
            "--tls-key".into(),
            self.key.clone().into(),
        ]
    }
}

struct Executor {
    child: Child,
    /// Lines of the executor's log (Ballista's "Received task" among them).
    log: mpsc::Receiver<String>,
}

impl TestCluster {
    /// Starts a scheduler that declares executors lost after
    /// `executor_timeout` seconds, and `executors` executors with one task
    /// slot each.
    pub fn start(lake: &Path, executors: usize, executor_timeout: u64) -> Self {
        Self::start_with(lake, executors, executor_timeout, None)
    }

    pub fn start_with(
        lake: &Path,
        executors: usize,
        executor_timeout: u64,
        tls: Option<TestCerts>,
    ) -> Self {
        let (scheduler, port) = Self::start_scheduler(lake, executor_timeout, None, tls.as_ref());
        let mut cluster = Self {
            lake: lake.to_path_buf(),
            port,
            scheduler,
            executors: vec![],
            executor_timeout,
            tls,
        };
        for _ in 0..executors {
            cluster.add_executor();
        }
        cluster
    }

    fn start_scheduler(
        lake: &Path,
        executor_timeout: u64,
        port: Option<u16>,
        tls: Option<&TestCerts>,
    ) -> (Child, u16) {
        let mut scheduler = kiln_direct()
            .arg("--lake")
            .arg(lake)
            .args(["scheduler", "--bind"])
            .arg(format!("127.0.0.1:{}", port.unwrap_or(0)))
            .args(["--flight-sql", "--executor-timeout"])
            .arg(executor_timeout.to_string())
            .args(tls.map(TestCerts::server_args).unwrap_or_default())
            .env("KILN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln scheduler starts");
        let line = first_line(scheduler.stdout.take().unwrap(), "listening on");
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in scheduler output: {line}"));
        (scheduler, port)
    }

    pub fn add_executor(&mut self) {
        let tls_args: Vec<std::ffi::OsString> = match &self.tls {
            Some(certs) => {
                let mut args = certs.server_args();
                args.extend(["--tls-ca".into(), certs.ca.clone().into()]);
                args
            }
            None => vec![],
        };
        let mut child = kiln_direct()
            .arg("--lake")
            .arg(&self.lake)
            .args(["executor", "--bind", "127.0.0.1:0", "--slots", "1"])
            .args(tls_args)
            .arg("--scheduler")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("KILN_TOKEN", TOKEN)
            .env("RUST_LOG", "ballista_executor::execution_loop=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln executor starts");
        first_line(child.stdout.take().unwrap(), "serving on");
        let log = log_lines(child.stderr.take().unwrap());
        self.executors.push(Executor { child, log });
    }

    pub fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// Client options: this cluster, its token, the repository and `extra`
    /// allowed for external tables.
    pub fn options(&self, extra: &[&Path]) -> SessionOptions {
        let mut options = SessionOptions::new(&self.lake);
        options.cluster = Some(self.url());
        options.token = Some(TOKEN.to_string());
        options.tls_ca = self.tls.as_ref().map(|c| c.ca.clone());
        options.target_partitions = Some(2);
        options.progress = false;
        options.allowed_paths = std::iter::once(repo_root())
            .chain(extra.iter().map(|p| p.to_path_buf()))
            .collect();
        options
    }

    pub async fn session(&self, extra: &[&Path]) -> KilnSession {
        kiln_cluster::open(self.options(extra))
            .await
            .expect("cluster session opens")
    }

    /// Blocks until executor `index` logs that it received a task, then
    /// SIGKILLs it. Returns false if no task arrived within `limit`.
    pub fn kill_executor_when_busy(&mut self, index: usize, limit: Duration) -> bool {
        let executor = &mut self.executors[index];
        let deadline = Instant::now() + limit;
        let mut busy = false;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match executor.log.recv_timeout(left) {
                Ok(line) if line.contains("Received task") => {
                    busy = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = executor.child.kill();
        let _ = executor.child.wait();
        busy
    }

    pub fn kill_scheduler(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }

    /// A new scheduler on the same port (executors reconnect to it).
    pub fn restart_scheduler(&mut self) {
        let (scheduler, _) = Self::start_scheduler(
            &self.lake,
            self.executor_timeout,
            Some(self.port),
            self.tls.as_ref(),
        );
        self.scheduler = scheduler;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
        for executor in &mut self.executors {
            let _ = executor.child.kill();
            let _ = executor.child.wait();
        }
    }
}

/// The first line of `out` containing `marker` (30 s at most).
fn first_line(out: impl std::io::Read + Send + 'static, marker: &'static str) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains(marker) {
                let _ = tx.send(line);
                break;
            }
        }
        // Keep draining so the process never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no '{marker}' line within 30 s (or the process exited)"))
}

fn log_lines(err: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

async fn run(session: &KilnSession, sql: &str) -> StatementResult {
    session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows as text, sorted; floats compared later with a tolerance.
fn sorted_rows(result: &StatementResult) -> Vec<Vec<String>> {
    let mut out = rows(result);
    out.sort();
    out
}

fn assert_same_rows(what: &str, a: &[Vec<String>], b: &[Vec<String>]) {
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
    for (ra, rb) in a.iter().zip(b) {
        for (ca, cb) in ra.iter().zip(rb) {
            let same = ca == cb
                || match (ca.parse::<f64>(), cb.parse::<f64>()) {
                    (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                    _ => false,
                };
            assert!(same, "{what}: {ra:?} vs {rb:?}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn conformance_suite_on_a_cluster_matches_the_embedded_results() {
    // errors.slt pins the embedded cluster's exact error texts; the rest of
    // the suite runs unchanged against scheduler + 2 executor processes.
    let failures = runtime().block_on(run_suite(
        |file| !file.ends_with("errors.slt"),
        |lake, scratch| async move {
            std::fs::create_dir_all(&lake).unwrap();
            let cluster = TestCluster::start(&lake, 2, 30);
            let session = cluster.session(&[&scratch]).await;
            (session, Box::new(cluster) as Guard)
        },
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// DataFusion's own files replayed on the cluster (the embedded cluster
/// replays all of them, in kiln-sql's tests): the statements whose plans
/// cross stage boundaries — joins, subqueries, set operations, windows,
/// limits — and the basics.
const CLUSTER_REPLAY_FILES: &[&str] = &[
    "aggregate.slt",
    "cte.slt",
    "distinct_on.slt",
    "group_by.slt",
    "joins.slt",
    "window.slt",
    "select.slt",
    "limit.slt",
    "join_disable_repartition_joins.slt",
    "subquery.slt",
    "union.slt",
    "intersection.slt",
    "order.slt",
    "window_limits.slt",
];

#[test]
fn datafusion_sqllogictest_files_give_datafusion_answers_on_a_cluster() {
    let Some(source) = Source::locate() else {
        let fetch = "run tests/datafusion-slt/fetch.sh (CI does) to fetch DataFusion's .slt files";
        assert!(std::env::var_os("CI").is_none(), "{fetch}");
        eprintln!("skipped: {fetch}");
        return;
    };
    let all = source.files();
    // $KILN_REPLAY_ONLY picks among all of DataFusion's files here too.
    let files = if std::env::var_os("KILN_REPLAY_ONLY").is_some() {
        only_requested(all.clone())
    } else {
        CLUSTER_REPLAY_FILES.iter().map(|f| f.to_string()).collect()
    };
    let missing: Vec<&String> = files.iter().filter(|f| !all.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "not among DataFusion's files: {missing:?}"
    );
    let (fixtures, crate_dir) = (source.fixtures.clone(), source.crate_dir.clone());
    let outcome = runtime().block_on(replay_suite(&source, &files, "cluster", 1, |dir| {
        let (fixtures, crate_dir) = (fixtures.clone(), crate_dir.clone());
        async move {
            let lake = dir.join("lake");
            std::fs::create_dir_all(&lake).unwrap();
            let cluster = TestCluster::start(&lake, 2, 30);
            let session = cluster.session(&[&dir, &fixtures, &crate_dir]).await;
            Target::Kiln {
                session,
                _guard: Box::new(cluster),
            }
        }
    }));
    if let Err(failures) = outcome {
        panic!("{failures}");
    }
}

#[test]
fn tpch_and_training_give_the_same_results_as_embedded() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let csv = scratch.path().join("csv");
        let lake = scratch.path().join("lake");
        kiln_tpch::generate_csv(&csv, 0.01, 2).unwrap();
        let embedded = session(&lake, 2).await;
        for (table, _) in kiln_tpch::TABLES {
            let ddl = kiln_tpch::csv_table_ddl(table, &format!("{table}_csv"), &csv).unwrap();
            run(&embedded, &ddl).await;
            run(
                &embedded,
                &format!("CREATE TABLE {table} AS SELECT * FROM {table}_csv"),
            )
            .await;
        }
        run(
            &embedded,
            "CREATE TABLE points AS SELECT CAST(n % 13 AS DOUBLE) / 13.0 AS x1, \
             CAST(n % 7 AS DOUBLE) / 7.0 AS x2, \
             CASE WHEN (n % 13) * 7 > (n % 7) * 13 THEN 'above' ELSE 'below' END AS side \
             FROM (SELECT unnest(range(0, 4000)) AS n)",
        )
        .await;
        let cluster = TestCluster::start(&lake, 2, 30);
        let remote = cluster.session(&[&csv]).await;
        for n in 1..=22 {
            let sql = kiln_tpch::query(n, 0.01).unwrap();
            let a = sorted_rows(&run(&embedded, &sql).await);
            let b = sorted_rows(&run(&remote, &sql).await);
            assert_same_rows(&format!("TPC-H q{n}"), &a, &b);
        }
        // Same answers, different stages: one in-memory stage embedded, a
        // stage per exchange on the cluster, and EXPLAIN says which.
        let explain = format!("EXPLAIN {}", kiln_tpch::query(3, 0.01).unwrap());
        let stages = |result: &StatementResult| {
            let text = rows(result).concat().join("\n");
            let distributed = text[text.find("distributed_plan").unwrap()..].to_string();
            (
                distributed.matches("Stage[").count(),
                distributed.contains("LocalStageExec"),
            )
        };
        assert_eq!(stages(&run(&embedded, &explain).await), (1, true));
        let (cluster_stages, local) = stages(&run(&remote, &explain).await);
        assert!(
            cluster_stages > 1 && !local,
            "{cluster_stages} stages on the cluster"
        );

        let train = |name: &str| {
            format!(
                "TRAIN MODEL {name} USING mlp OPTIONS (hidden_units = [8], epochs = 4, seed = 7, \
                 validation_fraction = 0.2) LABEL side AS SELECT x1, x2, side FROM points"
            )
        };
        run(&embedded, &train("local_model")).await;
        run(&remote, &train("cluster_model")).await;
        let scores = "SELECT x1, x2, predict_proba('local_model', x1, x2) AS a, \
                      predict_proba('cluster_model', x1, x2) AS b FROM points";
        for session in [&embedded, &remote] {
            let result = run(session, scores).await;
            for row in rows(&result) {
                let (a, b): (f64, f64) = (row[2].parse().unwrap(), row[3].parse().unwrap());
                assert!((a - b).abs() < 1e-5, "models differ: {row:?}");
            }
        }
        let predicted = run(
            &remote,
            "PREDICT MODEL cluster_model AS SELECT x1, x2 FROM points",
        )
        .await;
        assert_eq!(predicted.row_count(), 4000);
        let metrics = run(
            &remote,
            "EVALUATE MODEL cluster_model AS SELECT x1, x2, side FROM points",
        )
        .await;
        assert!(rows(&metrics).iter().any(|r| r[0] == "accuracy"));
    });
}

/// A self-join over 2M rows: two shuffles, several seconds in a debug build.
const SHUFFLE_QUERY: &str = "SELECT count(*) AS groups, sum(c) AS pairs FROM \
     (SELECT a.g, count(*) AS c FROM big a JOIN big b ON a.n = b.n + 1 GROUP BY a.g)";

async fn create_big(session: &KilnSession) {
    run(
        session,
        "CREATE TABLE big AS SELECT n, n % 1000 AS g FROM (SELECT unnest(range(0, 1000000)) AS n)",
    )
    .await;
    run(
        session,
        "INSERT INTO big SELECT n, n % 1000 AS g FROM (SELECT unnest(range(1000000, 2000000)) AS n)",
    )
    .await;
}

#[test]
fn a_killed_executor_does_not_fail_a_shuffle_query_or_a_training_round() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let lake = scratch.path().join("lake");
        let embedded = session(&lake, 2).await;
        create_big(&embedded).await;
        run(
            &embedded,
            "CREATE TABLE points AS SELECT CAST(n % 13 AS DOUBLE) / 13.0 AS x1, \
             CAST(n % 7 AS DOUBLE) / 7.0 AS x2, CAST((n % 13) * 7 > (n % 7) * 13 AS INT) AS y \
             FROM (SELECT unnest(range(0, 20000)) AS n)",
        )
        .await;
        let train = |name: &str| {
            format!(
                "TRAIN MODEL {name} USING logistic_regression OPTIONS (epochs = 6, seed = 1) \
                 LABEL y AS SELECT x1, x2, y FROM points"
            )
        };

        // (a) a shuffle-heavy query.
        let mut cluster = TestCluster::start(&lake, 2, 3);
        let remote = cluster.session(&[]).await;
        // The reference model, trained on the intact cluster: same seed, same
        // partitioning as the run that loses an executor.
        run(&remote, &train("reference")).await;
        let query = tokio::spawn({
            let options = cluster.options(&[]);
            async move {
                let session = kiln_cluster::open(options).await.unwrap();
                session.execute(SHUFFLE_QUERY).await
            }
        });
        let killed_busy = tokio::task::block_in_place(|| {
            cluster.kill_executor_when_busy(0, Duration::from_secs(60))
        });
        assert!(killed_busy, "executor 0 never received a task");
        let result = tokio::time::timeout(Duration::from_secs(120), query)
            .await
            .expect("the query finishes after losing an executor")
            .unwrap()
            .expect("the query succeeds on the surviving executor");
        assert_eq!(rows(&result), vec![vec!["1000".to_string(), "1999999".to_string()]]);

        // (b) a training round: a fresh executor joins, then one dies mid-training.
        cluster.add_executor();
        let training = tokio::spawn({
            let options = cluster.options(&[]);
            let sql = train("survivor");
            async move {
                let session = kiln_cluster::open(options).await.unwrap();
                session.execute(&sql).await
            }
        });
        let killed_busy = tokio::task::block_in_place(|| {
            cluster.kill_executor_when_busy(2, Duration::from_secs(60))
        });
        assert!(killed_busy, "the new executor never received a task");
        tokio::time::timeout(Duration::from_secs(180), training)
            .await
            .expect("training finishes after losing an executor")
            .unwrap()
            .expect("training succeeds on the surviving executor");
        let compare = run(
            &remote,
            "SELECT max(abs(predict_proba('reference', x1, x2) - predict_proba('survivor', x1, x2))) FROM points",
        )
        .await;
        let gap: f64 = rows(&compare)[0][0].parse().unwrap();
        let describe = |name: &str| format!("DESCRIBE MODEL {name}");
        assert!(
            gap < 1e-6,
            "model trained through a lost executor differs by {gap}:\n{:?}\n{:?}",
            rows(&run(&remote, &describe("reference")).await),
            rows(&run(&remote, &describe("survivor")).await)
        );
    });
}

#[test]
fn a_killed_scheduler_fails_the_client_clearly_and_publishes_nothing() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let lake = scratch.path().join("lake");
        let embedded = session(&lake, 2).await;
        create_big(&embedded).await;
        drop(embedded);
        let mut cluster = TestCluster::start(&lake, 2, 30);
        let ctas = "CREATE TABLE joined AS SELECT a.g, count(*) AS c FROM big a JOIN big b \
                    ON a.n = b.n + 1 GROUP BY a.g";
        let job = tokio::spawn({
            let options = cluster.options(&[]);
            async move {
                let session = kiln_cluster::open(options).await.unwrap();
                session.execute(ctas).await
            }
        });
        tokio::task::block_in_place(|| {
            cluster.kill_executor_when_busy_then_scheduler(Duration::from_secs(60))
        });
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(60), job)
            .await
            .expect("the client learns of the lost scheduler within 60 s")
            .unwrap();
        let error = outcome.expect_err("the statement fails").to_string();
        assert!(
            error.contains("lost the connection to the Kiln scheduler"),
            "{error} (after {:?})",
            started.elapsed()
        );
        let catalog = std::fs::read_to_string(lake.join("_kiln/catalog.json")).unwrap();
        assert!(!catalog.contains("\"joined\""), "{catalog}");

        cluster.restart_scheduler();
        let remote = cluster.session(&[]).await;
        let done = tokio::time::timeout(Duration::from_secs(120), remote.execute(ctas))
            .await
            .expect("the re-run finishes")
            .expect("the re-run succeeds");
        assert!(done.message.unwrap_or_default().contains("1000 rows"));
    });
}

impl TestCluster {
    /// Waits until executor 0 runs a task of the current job, then kills the scheduler.
    fn kill_executor_when_busy_then_scheduler(&mut self, limit: Duration) {
        let executor = &mut self.executors[0];
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match executor.log.recv_timeout(left) {
                Ok(line) if line.contains("Received task") => break,
                Ok(_) => {}
                Err(_) => panic!("executor 0 never received a task"),
            }
        }
        self.kill_scheduler();
    }
}

#[test]
fn clients_and_executors_without_the_token_are_refused() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let cluster = TestCluster::start(scratch.path(), 1, 30);
        for (token, expected) in [
            (None, "requires a token"),
            (Some("wrong"), "token presented is wrong"),
        ] {
            let mut options = cluster.options(&[]);
            options.token = token.map(str::to_string);
            let error = kiln_cluster::open(options)
                .await
                .err()
                .expect("refused")
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let output = kiln_direct()
            .arg("--lake")
            .arg(scratch.path())
            .args(["executor", "--bind", "127.0.0.1:0", "--scheduler"])
            .arg(format!("127.0.0.1:{}", cluster.port))
            .env("KILN_TOKEN", "wrong")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains("refused the connection"), "{err}");

        let remote = cluster.session(&[]).await;
        let result = run(&remote, "SELECT 41 + 1 AS answer").await;
        assert_eq!(rows(&result), vec![vec!["42".to_string()]]);
        // Health needs no token.
        let health = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/health').read().decode())",
                cluster.port
            ))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&health.stdout).contains("ok"));
    });
}

#[test]
fn external_tables_outside_the_allowed_roots_are_refused() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let lake = scratch.path().join("lake");
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("t.csv"), "a\n1\n").unwrap();
        let cluster = TestCluster::start(&lake, 1, 30);
        let mut options = cluster.options(&[]);
        options.allowed_paths.clear();
        let confined = kiln_cluster::open(options).await.unwrap();
        let ddl = format!(
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}/t.csv' OPTIONS ('format.has_header' 'true')",
            outside.display()
        );
        let error = confined.execute(&ddl).await.unwrap_err().to_string();
        assert!(
            error.contains("outside the allowed roots") && error.contains("--allow-path"),
            "{error}"
        );
        let sneaky = format!(
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}/../outside/t.csv'",
            lake.display()
        );
        assert!(confined.execute(&sneaky).await.is_err());
        let allowed = cluster.session(&[&outside]).await;
        run(&allowed, &ddl).await;
        let result = run(&allowed, "SELECT a FROM t").await;
        assert_eq!(rows(&result), vec![vec!["1".to_string()]]);
    });
}

#[test]
fn flight_sql_clients_query_the_lake_through_the_scheduler() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let lake = scratch.path().join("lake");
        let embedded = session(&lake, 2).await;
        run(
            &embedded,
            "CREATE TABLE sales AS SELECT * FROM (VALUES ('north', 10), ('south', 32), ('north', 5)) AS t(region, amount)",
        )
        .await;
        drop(embedded);
        let cluster = TestCluster::start(&lake, 1, 30);
        let script = repo_root().join("tests/cli/flight_sql_client.py");
        let output = std::process::Command::new("timeout")
            .args(["120", "python3"])
            .arg(&script)
            .arg(format!("grpc://127.0.0.1:{}", cluster.port))
            .arg(TOKEN)
            .output()
            .expect("python3 runs");
        let out = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "stdout: {out}\nstderr: {err}");
        assert!(out.contains("north,15") && out.contains("south,32"), "{out}");
        assert!(out.contains("refused without token"), "{out}");
    });
}

#[test]
fn a_cluster_serving_tls_runs_shuffles_and_training_and_refuses_plain_clients() {
    runtime().block_on(async {
        let scratch = tempfile::tempdir().unwrap();
        let lake = scratch.path().join("lake");
        std::fs::create_dir_all(&lake).unwrap();
        let certs = TestCerts::generate(&scratch.path().join("certs"));
        let cluster = TestCluster::start_with(&lake, 2, 30, Some(certs));
        let remote = cluster.session(&[]).await;
        run(
            &remote,
            "CREATE TABLE t AS SELECT n, n % 3 AS g, CAST(n % 5 AS DOUBLE) AS x, \
             CAST(n % 5 > 2 AS INT) AS y FROM (SELECT unnest(range(0, 3000)) AS n)",
        )
        .await;
        // A GROUP BY shuffles between the executors (over TLS).
        let groups = run(&remote, "SELECT g, count(*) FROM t GROUP BY g ORDER BY g").await;
        assert_eq!(
            rows(&groups),
            vec![
                vec!["0".to_string(), "1000".to_string()],
                vec!["1".to_string(), "1000".to_string()],
                vec!["2".to_string(), "1000".to_string()],
            ]
        );
        run(
            &remote,
            "TRAIN MODEL m USING logistic_regression OPTIONS (epochs = 2) LABEL y AS SELECT x, y FROM t",
        )
        .await;
        let scored = run(&remote, "SELECT count(predict('m', x)) FROM t").await;
        assert_eq!(rows(&scored), vec![vec!["3000".to_string()]]);

        let mut plain = cluster.options(&[]);
        plain.tls_ca = None;
        let error = kiln_cluster::open(plain).await.err().expect("refused").to_string();
        assert!(error.contains("pass --tls-ca"), "{error}");
        let mut wrong_ca = cluster.options(&[]);
        let other = TestCerts::generate(&scratch.path().join("other"));
        wrong_ca.tls_ca = Some(other.ca.clone());
        let error = kiln_cluster::open(wrong_ca).await.err().expect("refused").to_string();
        assert!(error.contains("certificate"), "{error}");
    });
}

#[test]
fn sigterm_stops_the_scheduler_and_executors_gracefully() {
    let scratch = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(scratch.path(), 1, 30);
    let stop = |child: &mut Child, what: &str| {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{what} exit status");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    stop(&mut cluster.executors[0].child, "executor");
    stop(&mut cluster.scheduler, "scheduler");
}

/// `kiln jobs run` against a cluster: the example nightly pipeline (ingest,
/// check with quarantine, partition overwrite, warm-started training,
/// scoring) runs on the executors and publishes what the embedded run does.
#[test]
fn the_example_nightly_job_runs_on_a_cluster() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let cluster = TestCluster::start(&lake, 2, 30);
    let output = kiln_direct()
        .arg("--lake")
        .arg(&lake)
        .arg("--cluster")
        .arg(format!("df://127.0.0.1:{}", cluster.port))
        .args(["--token", TOKEN, "--allow-path"])
        .arg(repo_root())
        .args(["jobs", "run", "nightly", "--date", "2026-11-01"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("ingested 3 new files (427 rows)"), "{err}");
    assert!(
        err.contains("inserted 141 rows into activity_features"),
        "{err}"
    );
    assert!(err.contains("inserted 141 rows into churn_scores"), "{err}");
    assert!(
        err.contains("job nightly for 2026-11-01 succeeded"),
        "{err}"
    );
}
