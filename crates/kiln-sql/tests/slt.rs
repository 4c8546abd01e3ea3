//! The SQL conformance suite: every `sql/slt/*.slt` file runs against a fresh
//! lake and a Kiln session on the embedded Ballista cluster.
//!
//! In the files, `${REPO}` is the repository root and `${SCRATCH}` a scratch
//! directory private to the file.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kiln_sql::KilnSession;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::common::{repo_root, rows, session};

struct KilnDb {
    session: KilnSession,
    scratch: PathBuf,
    lake: PathBuf,
}

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

#[async_trait]
impl sqllogictest::AsyncDB for KilnDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let sql = sql
            .replace("${REPO}", &repo_root().display().to_string())
            .replace("${SCRATCH}", &self.scratch.display().to_string());
        let result = self
            .session
            .execute(&sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        if !result.has_rows() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let is_float: Vec<bool> = result
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().is_floating())
            .collect();
        let repo = repo_root().display().to_string();
        let lake = self.lake.display().to_string();
        let rows: Vec<Vec<String>> = rows(&result)
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .zip(&is_float)
                    .map(|(cell, float)| normalize_cell(cell, *float, &repo, &lake))
                    .collect()
            })
            .collect();
        let types = vec![DefaultColumnType::Any; result.schema.fields().len()];
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "kiln"
    }
}

/// Empty strings print as `(empty)`, floats without a trailing `.0`, and the
/// machine's paths as `${REPO}` / `${SCRATCH_LAKE}`.
fn normalize_cell(cell: String, float: bool, repo: &str, lake: &str) -> String {
    if cell.is_empty() {
        return "(empty)".to_string();
    }
    if float {
        if let Some(integral) = cell.strip_suffix(".0") {
            return integral.to_string();
        }
    }
    cell.replace(lake, "${SCRATCH_LAKE}")
        .replace(repo, "${REPO}")
}

fn slt_files() -> Vec<PathBuf> {
    let dir = repo_root().join("sql/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

async fn run_file(path: &Path) -> Result<(), String> {
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let files_dir = scratch.path().join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let session = session(&lake, 2).await;
    let mut db = Some(KilnDb {
        lake: session.lake().root().to_path_buf(),
        session,
        scratch: files_dir,
    });
    let mut runner = sqllogictest::Runner::new(move || {
        let db = db.take();
        async move { db.ok_or_else(|| SltError("one connection per file".into())) }
    });
    runner
        .run_file_async(path)
        .await
        .map_err(|e| format!("{}:\n{}", path.display(), e.display(false)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_conformance_suite() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = run_file(file).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
