//! The runtime each task runs in: the memory limits a client session set
//! (`SET datafusion.runtime.memory_limit`, `max_temp_directory_size`) travel
//! with every statement as the `kiln_runtime` options and bound its tasks on
//! the executors, as they bound a plain DataFusion session's queries.

use std::sync::Arc;

use datafusion::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::DEFAULT_MAX_TEMP_DIRECTORY_SIZE;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;

/// The memory limits of the client session's runtime (`SET
/// datafusion.runtime.memory_limit`, `max_temp_directory_size`), sent with
/// each statement so that its tasks run under them ([`task_runtime`]).
/// Options `kiln_runtime.memory_limit` and `kiln_runtime.max_temp_directory_size`, in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KilnRuntimeOptions {
    /// Bytes a task may hold in memory before it spills or fails.
    pub memory_limit: Option<usize>,
    /// Bytes a task may write to spill files.
    pub max_temp_directory_size: Option<u64>,
}

impl ConfigExtension for KilnRuntimeOptions {
    const PREFIX: &'static str = "kiln_runtime";
}

impl ExtensionOptions for KilnRuntimeOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bytes = |value: &str| -> Result<Option<u64>> {
            if value.is_empty() {
                return Ok(None);
            }
            value.parse().map(Some).map_err(|e| {
                DataFusionError::Configuration(format!(
                    "{}.{key}: '{value}' is not a number of bytes ({e})",
                    Self::PREFIX
                ))
            })
        };
        match key {
            "memory_limit" => self.memory_limit = bytes(value)?.map(|b| b as usize),
            "max_temp_directory_size" => self.max_temp_directory_size = bytes(value)?,
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown option {}.{key}",
                    Self::PREFIX
                )))
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let entry = |key: &str, value: Option<u64>, description| ConfigEntry {
            key: format!("{}.{key}", Self::PREFIX),
            value: value.map(|v| v.to_string()),
            description,
        };
        vec![
            entry(
                "memory_limit",
                self.memory_limit.map(|b| b as u64),
                "Bytes a task of this session may hold in memory (from SET datafusion.runtime.memory_limit)",
            ),
            entry(
                "max_temp_directory_size",
                self.max_temp_directory_size,
                "Bytes a task of this session may spill (from SET datafusion.runtime.max_temp_directory_size)",
            ),
        ]
    }
}

/// `config` carrying the memory limits of a client session's `runtime`.
pub fn with_runtime_limits(mut config: SessionConfig, runtime: &RuntimeEnv) -> SessionConfig {
    let limits = KilnRuntimeOptions {
        memory_limit: match runtime.memory_pool.memory_limit() {
            MemoryLimit::Finite(bytes) => Some(bytes),
            MemoryLimit::Infinite | MemoryLimit::Unknown => None,
        },
        max_temp_directory_size: Some(runtime.disk_manager.max_temp_directory_size())
            .filter(|&bytes| bytes != DEFAULT_MAX_TEMP_DIRECTORY_SIZE),
    };
    config.options_mut().extensions.insert(limits);
    config
}

/// The runtime a task runs in: the executor's `base` runtime, with the
/// memory limits the statement's session set ([`with_runtime_limits`]).
pub fn task_runtime(base: &Arc<RuntimeEnv>, config: &SessionConfig) -> Result<Arc<RuntimeEnv>> {
    let Some(limits) = config.options().extensions.get::<KilnRuntimeOptions>() else {
        return Ok(Arc::clone(base));
    };
    if limits.memory_limit.is_none() && limits.max_temp_directory_size.is_none() {
        return Ok(Arc::clone(base));
    }
    let mut builder = RuntimeEnvBuilder::from_runtime_env(base);
    if let Some(bytes) = limits.memory_limit {
        builder = builder.with_memory_limit(bytes, 1.0);
    }
    if let Some(bytes) = limits.max_temp_directory_size {
        builder = builder.with_max_temp_directory_size(bytes);
    }
    builder.build_arc()
}
