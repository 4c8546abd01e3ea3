//! The SQL conformance suite runner, shared by kiln-sql's tests (embedded
//! cluster) and the cluster tests (scheduler and executors as processes):
//! every `sql/slt/*.slt` file runs against a fresh lake.
//!
//! In the files, `${REPO}` is the repository root and `${SCRATCH}` a scratch
//! directory private to the file.

use std::future::Future;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kiln_sql::KilnSession;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::common::{repo_root, rows};

const FILE_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Whatever must stay alive while a file runs (e.g. cluster processes).
pub type Guard = Box<dyn std::any::Any + Send>;

struct KilnDb {
    session: KilnSession,
    scratch: PathBuf,
    lake: PathBuf,
    _guard: Guard,
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

pub fn slt_files() -> Vec<PathBuf> {
    let dir = repo_root().join("sql/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

/// Runs one file on the session `open(lake, scratch)` returns.
pub async fn run_file<F, Fut>(path: &Path, open: F) -> Result<(), String>
where
    F: FnOnce(PathBuf, PathBuf) -> Fut,
    Fut: Future<Output = (KilnSession, Guard)>,
{
    let scratch = tempfile::tempdir().unwrap();
    let lake = scratch.path().join("lake");
    let files_dir = scratch.path().join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let (session, guard) = open(lake, files_dir.clone()).await;
    let mut db = Some(KilnDb {
        lake: session.lake().root().to_path_buf(),
        session,
        scratch: files_dir,
        _guard: guard,
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

/// Runs every file (or those `select` keeps), each on a fresh lake; returns
/// the failures, one message per file.
pub async fn run_suite<F, Fut>(select: impl Fn(&Path) -> bool, open: F) -> Vec<String>
where
    F: Fn(PathBuf, PathBuf) -> Fut,
    Fut: Future<Output = (KilnSession, Guard)>,
{
    let files: Vec<PathBuf> = slt_files().into_iter().filter(|f| select(f)).collect();
    assert!(!files.is_empty(), "no .slt files selected");
    let mut failures = Vec::new();
    for file in &files {
        // A statement that never finishes fails its file instead of the suite hanging.
        match tokio::time::timeout(FILE_TIME_LIMIT, run_file(file, &open)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push(format!(
                "{}: did not finish within {FILE_TIME_LIMIT:?}",
                file.display()
            )),
        }
    }
    failures
}
