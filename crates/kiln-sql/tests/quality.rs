//! Models right with default options: scikit-learn's bundled data sets
//! (breast cancer, wine, iris, diabetes; raw features, fixed 80/20 split,
//! written by `tests/quality/sklearn_reference.py` with scikit-learn's own
//! scores on the same split), trained with `TRAIN MODEL` and no OPTIONS or
//! TRANSFORM, from 1, 2 and 4 partitions.

use std::path::{Path, PathBuf};

use kiln_sql::KilnSession;

use crate::common::{repo_root, rows, session};

/// `$KILN_QUALITY_DATA`, else `tests/quality/data`, when the script filled it.
fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_QUALITY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/quality/data"));
    dir.join("reference.json").exists().then_some(dir)
}

async fn load(s: &KilnSession, dir: &Path, name: &str, split: &str) {
    let csv = dir.join(format!("{name}_{split}.csv"));
    s.execute(&format!(
        "CREATE EXTERNAL TABLE {split}_csv STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        csv.display()
    ))
    .await
    .unwrap();
    s.execute(&format!(
        "CREATE TABLE {split} AS SELECT * FROM {split}_csv"
    ))
    .await
    .unwrap();
}

async fn metric(s: &KilnSession, name: &str) -> f64 {
    let result = s
        .execute("EVALUATE MODEL m AS SELECT * FROM test")
        .await
        .unwrap();
    rows(&result).iter().find(|r| r[0] == name).unwrap()[1]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_models_score_like_scikit_learn_on_its_bundled_data() {
    let Some(dir) = reference_dir() else {
        let make = "run `python3 tests/quality/sklearn_reference.py tests/quality/data` \
                    (needs scikit-learn; CI does) to write the data sets";
        assert!(std::env::var_os("CI").is_none(), "{make}");
        eprintln!("skipped: {make}");
        return;
    };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let mut report = vec![];
    for (name, entry) in reference.as_object().unwrap() {
        let model_type = entry["model_type"].as_str().unwrap();
        let metric_name = entry["metric"].as_str().unwrap();
        let sklearn = entry["sklearn"].as_f64().unwrap();
        let mut scores = vec![];
        for partitions in [1, 2, 4] {
            let scratch = tempfile::tempdir().unwrap();
            let s = session(&scratch.path().join("lake"), partitions).await;
            load(&s, &dir, name, "train").await;
            load(&s, &dir, name, "test").await;
            s.execute(&format!(
                "TRAIN MODEL m USING {model_type} LABEL label AS SELECT * FROM train"
            ))
            .await
            .unwrap();
            scores.push(metric(&s, metric_name).await);
        }
        report.push(format!("{name}: Kiln {scores:?}, scikit-learn {sklearn}"));
        if metric_name == "r2" {
            // The normal equations: the closed form scikit-learn computes too.
            for score in &scores {
                assert!((score - sklearn).abs() <= 1e-6, "{report:?}");
            }
        } else {
            for score in &scores {
                assert!(*score >= sklearn - 0.01, "{report:?}");
                assert!((score - scores[0]).abs() <= 0.005, "{report:?}");
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}
