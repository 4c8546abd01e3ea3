//! The model registry: `LAKE/_models/<name>/v<N>/{model.safetensors, card.json}`.
//! A version is published by renaming its fully written staging directory to
//! `v<N>`; readers only ever see complete versions. The latest version is the
//! highest N.

use std::fs;
use std::path::{Path, PathBuf};

use datafusion::error::{DataFusionError, Result};
use kiln_ml::fit::EpochRecord;
use kiln_ml::metrics::Metrics;
use kiln_ml::{Model, TrainOptions};
use serde::{Deserialize, Serialize};

use crate::catalog::lake::validate_table_name;

const MODELS_DIR: &str = "_models";

/// Everything known about one model version, stored as `card.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: u64,
    pub model_type: String,
    pub task: kiln_ml::Task,
    pub options: TrainOptions,
    /// Feature columns in order, with their Arrow types and widths.
    pub features: Vec<FeatureColumn>,
    pub label: Option<String>,
    /// The label's Arrow type (classifiers predict values of this type).
    pub label_type: Option<String>,
    /// Class values (as text) in class-index order.
    pub classes: Option<Vec<String>>,
    pub epochs: Vec<EpochRecord>,
    pub final_metrics: Option<Metrics>,
    pub rows_seen: u64,
    pub duration_ms: u64,
    pub trained_at: String,
    pub source_query: String,
    pub source_tables: Vec<String>,
    pub warm_started_from: Option<u64>,
    pub kiln_version: String,
    /// The checks on the source tables that ran before training (lineage).
    #[serde(default)]
    pub checks: Vec<crate::catalog::check::CheckOutcome>,
    /// Fitted TRANSFORM expressions, re-applied by PREDICT and EVALUATE.
    #[serde(default)]
    pub transform: Vec<crate::catalog::transform::FittedTransform>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureColumn {
    pub name: String,
    pub data_type: String,
    pub width: usize,
}

/// Model versions in a lake.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    root: PathBuf,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("model registry '{}': {e}", path.display()))
}

/// Checks a model name (same rules as table names: no path tricks).
pub fn validate_model_name(name: &str) -> Result<()> {
    validate_table_name(name).map_err(|_| {
        DataFusionError::Plan(format!(
            "invalid model name '{name}': use letters, digits and '_' only, starting with a letter or '_'"
        ))
    })
}

impl ModelRegistry {
    pub fn new(lake_root: &Path) -> Self {
        Self {
            root: lake_root.join(MODELS_DIR),
        }
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Published versions of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        let mut versions: Vec<u64> = fs::read_dir(self.model_dir(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
            .collect();
        versions.sort_unstable();
        versions
    }

    pub fn latest(&self, name: &str) -> Option<u64> {
        self.versions(name).last().copied()
    }

    /// Names of all models, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !self.versions(n).is_empty())
            .collect();
        names.sort();
        names
    }

    /// Resolves `version` (or the latest) of `name`, with errors that list what exists.
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<u64> {
        validate_model_name(name)?;
        let versions = self.versions(name);
        match (version, versions.last()) {
            (_, None) => {
                let known = self.names();
                let hint = if known.is_empty() {
                    "no models have been trained yet (TRAIN MODEL ...)".to_string()
                } else {
                    format!("known models: {}", known.join(", "))
                };
                Err(DataFusionError::Plan(format!(
                    "model '{name}' not found; {hint}"
                )))
            }
            (Some(v), Some(_)) if !versions.contains(&v) => Err(DataFusionError::Plan(format!(
                "model '{name}' has no version {v}; versions: {}",
                versions
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            (Some(v), _) => Ok(v),
            (None, Some(latest)) => Ok(*latest),
        }
    }

    /// The card of `name` at `version` (the latest when `None`).
    pub fn card_of(&self, name: &str, version: Option<u64>) -> Result<ModelCard> {
        let version = self.resolve(name, version)?;
        self.card(name, version)
    }

    pub fn load(&self, name: &str, version: u64) -> Result<(Model, ModelCard)> {
        let dir = self.model_dir(name).join(format!("v{version}"));
        let weights_path = dir.join("model.safetensors");
        let bytes = fs::read(&weights_path).map_err(|e| io_error(&weights_path, e))?;
        let model = kiln_ml::file::from_bytes(&bytes, &weights_path.display().to_string())
            .map_err(|e| {
                DataFusionError::External(Box::new(e)).context(format!("model '{name}' v{version}"))
            })?;
        Ok((model, self.card(name, version)?))
    }

    pub fn card(&self, name: &str, version: u64) -> Result<ModelCard> {
        let path = self
            .model_dir(name)
            .join(format!("v{version}"))
            .join("card.json");
        let text = fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        serde_json::from_str(&text).map_err(|e| io_error(&path, e))
    }

    /// Writes a new version (the next number) atomically; returns its number.
    pub fn publish(&self, model: &Model, card: &mut ModelCard) -> Result<u64> {
        let dir = self.model_dir(&card.name);
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let staging = dir.join(format!(
            "_staging-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir(&staging).map_err(|e| io_error(&staging, e))?;
        let result = (|| {
            let bytes = kiln_ml::file::to_bytes(model).map_err(|e| {
                DataFusionError::External(Box::new(e))
                    .context(format!("writing model '{}'", card.name))
            })?;
            fs::write(staging.join("model.safetensors"), bytes)
                .map_err(|e| io_error(&staging, e))?;
            loop {
                let version = self.latest(&card.name).unwrap_or(0) + 1;
                card.version = version;
                let text = serde_json::to_string_pretty(card).map_err(|e| io_error(&staging, e))?;
                fs::write(staging.join("card.json"), text).map_err(|e| io_error(&staging, e))?;
                let target = dir.join(format!("v{version}"));
                // rename fails if another writer published this number first: retry with the next.
                match fs::rename(&staging, &target) {
                    Ok(()) => return Ok(version),
                    Err(_) if target.exists() => continue,
                    Err(e) => return Err(io_error(&target, e)),
                }
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// Removes every version of `name`; false if it did not exist.
    pub fn drop_model(&self, name: &str) -> Result<bool> {
        validate_model_name(name)?;
        let dir = self.model_dir(name);
        if self.versions(name).is_empty() {
            return Ok(false);
        }
        fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(true)
    }
}
