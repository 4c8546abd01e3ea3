//! Lake behaviour across sessions: the catalog persists, writes publish
//! snapshots atomically, and every query runs through Ballista.

use crate::common::{rows, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_persist_across_sessions() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let csv = scratch.path().join("people.csv");
    std::fs::write(&csv, "id,name\n1,ann\n2,bob\n").unwrap();
    {
        let s = session(&lake, 2).await;
        s.execute(&format!(
            "CREATE EXTERNAL TABLE people STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
            csv.display()
        ))
        .await
        .unwrap();
        s.execute("CREATE TABLE copy PARTITIONED BY (name) AS SELECT * FROM people")
            .await
            .unwrap();
    }
    let s = session(&lake, 2).await;
    assert!(s.take_warnings().is_empty());
    let result = s
        .execute("SELECT p.id, c.name FROM people p JOIN copy c ON p.id = c.id ORDER BY p.id")
        .await
        .unwrap();
    assert_eq!(rows(&result), vec![vec!["1", "ann"], vec!["2", "bob"]]);

    // An external table whose file vanished is reported, not fatal.
    std::fs::remove_file(&csv).unwrap();
    let s = session(&lake, 2).await;
    let warnings = s.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("'people'")),
        "{warnings:?}"
    );
    assert_eq!(
        rows(&s.execute("SELECT count(*) FROM copy").await.unwrap()),
        vec![vec!["2"]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_insert_leaves_the_published_snapshot_untouched() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute("CREATE TABLE t AS SELECT 1 AS v").await.unwrap();
    let before = s.lake().catalog().unwrap();
    let err = s
        .execute(
            "INSERT INTO t SELECT CAST(x AS BIGINT) FROM (SELECT 'x' AS x UNION ALL SELECT '2')",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Cannot cast"), "{err}");
    assert_eq!(s.lake().catalog().unwrap(), before, "catalog unchanged");
    let table_dir = s.lake().table_dir("t");
    let entries: Vec<_> = std::fs::read_dir(&table_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, vec!["v1".to_string()], "no staging left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_run_as_ballista_jobs() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute("CREATE TABLE t AS VALUES (1), (2)")
        .await
        .unwrap();
    let explain = s
        .execute("EXPLAIN SELECT sum(column1) FROM t")
        .await
        .unwrap();
    let text = rows(&explain).concat().join("\n");
    assert!(text.contains("distributed_plan"), "{text}");
    assert!(text.contains("ShuffleWriterExec"), "{text}");
}

/// On the embedded cluster a statement is one Ballista stage: its exchanges
/// (here a hash repartition for the join and the aggregate) run in memory
/// inside the stage's one task, and EXPLAIN shows them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_statements_run_as_one_stage() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute("CREATE TABLE a AS SELECT column1 AS k, column2 AS v FROM (VALUES (1, 'x'), (2, 'y'), (3, 'x'))")
        .await
        .unwrap();
    s.execute("CREATE TABLE b AS SELECT column1 AS k, column2 AS w FROM (VALUES (1, 10), (3, 30), (3, 31))")
        .await
        .unwrap();
    let query = "SELECT v, sum(w) AS total FROM a JOIN b ON a.k = b.k GROUP BY v ORDER BY v";
    let explain = s.execute(&format!("EXPLAIN {query}")).await.unwrap();
    let text = rows(&explain).concat().join("\n");
    let distributed = &text[text.find("distributed_plan").expect("a distributed plan")..];
    assert_eq!(distributed.matches("Stage[").count(), 1, "{distributed}");
    assert!(distributed.contains("LocalStageExec"), "{distributed}");
    assert!(distributed.contains("RepartitionExec"), "{distributed}");
    assert_eq!(
        rows(&s.execute(query).await.unwrap()),
        vec![vec!["x".to_string(), "71".to_string()]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripts_report_the_failing_statement_line() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    let mut seen = 0;
    let err = s
        .execute_script(
            "SELECT 1;\n-- comment\n\nSELECT *\nFROM nowhere;\nSELECT 3;",
            |_, _| seen += 1,
        )
        .await
        .unwrap_err();
    assert_eq!(seen, 1, "stops at the failing statement");
    assert_eq!(err.line, 4);
    assert!(
        err.error.to_string().contains("table 'nowhere' not found"),
        "{}",
        err.error
    );

    let err = s
        .execute_script("SELECT 1;\n\nSELECT 1 +;", |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.line, 3);
    assert!(
        err.error.to_string().contains("at Line: 3, Column: 11"),
        "{}",
        err.error
    );
}

/// A statement whose plan carries a large constant (a folded 1M-element list)
/// still runs: the executor accepts task messages as large as Ballista's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_plans_reach_the_executor() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    let run =
        s.execute("CREATE TABLE big AS SELECT n FROM (SELECT unnest(range(0, 1000000)) AS n)");
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("no hang")
        .unwrap();
    let count = s.execute("SELECT count(*) FROM big").await.unwrap();
    assert_eq!(rows(&count), vec![vec!["1000000"]]);
}
