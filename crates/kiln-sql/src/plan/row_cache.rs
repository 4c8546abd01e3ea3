//! Training rows kept between the rounds of one `TRAIN MODEL` statement, in
//! the process that runs the rounds' tasks. Every round of a run reads the
//! same query, so after the first round each partition's rows, already
//! converted to the kernels' row-major `f32` batches, are served from here
//! instead of reading and converting the input again (an L-BFGS fit runs
//! tens of rounds).
//!
//! A run's rows are used only once every partition of its input is cached
//! whole: a round must not pair cached partitions with re-read ones, which
//! may split the rows differently. A run that outgrows the budget is
//! refused whole and reads its input every round, as without a cache. The
//! statement drops its run when it ends ([`RunGuard`]). Only the embedded
//! cluster caches (its executor is this process); a cluster's executors
//! would keep partial runs that no statement ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use kiln_ml::Batch;

/// Rows kept across all runs: a quarter of the machine's memory, at most 4 GiB.
fn default_budget() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024);
    (total / 4).min(4 << 30)
}

#[derive(Default)]
struct Run {
    partitions: HashMap<usize, Arc<Vec<Batch>>>,
    /// Bytes of this run's batches, kept or being collected.
    bytes: usize,
    refused: bool,
}

pub struct RowCache {
    budget: usize,
    state: Mutex<(usize, HashMap<String, Run>)>,
    served: AtomicU64,
}

static CACHE: LazyLock<RowCache> = LazyLock::new(|| RowCache::new(default_budget()));

/// The process's cache.
pub fn cache() -> &'static RowCache {
    &CACHE
}

fn batch_bytes(batch: &Batch) -> usize {
    let targets = match &batch.targets {
        kiln_ml::Targets::None => 0,
        kiln_ml::Targets::Values(v) => v.len() * 4,
        kiln_ml::Targets::Classes(c) => c.len() * 4,
    };
    batch.features.len() * 4 + targets
}

impl RowCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new((0, HashMap::new())),
            served: AtomicU64::new(0),
        }
    }

    /// Partition `partition`'s rows of `run` when all `partitions` are cached.
    pub fn rows(&self, run: &str, partition: usize, partitions: usize) -> Option<Arc<Vec<Batch>>> {
        let state = self.state.lock().ok()?;
        let entry = state.1.get(run)?;
        if entry.refused || entry.partitions.len() != partitions {
            return None;
        }
        let rows = entry.partitions.get(&partition).cloned()?;
        self.served.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Some(rows)
    }

    /// Batches served from the cache since the process started.
    pub fn served_batches(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Reserves room for `batch` in `run`; `false` (and the run refused,
    /// its rows freed) when the budget would be exceeded.
    pub fn reserve(&self, run: &str, batch: &Batch) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let (used, runs) = &mut *state;
        let entry = runs.entry(run.to_string()).or_default();
        if entry.refused {
            return false;
        }
        let bytes = batch_bytes(batch);
        if *used + bytes > self.budget {
            *used -= entry.bytes;
            entry.bytes = 0;
            entry.partitions.clear();
            entry.refused = true;
            log::info!(
                "training rows of run {run} exceed the row cache's budget; rounds read their input"
            );
            return false;
        }
        *used += bytes;
        entry.bytes += bytes;
        true
    }

    /// Keeps a partition's complete rows (reserved batch by batch).
    pub fn store(&self, run: &str, partition: usize, batches: Vec<Batch>) {
        if let Ok(mut state) = self.state.lock() {
            let entry = state.1.entry(run.to_string()).or_default();
            if !entry.refused {
                entry.partitions.insert(partition, Arc::new(batches));
            }
        }
    }

    /// Drops a run's rows.
    pub fn forget(&self, run: &str) {
        if let Ok(mut state) = self.state.lock() {
            let (used, runs) = &mut *state;
            if let Some(entry) = runs.remove(run) {
                *used -= entry.bytes;
            }
        }
    }

    /// Bytes held, for tests.
    pub fn used(&self) -> usize {
        self.state.lock().map_or(0, |s| s.0)
    }
}

/// Drops its run's rows when the statement that trains ends, however it ends.
pub struct RunGuard(pub String);

impl Drop for RunGuard {
    fn drop(&mut self) {
        cache().forget(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Batch {
        Batch {
            features: vec![1.0; n],
            dims: 1,
            targets: kiln_ml::Targets::Values(vec![0.0; n]),
        }
    }

    #[test]
    fn a_run_is_served_only_whole_and_refused_whole_over_the_budget() {
        let cache = RowCache::new(100);
        assert!(cache.reserve("a", &rows(5)));
        cache.store("a", 0, vec![rows(5)]);
        assert!(
            cache.rows("a", 0, 2).is_none(),
            "one of two partitions cached"
        );
        assert!(cache.reserve("a", &rows(5)));
        cache.store("a", 1, vec![rows(5)]);
        assert_eq!(cache.rows("a", 1, 2).unwrap()[0].rows(), 5);
        assert_eq!(cache.used(), 80);

        assert!(!cache.reserve("b", &rows(3)), "80 + 24 bytes > 100");
        cache.store("b", 0, vec![rows(3)]);
        assert!(cache.rows("b", 0, 1).is_none());
        cache.forget("a");
        assert_eq!(cache.used(), 0);
        assert!(!cache.reserve("b", &rows(1)), "a refused run stays refused");
    }
}
