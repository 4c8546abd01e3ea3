//! Governance checks beyond the SQL suite (`sql/slt/checks.slt`): every
//! constraint of a check is measured by one scan of its table.

use crate::common::{rows, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_constraints_of_a_check_share_one_scan() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(
        "CREATE TABLE events AS SELECT n AS id, n % 7 AS kind, CAST(n AS VARCHAR) AS label \
         FROM (SELECT unnest(range(0, 5000)) AS n)",
    )
    .await
    .unwrap();
    s.execute(
        "CREATE CHECK events_ok ON events (EXPECT NOT NULL (id, kind), EXPECT UNIQUE (id), \
         EXPECT kind BETWEEN 0 AND 6, EXPECT kind IN (0, 1, 2, 3, 4, 5, 6), \
         EXPECT label MATCHES '^[0-9]+$', EXPECT ROW (id >= 0), EXPECT ROW_COUNT BETWEEN 1 AND 10000)",
    )
    .await
    .unwrap();
    let check = s.lake().catalog().unwrap().checks["events_ok"].clone();
    let query = kiln_sql::exec::checks::check_query(&check);
    let plan = s.execute(&format!("EXPLAIN {query}")).await.unwrap();
    let text: String = rows(&plan)
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let physical: String = text
        .lines()
        .skip_while(|l| !l.starts_with("physical_plan"))
        .take_while(|l| !l.starts_with("distributed_plan"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        physical.matches("DataSourceExec").count(),
        1,
        "one scan for all constraints:\n{physical}"
    );
    let result = s.execute("RUN CHECK events_ok").await.unwrap();
    assert_eq!(result.row_count(), 8, "one row per measured value");
    assert!(
        rows(&result).iter().all(|r| r[6] == "pass"),
        "{:?}",
        rows(&result)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_card_lists_the_checks_that_ran_before_training() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(
        "CREATE TABLE pts AS SELECT CAST(n AS DOUBLE) AS x, CAST(n % 2 AS INT) AS y \
         FROM (SELECT unnest(range(0, 100)) AS n)",
    )
    .await
    .unwrap();
    s.execute(
        "CREATE CHECK pts_labels ON pts (EXPECT y IN (0, 1), \
         EXPECT ROW_COUNT BETWEEN 1 AND 50 SEVERITY WARN)",
    )
    .await
    .unwrap();
    s.execute("TRAIN MODEL m USING logistic_regression OPTIONS (epochs = 1) LABEL y AS SELECT x, y FROM pts")
        .await
        .unwrap();
    let warnings = s.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("EXPECT ROW_COUNT BETWEEN 1 AND 50")),
        "{warnings:?}"
    );
    let described = rows(&s.execute("DESCRIBE MODEL m").await.unwrap());
    let checks = &described.iter().find(|r| r[0] == "checks").unwrap()[1];
    assert_eq!(
        checks,
        "pts_labels: y IN (0, 1) = 0 (pass); pts_labels: ROW_COUNT BETWEEN 1 AND 50 = 100 (fail)"
    );
}
