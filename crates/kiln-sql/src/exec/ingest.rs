//! `INGEST INTO table FROM 'dir/' FORMAT CSV|JSON|PARQUET [OPTIONS (...)]`:
//! loads the files of a landing directory that were not loaded before.
//!
//! The table's manifest (`_kiln/ingest/<table>-<id>.json`: path, size,
//! mtime and SHA-256 of every loaded file) is written under a fresh name and
//! swapped into the catalog by the same atomic write that publishes the new
//! data, so a file is loaded exactly once even when the process is killed
//! mid-run and the statement is run again.

use super::ddl::managed_entry;
use super::ddl::write_managed;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use chrono::Utc;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{
    cast, ident, lit, CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions,
};
use datafusion::scalar::ScalarValue;
use sha2::{Digest, Sha256};

use super::ddl::WriteMode;
use crate::catalog::manifest::{LoadedFile, Manifest};
use crate::error::lake_error;
use crate::parse::ingest::{IngestFormat, IngestStatement};
use crate::session::{KilnSession, StatementResult};

/// A candidate file in the landing directory.
struct SourceFile {
    path: PathBuf,
    size: u64,
    modified_unix_ms: i64,
}

fn source_files(root: &Path, format: IngestFormat) -> Result<Vec<SourceFile>> {
    let mut files = vec![];
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).map_err(|e| {
            DataFusionError::Plan(format!("INGEST: cannot read '{}': {e}", path.display()))
        })?;
        let hidden = path != root
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        if hidden {
            continue;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            continue;
        }
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if path != root && !format.extensions().contains(&extension.as_str()) {
            continue;
        }
        let modified_unix_ms = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        files.push(SourceFile {
            path,
            size: meta.len(),
            modified_unix_ms,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(crate) async fn execute_ingest(
    session: &KilnSession,
    statement: IngestStatement,
) -> Result<StatementResult> {
    let table = statement.table.clone();
    crate::catalog::lake::validate_table_name(&table).map_err(lake_error)?;
    let root = crate::catalog::lake::resolve_path(Path::new(&statement.location));
    session.check_allowed_location(&format!("INGEST INTO {table}"), &root.to_string_lossy())?;
    let current = managed_entry(session, &TableReference::bare(table.as_str()))?;
    if current.is_none() && session.context().table_exist(table.as_str())? {
        return Err(DataFusionError::Plan(format!(
            "INGEST INTO {table}: '{table}' is not a lake table (external tables and views \
             cannot be ingested into); pick a new name and INGEST creates the table"
        )));
    }
    let meta = session.lake().meta_dir();
    let manifest = match current.as_ref().and_then(|e| e.ingest_manifest.as_ref()) {
        Some(relative) => {
            let path = meta.join(relative);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                DataFusionError::Execution(format!(
                    "INGEST INTO {table}: cannot read its manifest '{}': {e}",
                    path.display()
                ))
            })?;
            serde_json::from_str::<Manifest>(&text).map_err(|e| {
                DataFusionError::Execution(format!(
                    "INGEST INTO {table}: corrupt manifest '{}': {e}",
                    path.display()
                ))
            })?
        }
        None => Manifest {
            table: table.clone(),
            files: vec![],
        },
    };
    let by_path: HashMap<&Path, &LoadedFile> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_path(), f))
        .collect();
    let mut known_hashes: BTreeSet<String> =
        manifest.files.iter().map(|f| f.sha256.clone()).collect();
    let candidates = source_files(&root, statement.format)?;
    let batch = uuid::Uuid::new_v4().simple().to_string();
    let now = Utc::now();
    let mut new_files: Vec<LoadedFile> = vec![];
    let mut already = 0;
    for file in candidates {
        if let Some(loaded) = by_path.get(file.path.as_path()) {
            if loaded.size == file.size && loaded.modified_unix_ms == file.modified_unix_ms {
                already += 1;
                continue;
            }
        }
        let sha256 = sha256_of(&file.path)?;
        if known_hashes.contains(&sha256) {
            already += 1;
            continue;
        }
        if by_path.contains_key(file.path.as_path()) {
            session.warn(format!(
                "INGEST INTO {table}: '{}' changed since it was loaded; changed files are \
                 not loaded again (write new data to a new file)",
                file.path.display()
            ));
            already += 1;
            continue;
        }
        known_hashes.insert(sha256.clone());
        new_files.push(LoadedFile {
            path: file.path,
            size: file.size,
            modified_unix_ms: file.modified_unix_ms,
            sha256,
            ingested_at: now,
            batch: batch.clone(),
        });
    }
    if new_files.is_empty() {
        return Ok(StatementResult::written(
            format!(
                "no new files in '{}' for {table} ({already} already ingested)",
                root.display()
            ),
            0,
        ));
    }
    let paths: Vec<String> = new_files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    let ctx = session.context();
    let df = match statement.format {
        IngestFormat::Csv => {
            let options = CsvReadOptions::new()
                .has_header(statement.has_header)
                .delimiter(statement.delimiter)
                .file_extension("");
            ctx.read_csv(paths, options).await
        }
        IngestFormat::Json => {
            ctx.read_json(paths, JsonReadOptions::default().file_extension(""))
                .await
        }
        IngestFormat::Parquet => {
            let options = ParquetReadOptions {
                file_extension: "",
                ..Default::default()
            };
            ctx.read_parquet(paths, options).await
        }
    }
    .map_err(|e| {
        DataFusionError::Plan(format!(
            "INGEST INTO {table}: cannot read the new files in '{}': {e}",
            root.display()
        ))
    })?;
    let (df, schema, partition_by, carry) = match &current {
        Some(entry) => (
            align(df, &entry.schema, &table)?,
            entry.schema.clone(),
            entry.partition_by.clone(),
            Some((entry.snapshot, None)),
        ),
        None => {
            let schema = Schema::new(
                df.schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            );
            (df, schema, vec![], None)
        }
    };
    let mut files = manifest.files.clone();
    let count = new_files.len();
    files.extend(new_files);
    let relative = format!("ingest/{table}-{batch}.json");
    let manifest_path = meta.join(&relative);
    std::fs::create_dir_all(manifest_path.parent().expect("has a parent"))?;
    let text = serde_json::to_string_pretty(&Manifest {
        table: table.clone(),
        files,
    })
    .map_err(|e| DataFusionError::Internal(e.to_string()))?;
    std::fs::write(&manifest_path, text)?;
    let mode = WriteMode {
        carry,
        ingest_manifest: Some(relative.clone()),
        keys: current.as_ref().map(|e| e.keys.clone()).unwrap_or_default(),
    };
    let written = write_managed(
        session,
        &table,
        df.logical_plan().clone(),
        mode,
        schema,
        partition_by,
    )
    .await;
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&manifest_path);
            return Err(e);
        }
    };
    if let Some(old) = current.and_then(|e| e.ingest_manifest) {
        let _ = std::fs::remove_file(meta.join(old));
    }
    remove_orphan_manifests(&meta.join("ingest"), &table, &relative);
    Ok(StatementResult::written(
        format!(
            "ingested {count} new files ({rows} rows) from '{}' into {table} ({already} already ingested)",
            root.display()
        ),
        rows,
    ))
}

/// Removes manifests of `table` left by INGEST runs that never published
/// (killed or failed), except `current` and any younger than an hour (a
/// concurrent run may still be about to publish one).
fn remove_orphan_manifests(dir: &Path, table: &str, current: &str) {
    let prefix = format!("{table}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_ours = name.starts_with(&prefix)
            && name.ends_with(".json")
            && name[prefix.len()..name.len() - 5]
                .chars()
                .all(|c| c.is_ascii_hexdigit());
        if !is_ours || current.ends_with(&name) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The new files' columns in the table's order and types; a column the
/// files lack is NULL, a column the table lacks is an error.
fn align(df: DataFrame, target: &Schema, table: &str) -> Result<DataFrame> {
    let source = df.schema().clone();
    for field in source.fields() {
        if target.field_with_name(field.name()).is_err() {
            let columns: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(DataFusionError::Plan(format!(
                "INGEST INTO {table}: the new files have a column '{}' that the table does not \
                 (its columns: {}); add it with CREATE OR REPLACE TABLE or ingest into a new table",
                field.name(),
                columns.join(", ")
            )));
        }
    }
    let exprs = target
        .fields()
        .iter()
        .map(|f| {
            let value = if source.field_with_unqualified_name(f.name()).is_ok() {
                ident(f.name())
            } else {
                lit(ScalarValue::Null)
            };
            cast(value, f.data_type().clone()).alias(f.name())
        })
        .collect::<Vec<_>>();
    df.select(exprs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_unreferenced_manifests_of_the_table_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let touch = |name: &str, aged: bool| {
            let path = dir.path().join(name);
            std::fs::write(&path, "{}").unwrap();
            if aged {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        };
        touch("events-aa11.json", true); // orphan: removed
        touch("events-bb22.json", false); // young: a run may still publish it
        touch("events-cc33.json", true); // current
        touch("events_raw-dd44.json", true); // another table
        remove_orphan_manifests(dir.path(), "events", "ingest/events-cc33.json");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "events-bb22.json",
                "events-cc33.json",
                "events_raw-dd44.json"
            ]
        );
    }
}
