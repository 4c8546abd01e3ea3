//! All 22 TPC-H queries at SF 0.01 through the embedded Ballista cluster, on
//! data ingested from CSV into lake Parquet by Kiln itself.

use crate::common::session;

/// Row counts at SF 0.01 with the validation parameters, cross-checked with DuckDB
/// on the same generated data.
const EXPECTED_ROWS: [usize; 22] = [
    4, 4, 10, 5, 5, 1, 4, 2, 173, 20, 1, 2, 33, 1, 1, 296, 1, 2, 1, 1, 1, 7,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_sf001_all_queries_return_expected_row_counts() {
    let scratch = tempfile::tempdir().unwrap();
    let csv = scratch.path().join("csv");
    kiln_tpch::generate_csv(&csv, 0.01, 2).unwrap();
    let session = session(&scratch.path().join("lake"), 2).await;
    for (table, _) in kiln_tpch::TABLES {
        let ddl = kiln_tpch::csv_table_ddl(table, &format!("{table}_csv"), &csv).unwrap();
        session.execute(&ddl).await.unwrap();
        session
            .execute(&format!(
                "CREATE TABLE {table} AS SELECT * FROM {table}_csv"
            ))
            .await
            .unwrap();
    }
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    for n in 1..=22 {
        let sql = kiln_tpch::query(n, 0.01).unwrap();
        match session.execute(&sql).await {
            Ok(result) => counts.push(result.row_count()),
            Err(e) => {
                counts.push(usize::MAX);
                failures.push(format!("q{n}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "failed queries: {failures:#?}");
    assert_eq!(counts, EXPECTED_ROWS, "row counts per query (q1..q22)");
}
