//! The lake directory: table data, Kiln's catalog, and atomic publication.
//!
//! Layout of a lake rooted at `ROOT`:
//! ```text
//! ROOT/_kiln/catalog.json      every table Kiln knows (managed and external)
//! ROOT/_kiln/catalog.lock      held while the catalog is rewritten
//! ROOT/<table>/v<N>/...        snapshot N of a managed table (Parquet, Hive-style partitions)
//! ROOT/<table>/_staging-<pid>-<id>/  a write in progress, invisible to readers
//! ```
//! A write goes to a staging directory; it becomes visible only when the catalog,
//! rewritten to a temporary file and renamed over the old one, names its snapshot.
//! A write that fails or is killed therefore leaves the table exactly as it was;
//! its staging directory is removed by the next write to that table.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};

/// The catalog file's format version, bumped on incompatible changes.
pub const CATALOG_FORMAT_VERSION: u32 = 1;
const META_DIR: &str = "_kiln";
const CATALOG_FILE: &str = "catalog.json";
const LOCK_FILE: &str = "catalog.lock";
const STAGING_PREFIX: &str = "_staging-";

/// Errors of the lake layer; the SQL layer turns them into DataFusion errors.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake I/O error on '{path}': {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the lake catalog '{path}' is corrupt: {reason}")]
    CorruptCatalog { path: PathBuf, reason: String },
    #[error(
        "the lake catalog '{path}' has format version {found}, but this Kiln reads version {CATALOG_FORMAT_VERSION}; upgrade Kiln"
    )]
    CatalogVersion { path: PathBuf, found: u32 },
    #[error(
        "invalid table name '{0}': use letters, digits and '_' only, starting with a letter or '_'"
    )]
    InvalidTableName(String),
    #[error(
        "table '{table}' changed during the write (snapshot v{found}, the write started from v{expected}): another writer published first; nothing was written, run the statement again"
    )]
    ConcurrentWrite {
        table: String,
        expected: u64,
        found: u64,
    },
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LakeError + '_ {
    move |source| LakeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every table the lake knows, keyed by (lower-case) table name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub format_version: u32,
    pub tables: BTreeMap<String, TableEntry>,
    /// Governance checks, keyed by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, crate::catalog::check::CheckDef>,
}

/// One catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableEntry {
    /// Parquet data owned by the lake (`CREATE TABLE`, `CREATE TABLE AS`).
    Managed(ManagedTable),
    /// Files owned by the user, registered with `CREATE EXTERNAL TABLE`.
    External(ExternalTable),
}

impl TableEntry {
    pub fn kind(&self) -> &'static str {
        match self {
            TableEntry::Managed(_) => "managed",
            TableEntry::External(_) => "external",
        }
    }
}

/// A table whose Parquet files live under the lake, published by snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManagedTable {
    /// The table schema as readers see it: file columns, then partition columns.
    pub schema: Schema,
    /// Hive-style partition columns, in directory order.
    pub partition_by: Vec<String>,
    /// The published snapshot: data lives in `<table>/v<snapshot>/`.
    pub snapshot: u64,
    /// The manifest of files `INGEST INTO` loaded, relative to `_kiln/`;
    /// swapped in the same catalog write that publishes the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_manifest: Option<String>,
    /// Primary-key and unique constraints from `CREATE TABLE`. As in
    /// DataFusion, they are not enforced on write (a primary key's columns
    /// are NOT NULL, which is); the planner uses them as functional
    /// dependencies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<TableKey>,
}

/// A primary-key or unique constraint, by column names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableKey {
    pub primary: bool,
    pub columns: Vec<String>,
}

/// A table over files the lake does not own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExternalTable {
    /// The `CREATE EXTERNAL TABLE` statement, with locations made absolute.
    pub ddl: String,
    pub format: String,
    pub locations: Vec<String>,
}

/// Checks that `name` can be used as a table directory name.
pub fn validate_table_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid_start = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
    if valid_start
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
        && name != META_DIR
    {
        Ok(())
    } else {
        Err(LakeError::InvalidTableName(name.to_string()))
    }
}

/// A lake directory.
#[derive(Debug, Clone)]
pub struct Lake {
    root: PathBuf,
}

impl Lake {
    /// Opens (creating if needed) the lake at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        fs::create_dir_all(root.join(META_DIR)).map_err(io_err(root))?;
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        Ok(Self { root })
    }

    /// Kiln's metadata directory, `_kiln/`.
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    /// Where `kiln.check_results` keeps its Parquet files.
    pub fn check_results_dir(&self) -> PathBuf {
        self.root.join(META_DIR).join("check_results")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn catalog_path(&self) -> PathBuf {
        self.root.join(META_DIR).join(CATALOG_FILE)
    }

    /// Reads the published catalog (an empty one for a new lake).
    pub fn catalog(&self) -> Result<Catalog> {
        let path = self.catalog_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Catalog {
                    format_version: CATALOG_FORMAT_VERSION,
                    ..Catalog::default()
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let catalog: Catalog =
            serde_json::from_str(&text).map_err(|e| LakeError::CorruptCatalog {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if catalog.format_version != CATALOG_FORMAT_VERSION {
            return Err(LakeError::CatalogVersion {
                path,
                found: catalog.format_version,
            });
        }
        Ok(catalog)
    }

    /// Rewrites the catalog under an exclusive lock: reads the latest version,
    /// applies `change`, and publishes the result atomically (temp file + rename).
    /// Nothing is written when `change` fails.
    pub fn update_catalog<T, E: From<LakeError>>(
        &self,
        change: impl FnOnce(&mut Catalog) -> Result<T, E>,
    ) -> Result<T, E> {
        let lock_path = self.root.join(META_DIR).join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        let mut catalog = self.catalog()?;
        let out = change(&mut catalog)?;
        self.write_catalog(&catalog)?;
        drop(lock);
        Ok(out)
    }

    fn write_catalog(&self, catalog: &Catalog) -> Result<()> {
        let path = self.catalog_path();
        let text =
            serde_json::to_string_pretty(catalog).map_err(|e| LakeError::CorruptCatalog {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write_atomically(&path, |file| file.write_all(text.as_bytes())).map_err(io_err(&path))?;
        sync_dir(path.parent().expect("catalog has a parent"));
        Ok(())
    }

    /// The directory of a managed table (all its snapshots).
    pub fn table_dir(&self, table: &str) -> PathBuf {
        self.root.join(table)
    }

    /// The directory of one snapshot of a managed table.
    pub fn snapshot_dir(&self, table: &str, snapshot: u64) -> PathBuf {
        self.table_dir(table).join(format!("v{snapshot}"))
    }

    /// Starts a write to `table`: an empty staging directory that readers never see.
    /// Removes staging directories left by dead processes first.
    pub fn stage(&self, table: &str) -> Result<StagedWrite> {
        validate_table_name(table)?;
        let table_dir = self.table_dir(table);
        fs::create_dir_all(&table_dir).map_err(io_err(&table_dir))?;
        remove_dead_staging(&table_dir);
        let dir = table_dir.join(format!(
            "{STAGING_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(StagedWrite {
            dir,
            published: false,
        })
    }

    /// Hard-links (or copies, across file systems) every file of a published
    /// snapshot into a staging directory, so an append publishes old + new
    /// files; `except` (a path relative to the snapshot, such as a partition
    /// directory `day=2026-11-01`) is left behind, so it is replaced.
    pub fn carry_snapshot(
        &self,
        table: &str,
        snapshot: u64,
        staged: &StagedWrite,
        except: Option<&Path>,
    ) -> Result<()> {
        let from = self.snapshot_dir(table, snapshot);
        if from.exists() {
            let except = except.map(|e| from.join(e));
            link_tree(&from, &staged.dir, except.as_deref())?;
        }
        Ok(())
    }

    /// Publishes a staged write as the next snapshot of `table` and updates the
    /// catalog entry with `entry` (given the new snapshot number), atomically.
    /// With `expected`, refuses when the published snapshot is no longer the
    /// one the write started from (another writer got there first). An entry
    /// without an ingest manifest keeps the table's current one. Returns the
    /// new entry. Older snapshots are removed afterwards.
    pub fn publish(
        &self,
        table: &str,
        mut staged: StagedWrite,
        expected: Option<u64>,
        entry: impl FnOnce(u64) -> ManagedTable,
    ) -> Result<ManagedTable> {
        let table_dir = self.table_dir(table);
        let published = self.update_catalog(|catalog| {
            let (current, manifest) = match catalog.tables.get(table) {
                Some(TableEntry::Managed(m)) => (m.snapshot, m.ingest_manifest.clone()),
                _ => (0, None),
            };
            if let Some(expected) = expected {
                if expected != current {
                    return Err(LakeError::ConcurrentWrite {
                        table: table.to_string(),
                        expected,
                        found: current,
                    });
                }
            }
            let next = next_snapshot(&table_dir, current);
            let target = self.snapshot_dir(table, next);
            fs::rename(&staged.dir, &target).map_err(io_err(&target))?;
            sync_dir(&table_dir);
            staged.published = true;
            let mut managed = entry(next);
            if managed.ingest_manifest.is_none() {
                managed.ingest_manifest = manifest;
            }
            catalog
                .tables
                .insert(table.to_string(), TableEntry::Managed(managed.clone()));
            Ok::<_, LakeError>(managed)
        })?;
        remove_old_snapshots(&table_dir, published.snapshot);
        Ok(published)
    }

    /// Removes a table from the catalog (atomically), then deletes a managed
    /// table's files. Returns the removed entry, if any.
    pub fn drop_table(&self, table: &str) -> Result<Option<TableEntry>> {
        let removed =
            self.update_catalog(|catalog| Ok::<_, LakeError>(catalog.tables.remove(table)))?;
        if let Some(TableEntry::Managed(_)) = removed {
            let dir = self.table_dir(table);
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            }
        }
        Ok(removed)
    }
}

/// A staging directory; deleted on drop unless published.
#[derive(Debug)]
pub struct StagedWrite {
    dir: PathBuf,
    published: bool,
}

impl StagedWrite {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The staging directory as a URL-ish path with a trailing slash, which
    /// DataFusion's writers treat as "a directory of files".
    pub fn dir_for_writer(&self) -> String {
        format!("{}/", self.dir.display())
    }
}

impl Drop for StagedWrite {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn next_snapshot(table_dir: &Path, current: u64) -> u64 {
    let highest_on_disk = fs::read_dir(table_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix('v')?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    current.max(highest_on_disk) + 1
}

fn remove_old_snapshots(table_dir: &Path, keep: u64) {
    for entry in fs::read_dir(table_dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix('v')?.parse::<u64>().ok())
        else {
            continue;
        };
        if n != keep {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn remove_dead_staging(table_dir: &Path) {
    for entry in fs::read_dir(table_dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| pid == std::process::id() || process_alive(pid));
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // Without a cheap liveness check, keep the directory: leaking beats deleting
        // another process's in-flight write.
        true
    }
}

fn link_tree(from: &Path, to: &Path, except: Option<&Path>) -> Result<()> {
    for entry in fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let src = entry.path();
        if except == Some(src.as_path()) {
            continue;
        }
        let dst = to.join(entry.file_name());
        let file_type = entry.file_type().map_err(io_err(&src))?;
        if file_type.is_dir() {
            fs::create_dir_all(&dst).map_err(io_err(&dst))?;
            link_tree(&src, &dst, except)?;
        } else if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err(&dst))?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `path` whole or not at all: into a temporary file beside it, synced,
/// then renamed over it (a reader sees the old file or the new one).
pub fn write_atomically<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    write(file.as_file_mut())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `path` made absolute with `.` and `..` removed, symlinks resolved where it exists.
pub fn normalize(path: &Path) -> PathBuf {
    let absolute = resolve_path(path);
    if let Ok(real) = absolute.canonicalize() {
        return real;
    }
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lake directory for `path`, resolving `~`-less relative paths against the cwd.
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn managed(snapshot: u64) -> ManagedTable {
        ManagedTable {
            schema: Schema::new(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
            ]),
            partition_by: vec![],
            snapshot,
            ingest_manifest: None,
            keys: vec![],
        }
    }

    #[test]
    fn table_names_are_validated() {
        for ok in ["t", "_t1", "Orders_2026"] {
            validate_table_name(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", "1abc", "a b", "_kiln", "é"] {
            assert!(validate_table_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn catalog_round_trips_and_publish_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        assert!(lake.catalog().unwrap().tables.is_empty());

        let staged = lake.stage("t").unwrap();
        fs::write(staged.dir().join("part-0.parquet"), b"x").unwrap();
        let published = lake.publish("t", staged, None, managed).unwrap();
        assert_eq!(published.snapshot, 1);
        let reopened = Lake::open(dir.path()).unwrap();
        assert_eq!(
            reopened.catalog().unwrap().tables["t"],
            TableEntry::Managed(managed(1))
        );

        // A staged write that is dropped (failed statement) leaves no trace.
        let staged = lake.stage("t").unwrap();
        let staging_dir = staged.dir().to_path_buf();
        fs::write(staging_dir.join("part-1.parquet"), b"y").unwrap();
        drop(staged);
        assert!(!staging_dir.exists());
        assert_eq!(
            lake.catalog().unwrap().tables["t"],
            TableEntry::Managed(managed(1))
        );

        // An append carries the previous snapshot's files forward.
        let staged = lake.stage("t").unwrap();
        lake.carry_snapshot("t", 1, &staged, None).unwrap();
        fs::write(staged.dir().join("part-2.parquet"), b"z").unwrap();
        let published = lake.publish("t", staged, None, managed).unwrap();
        assert_eq!(published.snapshot, 2);
        let files: Vec<_> = fs::read_dir(lake.snapshot_dir("t", 2)).unwrap().collect();
        assert_eq!(files.len(), 2);
        assert!(!lake.snapshot_dir("t", 1).exists(), "old snapshot removed");
    }

    #[test]
    fn staging_of_dead_processes_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let stale = lake
            .table_dir("t")
            .join(format!("{STAGING_PREFIX}999999999-abc"));
        fs::create_dir_all(&stale).unwrap();
        let _staged = lake.stage("t").unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn corrupt_catalog_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        fs::write(lake.catalog_path(), "{ not json").unwrap();
        let err = lake.catalog().unwrap_err().to_string();
        assert!(
            err.contains("catalog.json") && err.contains("corrupt"),
            "{err}"
        );
    }

    #[test]
    fn drop_removes_entry_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let staged = lake.stage("t").unwrap();
        lake.publish("t", staged, None, managed).unwrap();
        assert!(lake.drop_table("t").unwrap().is_some());
        assert!(!lake.table_dir("t").exists());
        assert!(lake.drop_table("t").unwrap().is_none());
    }
}
