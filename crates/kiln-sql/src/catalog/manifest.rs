//! INGEST manifests: the files an ingested table has loaded, as stored under
//! `_kiln/ingest/`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The files an ingested table has loaded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub table: String,
    pub files: Vec<LoadedFile>,
}

/// One loaded source file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub size: u64,
    pub modified_unix_ms: i64,
    pub sha256: String,
    pub ingested_at: DateTime<Utc>,
    /// The INGEST run that loaded it.
    pub batch: String,
}
