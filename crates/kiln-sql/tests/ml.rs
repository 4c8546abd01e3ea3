//! TRAIN MODEL end to end on the embedded Ballista cluster: codecs, partition
//! invariance, determinism, prediction paths, warm starts, and atomicity.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::logical_expr::Extension;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use kiln_sql::plan::codec::KilnLogicalCodec;
use kiln_sql::plan::logical::TrainRoundNode;
use kiln_sql::KilnSession;

use crate::common::{rows, session};

const SEPARABLE: &str = "CREATE TABLE pts AS \
    SELECT a, b, CASE WHEN a + b > 0 THEN 1 ELSE 0 END AS y FROM ( \
      SELECT CAST(n % 40 AS DOUBLE) / 20.0 - 1.0 AS a, CAST(n % 37 AS DOUBLE) / 18.5 - 1.0 AS b \
      FROM (SELECT unnest(range(0, 1480)) AS n)) WHERE abs(a + b) > 0.05";

async fn accuracy(s: &KilnSession, model: &str) -> f64 {
    let result = s
        .execute(&format!(
            "EVALUATE MODEL {model} AS SELECT a, b, y FROM pts"
        ))
        .await
        .unwrap();
    let metrics = rows(&result);
    metrics.iter().find(|r| r[0] == "accuracy").unwrap()[1]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codecs_round_trip_kiln_nodes_and_delegate_the_rest() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(SEPARABLE).await.unwrap();
    s.execute("TRAIN MODEL m USING logistic_regression OPTIONS (epochs = 1) LABEL y AS SELECT a, b, y FROM pts")
        .await
        .unwrap();
    let input = s
        .context()
        .state()
        .create_logical_plan("SELECT a, b, y FROM pts")
        .await
        .unwrap();
    let node =
        TrainRoundNode::from_bytes(input.clone(), br#"{"not":"checked here"}"#.to_vec()).unwrap();
    let extension = Extension {
        node: Arc::new(node.clone()),
    };
    let codec = KilnLogicalCodec::default();
    let mut buf = vec![];
    codec.try_encode(&extension, &mut buf).unwrap();
    assert_eq!(&buf[..4], b"KILN");
    let ctx = TaskContext::default();
    let decoded = codec
        .try_decode(&buf, std::slice::from_ref(&input), &ctx)
        .unwrap();
    let decoded = decoded
        .node
        .as_any()
        .downcast_ref::<TrainRoundNode>()
        .unwrap();
    assert_eq!(decoded, &node);

    // A future envelope version is refused with a clear message.
    buf[4] = 99;
    let err = codec
        .try_decode(&buf, std::slice::from_ref(&input), &ctx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("codec version 99"), "{err}");
    // Bytes that are not Kiln's go to Ballista's codec, which rejects garbage.
    assert!(codec.try_decode(b"\x01\x02\x03", &[input], &ctx).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_partitions_train_as_well_as_one_and_seeds_repeat() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let train = "TRAIN MODEL OR REPLACE m USING logistic_regression \
                 OPTIONS (epochs = 15, learning_rate = 0.1, seed = 3) LABEL y AS SELECT a, b, y FROM pts";
    let one = {
        let s = session(&lake, 1).await;
        s.execute(SEPARABLE).await.unwrap();
        s.execute(train).await.unwrap();
        accuracy(&s, "m").await
    };
    let s = session(&lake, 4).await;
    s.execute("CREATE OR REPLACE TABLE pts AS SELECT * FROM pts")
        .await
        .unwrap();
    s.execute(train).await.unwrap();
    let four = accuracy(&s, "m").await;
    assert!(
        one >= 0.95 && (one - four).abs() <= 0.01,
        "1 partition {one}, 4 partitions {four}"
    );

    s.execute(train).await.unwrap();
    let registry = kiln_sql::catalog::registry::ModelRegistry::new(s.lake().root());
    let (a, _) = registry.load("m", 2).unwrap();
    let (b, _) = registry.load("m", 3).unwrap();
    assert_eq!(
        a.params(),
        b.params(),
        "same seed and partitioning give the same model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predict_statement_udf_and_a_fresh_process_agree() {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let (statement, udf) = {
        let s = session(&lake, 2).await;
        s.execute(SEPARABLE).await.unwrap();
        s.execute(
            "TRAIN MODEL m USING mlp OPTIONS (epochs = 5, hidden_units = [8], seed = 1) LABEL y AS SELECT a, b, y FROM pts",
        )
        .await
        .unwrap();
        let predicted = s
            .execute("PREDICT MODEL m AS SELECT a, b FROM pts")
            .await
            .unwrap();
        let mut statement = rows(&predicted);
        statement.sort();
        let udf = s
            .execute("SELECT a, b, predict('m', a, b), predict_proba('m', a, b) FROM pts")
            .await
            .unwrap();
        let mut udf = rows(&udf);
        udf.sort();
        (statement, udf)
    };
    assert_eq!(statement.len(), udf.len());
    assert!(statement == udf, "PREDICT and predict() disagree");
    let fresh = session(&lake, 3).await;
    let again = fresh
        .execute("SELECT a, b, predict('m', a, b), predict_proba('m', a, b) FROM pts")
        .await
        .unwrap();
    let mut again = rows(&again);
    again.sort();
    assert!(again == udf, "a new session predicts differently");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_start_continues_from_the_latest_version() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(SEPARABLE).await.unwrap();
    s.execute("TRAIN MODEL m USING logistic_regression OPTIONS (epochs = 2) LABEL y AS SELECT a, b, y FROM pts WHERE a < 0")
        .await
        .unwrap();
    let before = accuracy(&s, "m").await;
    s.execute(
        "TRAIN MODEL m USING logistic_regression OPTIONS (epochs = 10, warm_start = true, learning_rate = 0.1) \
         LABEL y AS SELECT a, b, y FROM pts WHERE a >= 0",
    )
    .await
    .unwrap();
    let registry = kiln_sql::catalog::registry::ModelRegistry::new(s.lake().root());
    assert_eq!(registry.versions("m"), vec![1, 2]);
    assert_eq!(registry.card("m", 2).unwrap().warm_started_from, Some(1));
    assert!(accuracy(&s, "m").await >= before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_training_writes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(SEPARABLE).await.unwrap();
    for bad in [
        "TRAIN MODEL m USING logistic_regression LABEL y AS SELECT a, b, y FROM pts WHERE a > 5",
        "TRAIN MODEL m USING logistic_regression OPTIONS (nope = 1) LABEL y AS SELECT a, b, y FROM pts",
        "TRAIN MODEL m USING logistic_regression LABEL y AS SELECT CAST(a AS VARCHAR) AS a, y FROM pts",
        "TRAIN MODEL m USING kmeans OPTIONS (k = 100000) AS SELECT a FROM pts LIMIT 3",
    ] {
        assert!(s.execute(bad).await.is_err(), "{bad}");
    }
    let models = scratch.path().join("lake/_models");
    let entries = std::fs::read_dir(&models).map(|d| d.count()).unwrap_or(0);
    let registry = kiln_sql::catalog::registry::ModelRegistry::new(s.lake().root());
    assert!(
        registry.names().is_empty(),
        "no model published ({entries} entries under _models)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linear_regression_recovers_coefficients_through_sql() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(
        "CREATE TABLE lin AS SELECT x1, x2, 1.5 * x1 - 2.0 * x2 + 0.75 AS y FROM ( \
           SELECT CAST(n % 50 AS DOUBLE) / 25.0 - 1.0 AS x1, CAST(n % 31 AS DOUBLE) / 15.5 - 1.0 AS x2 \
           FROM (SELECT unnest(range(0, 1550)) AS n))",
    )
    .await
    .unwrap();
    for options in [
        "solver = 'normal'",
        "optimizer = 'sgd', learning_rate = 0.1, batch_size = 32, epochs = 40",
        "optimizer = 'lbfgs'",
        "standardize = false",
    ] {
        s.execute(&format!(
            "TRAIN MODEL OR REPLACE lin USING linear_regression OPTIONS ({options}) LABEL y AS SELECT x1, x2, y FROM lin"
        ))
        .await
        .unwrap();
        let registry = kiln_sql::catalog::registry::ModelRegistry::new(s.lake().root());
        let (model, _) = registry
            .load("lin", registry.latest("lin").unwrap())
            .unwrap();
        let (mut p, intercept) = model.linear_coefficients().unwrap();
        p.extend(intercept);
        for (got, want) in p.iter().zip([1.5, -2.0, 0.75]) {
            assert!((got - want).abs() < 1e-3, "{options}: {p:?}");
        }
        let described = rows(&s.execute("DESCRIBE MODEL lin").await.unwrap());
        let property = |name: &str| {
            described
                .iter()
                .find(|r| r[0] == name)
                .unwrap_or_else(|| panic!("{options}: no {name} in {described:?}"))[1]
                .clone()
        };
        let standardized = !options.contains("standardize = false");
        assert_eq!(
            property("standardized"),
            standardized.to_string(),
            "{options}"
        );
        for (name, want) in [
            ("coefficient x1", 1.5),
            ("coefficient x2", -2.0),
            ("intercept", 0.75),
        ] {
            let got: f64 = property(name).parse().unwrap();
            assert!((got - want).abs() < 1e-3, "{options}: {name} = {got}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cnn_trains_on_image_vectors_from_sql() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    let csv = crate::common::repo_root().join("sql/examples/data/digits.csv");
    s.execute(&format!(
        "CREATE EXTERNAL TABLE digits_csv STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        csv.display()
    ))
    .await
    .unwrap();
    let pixels: Vec<String> = (0..64).map(|i| format!("p{i} / 16.0")).collect();
    s.execute(&format!(
        "CREATE TABLE images AS SELECT row_number() OVER () AS id, \
         arrow_cast(make_array({}), 'FixedSizeList(64, Float32)') AS pixels, digit FROM digits_csv",
        pixels.join(", ")
    ))
    .await
    .unwrap();
    s.execute(
        "TRAIN MODEL digits USING cnn OPTIONS (input_shape = [1, 8, 8], conv_layers = [[8, 3], [16, 3]], \
         hidden_units = [64], epochs = 12, batch_size = 32, learning_rate = 0.01) \
         LABEL digit AS SELECT pixels, digit FROM images WHERE id % 5 <> 0",
    )
    .await
    .unwrap();
    let result = s
        .execute("EVALUATE MODEL digits AS SELECT pixels, digit FROM images WHERE id % 5 = 0")
        .await
        .unwrap();
    let accuracy: f64 = rows(&result).iter().find(|r| r[0] == "accuracy").unwrap()[1]
        .parse()
        .unwrap();
    assert!(
        accuracy >= 0.9,
        "cnn accuracy on held-out digits: {accuracy}"
    );
    let described = rows(&s.execute("DESCRIBE MODEL digits").await.unwrap());
    assert!(
        described
            .iter()
            .any(|r| r[0] == "model_type" && r[1] == "cnn"),
        "{described:?}"
    );
    // predict() runs the convolutional network on executors too.
    let predicted = s
        .execute(
            "SELECT count(*) FROM images WHERE id % 5 = 0 AND predict('digits', pixels) = digit",
        )
        .await
        .unwrap();
    let correct: f64 = rows(&predicted)[0][0].parse().unwrap();
    assert!(
        correct / 360.0 >= 0.9,
        "{correct} of 360 predicted correctly"
    );
    let bad = s
        .execute(
            "TRAIN MODEL bad USING cnn OPTIONS (input_shape = [1, 7, 7]) LABEL digit AS SELECT pixels, digit FROM images",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("holds 49 values"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn device_cuda_without_a_gpu_is_a_clear_error_and_auto_falls_back() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(SEPARABLE).await.unwrap();
    let train = |name: &str, device: &str| {
        format!(
            "TRAIN MODEL {name} USING logistic_regression OPTIONS (epochs = 10, learning_rate = 0.1, \
             device = '{device}') LABEL y AS SELECT a, b, y FROM pts"
        )
    };
    if kiln_kernels::cuda::probe().is_err() {
        let err = s
            .execute(&train("on_gpu", "cuda"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("device = 'cuda' cannot be used here")
                && err.contains("device = 'cpu' or 'auto'"),
            "{err}"
        );
        assert!(!scratch.path().join("lake/_models/on_gpu").exists());
    }
    s.execute(&train("anywhere", "auto")).await.unwrap();
    assert!(accuracy(&s, "anywhere").await > 0.9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transform_statistics_are_fitted_stored_and_reapplied() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(
        "CREATE TABLE customers AS SELECT n AS id, CAST(20 + n % 50 AS DOUBLE) AS age, \
         CASE n % 3 WHEN 0 THEN 'NL' WHEN 1 THEN 'DE' ELSE 'FR' END AS country, \
         CASE WHEN n % 7 = 0 THEN NULL ELSE CAST(n % 100 AS DOUBLE) END AS spend, \
         CAST((n % 3 = 0 AND n % 50 > 20) AS INT) AS churned FROM (SELECT unnest(range(0, 2000)) AS n)",
    )
    .await
    .unwrap();
    s.execute(
        "TRAIN MODEL churn USING logistic_regression OPTIONS (epochs = 20, learning_rate = 0.1) \
         TRANSFORM (standard_scale(age) AS age, one_hot(country, 2) AS country, impute(spend, 'median') AS spend) \
         LABEL churned AS SELECT age, country, spend, churned FROM customers",
    )
    .await
    .unwrap();
    let card = s.registry().card("churn", 1).unwrap();
    let sql: Vec<&str> = card.transform.iter().map(|t| t.sql.as_str()).collect();
    // age: mean 44.5, population std of 20..69 = 14.43...; spend: median of the non-NULL values.
    assert!(
        sql[0].starts_with("(CAST(\"age\" AS DOUBLE) - 44.5) / 14.43"),
        "{sql:?}"
    );
    // one_hot keeps the 2 most frequent categories (DE and NL, 667 rows each;
    // FR has 666) plus the "other" slot (FR and NULL).
    assert!(
        sql[1].contains("'DE' THEN")
            && sql[1].contains("'NL' THEN")
            && !sql[1].contains("'FR' THEN"),
        "{sql:?}"
    );
    assert!(sql[1].contains("FixedSizeList(3, Float64)"), "{sql:?}");
    assert!(
        sql[2].starts_with("coalesce(CAST(\"spend\" AS DOUBLE), CAST(49.5 AS DOUBLE))"),
        "{sql:?}"
    );
    assert_eq!(
        card.features
            .iter()
            .find(|f| f.name == "country")
            .unwrap()
            .width,
        3
    );

    // EVALUATE and PREDICT take raw rows and apply the stored transforms.
    let metrics = rows(
        &s.execute("EVALUATE MODEL churn AS SELECT age, country, spend, churned FROM customers")
            .await
            .unwrap(),
    );
    let accuracy: f64 = metrics.iter().find(|r| r[0] == "accuracy").unwrap()[1]
        .parse()
        .unwrap();
    assert!(accuracy > 0.9, "accuracy with transforms: {accuracy}");
    let predicted = s
        .execute(
            "PREDICT MODEL churn AS SELECT age, country, spend FROM customers WHERE spend IS NULL",
        )
        .await
        .unwrap();
    assert_eq!(
        predicted.row_count(),
        286,
        "rows with NULL spend are imputed, not dropped"
    );

    // A parenthesized PREDICT is a subquery: its rows feed CREATE TABLE AS,
    // with the same transforms and the same predictions.
    s.execute(
        "CREATE TABLE scored AS SELECT id, prediction, probability FROM \
         (PREDICT MODEL churn AS SELECT id, age, country, spend FROM customers WHERE spend IS NULL) p",
    )
    .await
    .unwrap();
    let direct = rows(
        &s.execute(
            "SELECT id, prediction, probability FROM (PREDICT MODEL churn AS SELECT id, age, country, spend \
             FROM customers WHERE spend IS NULL) ORDER BY id",
        )
        .await
        .unwrap(),
    );
    let stored = rows(&s.execute("SELECT * FROM scored ORDER BY id").await.unwrap());
    assert_eq!(stored.len(), 286);
    assert_eq!(stored, direct);
    let err = s
        .execute("SELECT * FROM (PREDICT MODEL nope AS SELECT 1)")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");

    // warm_start continues from v1 with v1's fitted statistics, on other rows.
    s.execute(
        "TRAIN MODEL churn USING logistic_regression OPTIONS (epochs = 2, warm_start = true) \
         TRANSFORM (standard_scale(age) AS age, one_hot(country, 2) AS country, impute(spend, 'median') AS spend) \
         LABEL churned AS SELECT age, country, spend, churned FROM customers WHERE age > 60",
    )
    .await
    .unwrap();
    let v2 = s.registry().card("churn", 2).unwrap();
    assert_eq!(v2.warm_started_from, Some(1));
    assert_eq!(v2.transform, card.transform, "v1's statistics are kept");
    let err = s
        .execute(
            "TRAIN MODEL churn USING logistic_regression OPTIONS (warm_start = true) \
             TRANSFORM (standard_scale(age) AS age) LABEL churned AS SELECT age, churned FROM customers",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was trained with TRANSFORM outputs (age, country, spend)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn label_encode_and_polynomial_transforms() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(
        "CREATE TABLE curve AS SELECT CAST(n % 21 AS DOUBLE) / 10.0 - 1.0 AS x, \
         CASE n % 3 WHEN 0 THEN 'low' WHEN 1 THEN 'mid' ELSE 'top' END AS tier, \
         power(CAST(n % 21 AS DOUBLE) / 10.0 - 1.0, 2) + 0.5 * (n % 3) AS y FROM (SELECT unnest(range(0, 630)) AS n)",
    )
    .await
    .unwrap();
    s.execute(
        "TRAIN MODEL curve_fit USING linear_regression OPTIONS (solver = 'normal') \
         TRANSFORM (polynomial(x, 2) AS x, label_encode(tier) AS tier) LABEL y AS SELECT x, tier, y FROM curve",
    )
    .await
    .unwrap();
    let card = s.registry().card("curve_fit", 1).unwrap();
    assert!(
        card.transform[0].sql.contains("FixedSizeList(2, Float64)"),
        "{:?}",
        card.transform
    );
    assert_eq!(
        card.transform[1].sql,
        "CASE WHEN CAST(\"tier\" AS VARCHAR) = 'low' THEN 0.0 WHEN CAST(\"tier\" AS VARCHAR) = 'mid' THEN 1.0 \
         WHEN CAST(\"tier\" AS VARCHAR) = 'top' THEN 2.0 ELSE 3.0 END"
    );
    // y = x² + 0.5·tier is exactly linear in the transformed features.
    let metrics = rows(
        &s.execute("EVALUATE MODEL curve_fit AS SELECT x, tier, y FROM curve")
            .await
            .unwrap(),
    );
    let r2: f64 = metrics.iter().find(|r| r[0] == "r2").unwrap()[1]
        .parse()
        .unwrap();
    assert!(r2 > 0.9999, "r2 {r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robust_quantile_hashed_text_and_date_transforms() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 2).await;
    s.execute(
        "CREATE TABLE tickets AS SELECT n AS id, CAST(n % 97 AS DOUBLE) AS wait, \
         CASE WHEN n % 11 = 0 THEN NULL ELSE CASE n % 4 WHEN 0 THEN 'web' WHEN 1 THEN 'mail' ELSE 'phone' END END AS channel, \
         CASE n % 5 WHEN 0 THEN 'NL' WHEN 1 THEN 'DE' ELSE 'FR' END AS country, \
         CASE n % 3 WHEN 0 THEN 'refund please now' WHEN 1 THEN 'great service thanks' ELSE 'late delivery refund' END AS body, \
         CAST(DATE '2026-11-02' + CAST(n % 7 AS INT) AS DATE) AS opened, \
         CAST(n % 3 = 0 AS INT) AS escalated FROM (SELECT unnest(range(0, 1500)) AS n)",
    )
    .await
    .unwrap();
    let transform = "TRANSFORM (robust_scale(wait) AS wait, quantile_bucketize(wait, 4) AS wait_q, \
         impute(channel, 'most_frequent') AS channel_filled, feature_cross(country, channel, 16) AS cc, \
         hash_bucket(country, 8) AS country, tfidf(body, 32) AS body, day_of_week(opened) AS dow)";
    s.execute(&format!(
        "TRAIN MODEL esc USING logistic_regression OPTIONS (epochs = 30, learning_rate = 0.2) {transform} \
         LABEL escalated FEATURES (wait, wait_q, cc, country, body, dow) \
         AS SELECT wait, channel, country, body, opened, escalated FROM tickets"
    ))
    .await
    .unwrap();
    let card = s.registry().card("esc", 1).unwrap();
    let sql = |name: &str| {
        card.transform
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .sql
            .clone()
    };
    // Statistics equal the SQL-computed ones.
    let stats = rows(
        &s.execute(
            "SELECT median(wait), approx_percentile_cont(wait, 0.25), approx_percentile_cont(wait, 0.75), \
             approx_percentile_cont(wait, 0.5) FROM tickets",
        )
        .await
        .unwrap(),
    );
    let (median, q1, q3): (f64, f64, f64) = (
        stats[0][0].parse().unwrap(),
        stats[0][1].parse().unwrap(),
        stats[0][2].parse().unwrap(),
    );
    assert_eq!(
        sql("wait"),
        format!("(CAST(\"wait\" AS DOUBLE) - {median:?}) / {:?}", q3 - q1)
    );
    let approx_median: f64 = stats[0][3].parse().unwrap();
    assert!(
        sql("wait_q").contains(&format!("< {approx_median:?} THEN 1.0")),
        "{}",
        sql("wait_q")
    );
    assert_eq!(
        sql("channel_filled"),
        "coalesce(CAST(\"channel\" AS VARCHAR), 'phone')"
    );
    assert_eq!(
        sql("cc"),
        "one_hot_index(feature_cross(\"country\", \"channel\", 16), 16)"
    );
    assert!(
        sql("body").starts_with("tfidf(\"body\", 32, make_array("),
        "{}",
        sql("body")
    );
    assert_eq!(sql("dow"), "day_of_week(opened)");
    let width = |name: &str| card.features.iter().find(|f| f.name == name).unwrap().width;
    assert_eq!(
        (width("cc"), width("country"), width("body"), width("dow")),
        (16, 8, 32, 1)
    );

    // PREDICT on raw rows equals predict() on rows transformed by hand.
    let raw = rows(
        &s.execute("SELECT id, prediction FROM (PREDICT MODEL esc AS SELECT id, wait, channel, country, body, opened FROM tickets) ORDER BY id")
            .await
            .unwrap(),
    );
    // predict() takes the raw columns too and applies the same transforms.
    let udf = rows(
        &s.execute(
            "SELECT id, predict('esc', wait, country, channel, body, opened) FROM tickets ORDER BY id",
        )
        .await
        .unwrap(),
    );
    assert_eq!(raw.len(), 1500);
    assert_eq!(raw, udf);
    let err = s
        .execute("SELECT predict('esc', wait) FROM tickets")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes its raw input column(s) (wait, country, channel, body, opened), got 1"),
        "{err}"
    );
    // Rows transformed by hand with the stored SQL, given straight to the
    // UDF (DataFusion's API, below Kiln's rewrite), predict the same: the
    // stored SQL is the whole transformation.
    let transformed: Vec<String> = ["wait", "wait_q", "cc", "country", "body", "dow"]
        .iter()
        .map(|n| format!("{} AS {n}", sql(n)))
        .collect();
    let by_hand = s
        .context()
        .sql(&format!(
            "SELECT id, predict('esc@1', wait, wait_q, cc, country, body, dow) FROM \
             (SELECT id, {} FROM tickets) ORDER BY id",
            transformed.join(", ")
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let by_hand = rows(&kiln_sql::StatementResult {
        schema: by_hand[0].schema(),
        batches: by_hand,
        message: None,
        rows_written: None,
    });
    assert_eq!(raw, by_hand);
    let metrics = rows(
        &s.execute("EVALUATE MODEL esc AS SELECT wait, channel, country, body, opened, escalated FROM tickets")
            .await
            .unwrap(),
    );
    let accuracy: f64 = metrics.iter().find(|r| r[0] == "accuracy").unwrap()[1]
        .parse()
        .unwrap();
    assert!(
        accuracy > 0.95,
        "the body text gives the label away: {accuracy}"
    );
    let err = s
        .execute("TRAIN MODEL bad USING logistic_regression TRANSFORM (hash_bucket(country) AS c) LABEL escalated AS SELECT country, escalated FROM tickets")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("hash_bucket needs a whole number"), "{err}");
}

/// The rows of `query` as one kiln-ml batch (features `a`, `b`; label `y`
/// as class index or value), in the order the session reads them.
async fn batch_of(s: &KilnSession, query: &str, classes: bool) -> kiln_ml::Batch {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    let batches = s
        .context()
        .sql(query)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let (mut features, mut labels) = (vec![], vec![]);
    for batch in &batches {
        let a = batch.column(0).as_primitive::<Float64Type>();
        let b = batch.column(1).as_primitive::<Float64Type>();
        let y = batch.column(2).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            features.extend([a.value(r) as f32, b.value(r) as f32]);
            labels.push(y.value(r));
        }
    }
    let targets = if classes {
        kiln_ml::Targets::Classes(labels.iter().map(|&y| y as u32).collect())
    } else {
        kiln_ml::Targets::Values(labels.iter().map(|&y| y as f32).collect())
    };
    kiln_ml::Batch {
        features,
        dims: 2,
        targets,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn train_model_and_kiln_ml_fit_run_the_same_driver_and_agree() {
    use kiln_ml::{ModelType, TrainOptions};
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    // One partition and one file: SQL feeds the round the same rows in the
    // same order as the in-memory partition below.
    let s = session(&lake, 1).await;
    s.execute(SEPARABLE).await.unwrap();
    let registry = kiln_sql::catalog::registry::ModelRegistry::new(s.lake().root());
    let cases = [
        (
            "sgd",
            ModelType::LogisticRegression,
            "OPTIONS (epochs = 6, seed = 11, validation_fraction = 0.25, early_stopping_patience = 2)",
            true,
        ),
        (
            "normal",
            ModelType::LinearRegression,
            "OPTIONS (solver = 'normal', validation_fraction = 0.2)",
            false,
        ),
        ("clusters", ModelType::Kmeans, "OPTIONS (k = 3, epochs = 8, seed = 5)", false),
    ];
    for (name, model_type, options, classes) in cases {
        let (label, columns) = if model_type == ModelType::Kmeans {
            ("", "a, b")
        } else {
            ("LABEL y", "a, b, y")
        };
        s.execute(&format!(
            "TRAIN MODEL {name} USING {model_type} {options} {label} AS SELECT {columns} FROM pts"
        ))
        .await
        .unwrap();
        let (trained, card) = registry.load(name, 1).unwrap();

        let parsed: TrainOptions = card.options.clone();
        let batch = batch_of(&s, "SELECT a, b, y FROM pts", classes).await;
        let partitions = if model_type == ModelType::Kmeans {
            // kmeans trains on the features only (no LABEL).
            vec![vec![kiln_ml::Batch {
                targets: kiln_ml::Targets::None,
                ..batch
            }]]
        } else {
            vec![vec![batch]]
        };
        let (fitted, history) = kiln_ml::fit(
            model_type,
            &parsed,
            &partitions,
            classes.then_some(2),
            &kiln_kernels::cpu::CpuBackend::default(),
            None,
            |_| {},
        )
        .unwrap();
        assert_eq!(history.epochs.len(), card.epochs.len(), "{name}: epochs");
        assert_eq!(history.rows_seen, card.rows_seen, "{name}: rows seen");
        assert_eq!(trained.params().len(), fitted.params().len(), "{name}");
        for (i, (t, f)) in trained.params().iter().zip(fitted.params()).enumerate() {
            assert!(
                (t - f).abs() <= 1e-5 * (1.0 + t.abs()),
                "{name}: parameter {i}: SQL {t}, fit {f}"
            );
        }
        for (sql, mem) in card.epochs.iter().zip(&history.epochs) {
            assert!(
                (sql.train_loss - mem.train_loss).abs() < 1e-6,
                "{name}: {sql:?} vs {mem:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_physical_codec_round_trips_train_exec_and_refuses_other_versions() {
    use datafusion_proto::physical_plan::{DefaultPhysicalProtoConverter, PhysicalExtensionCodec};
    use kiln_sql::plan::codec::KilnPhysicalCodec;
    use kiln_sql::plan::logical::RoundSpec;
    use kiln_sql::plan::physical::TrainExec;
    let options = kiln_ml::TrainOptions::default();
    let model =
        kiln_ml::Model::new(kiln_ml::ModelType::LogisticRegression, 2, Some(2), &options).unwrap();
    let mut driver = kiln_ml::Driver::new(model, options.clone());
    let spec = RoundSpec {
        round: driver.next_round().unwrap(),
        options,
        features: vec!["a".into(), "b".into()],
        label: Some("y".into()),
        classes: Some(vec!["0".into(), "1".into()]),
        cache_run: None,
    };
    let ctx = datafusion::prelude::SessionContext::new();
    let input = ctx
        .sql("SELECT 1.0 AS a, 2.0 AS b, 1 AS y")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let exec = TrainExec::try_new(
        Arc::clone(&input),
        Arc::new(serde_json::to_vec(&spec).unwrap()),
    )
    .unwrap();
    let codec = KilnPhysicalCodec::default();
    let converter = DefaultPhysicalProtoConverter {};
    let mut buf = vec![];
    codec
        .try_encode(Arc::new(exec), &mut buf, &converter)
        .unwrap();
    assert_eq!(&buf[..4], b"KILN");
    let task = TaskContext::default();
    let decoded = codec
        .try_decode(&buf, std::slice::from_ref(&input), &task, &converter)
        .unwrap();
    let decoded = decoded.downcast_ref::<TrainExec>().expect("a TrainExec");
    assert_eq!(
        decoded.spec_bytes.as_slice(),
        serde_json::to_vec(&spec).unwrap().as_slice()
    );
    let spec_back: RoundSpec = serde_json::from_slice(&decoded.spec_bytes).unwrap();
    assert_eq!(spec_back.round.start_model(), spec.round.start_model());
    assert_eq!(
        (spec_back.features, spec_back.label, spec_back.classes),
        (spec.features, spec.label, spec.classes)
    );

    buf[4] = 99;
    let err = codec
        .try_decode(&buf, std::slice::from_ref(&input), &task, &converter)
        .unwrap_err();
    assert!(
        matches!(err, datafusion::error::DataFusionError::Configuration(_)),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("codec version 99") && message.contains("reads codec version 2"),
        "{message}"
    );
}

/// After the first round, an L-BFGS fit on the embedded cluster reads its
/// rows from the row cache, and the model equals one fitted from the input
/// every round (a cluster without the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn later_rounds_read_the_row_cache_and_train_the_same_model() {
    let scratch = tempfile::tempdir().unwrap();
    let s = session(&scratch.path().join("lake"), 3).await;
    s.execute(SEPARABLE).await.unwrap();
    let cache = kiln_sql::plan::row_cache::cache();
    let served = cache.served_batches();
    s.execute("TRAIN MODEL m USING logistic_regression OPTIONS (l2 = 0.01) LABEL y AS SELECT a, b, y FROM pts")
        .await
        .unwrap();
    assert!(cache.served_batches() > served, "no round read the cache");
    let registry = kiln_sql::catalog::registry::ModelRegistry::new(s.lake().root());
    let (trained, card) = registry.load("m", 1).unwrap();
    assert!(card.epochs.len() > 2, "{} iterations", card.epochs.len());

    let batch = {
        let result = s.execute("SELECT a, b, y FROM pts").await.unwrap();
        let mut features = vec![];
        let mut classes = vec![];
        for row in rows(&result) {
            features.extend([row[0].parse::<f32>().unwrap(), row[1].parse().unwrap()]);
            classes.push(row[2].parse::<u32>().unwrap());
        }
        kiln_ml::Batch {
            features,
            dims: 2,
            targets: kiln_ml::Targets::Classes(classes),
        }
    };
    let (fitted, _) = kiln_ml::fit(
        kiln_ml::ModelType::LogisticRegression,
        &card.options,
        &[vec![batch]],
        Some(2),
        &kiln_kernels::cpu::CpuBackend::default(),
        None,
        |_| {},
    )
    .unwrap();
    for (t, f) in trained.params().iter().zip(fitted.params()) {
        assert!((t - f).abs() <= 1e-4 * (1.0 + t.abs()), "SQL {t}, fit {f}");
    }
}
