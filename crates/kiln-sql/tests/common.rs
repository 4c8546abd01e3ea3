use std::path::PathBuf;

use kiln_sql::{KilnSession, SessionOptions, StatementResult};

/// The repository root (tests run with the crate directory as cwd).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub async fn session(lake: &std::path::Path, partitions: usize) -> KilnSession {
    let mut options = SessionOptions::new(lake);
    options.target_partitions = Some(partitions);
    kiln_cluster::open(options).await.expect("session opens")
}

/// Every cell of a result as text, row by row.
pub fn rows(result: &StatementResult) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in &result.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}
