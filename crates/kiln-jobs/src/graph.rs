//! The jobs of a folder and the order their dependencies impose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{io_err, JobError, Result};
use crate::spec::JobSpec;

/// Every job of a jobs folder, validated: dependencies exist and form no cycle.
#[derive(Debug, Clone)]
pub struct JobSet {
    dir: PathBuf,
    jobs: BTreeMap<String, JobSpec>,
}

impl JobSet {
    /// Loads every `*.sql` file of `dir` (not recursive).
    pub fn load(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        let mut specs = vec![];
        for entry in entries {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().is_some_and(|e| e == "sql") && path.is_file() {
                specs.push(JobSpec::load(&path)?);
            }
        }
        Self::from_specs(dir, specs)
    }

    pub fn from_specs(dir: &Path, specs: Vec<JobSpec>) -> Result<Self> {
        let jobs: BTreeMap<String, JobSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let set = Self {
            dir: dir.to_path_buf(),
            jobs,
        };
        for spec in set.jobs.values() {
            for dependency in &spec.depends_on {
                if !set.jobs.contains_key(dependency) {
                    return Err(JobError::MissingDependency {
                        job: spec.name.clone(),
                        dependency: dependency.clone(),
                        dir: set.dir.clone(),
                    });
                }
            }
        }
        for name in set.jobs.keys() {
            set.order(name)?;
        }
        Ok(set)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn iter(&self) -> impl Iterator<Item = &JobSpec> {
        self.jobs.values()
    }

    pub fn get(&self, name: &str) -> Result<&JobSpec> {
        self.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            JobError::MissingJob {
                name: name.to_string(),
                dir: self.dir.clone(),
                hint: if known.is_empty() {
                    " (the folder has no .sql files)".to_string()
                } else {
                    format!("; jobs there: {}", known.join(", "))
                },
            }
        })
    }

    /// `name` and everything it depends on, dependencies first.
    pub fn order(&self, name: &str) -> Result<Vec<&JobSpec>> {
        let mut order = vec![];
        let mut path = vec![];
        self.visit(name, &mut path, &mut order)?;
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        path: &mut Vec<String>,
        order: &mut Vec<&'a JobSpec>,
    ) -> Result<()> {
        if order.iter().any(|s| s.name == name) {
            return Ok(());
        }
        if let Some(start) = path.iter().position(|p| p == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name.to_string());
            return Err(JobError::CircularDependency {
                cycle: cycle.join(" -> "),
            });
        }
        let spec = self.get(name)?;
        path.push(name.to_string());
        for dependency in &spec.depends_on {
            self.visit(dependency, path, order)?;
        }
        path.pop();
        order.push(spec);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, deps: &str) -> JobSpec {
        let header = if deps.is_empty() {
            String::new()
        } else {
            format!("-- depends_on: {deps}\n")
        };
        JobSpec::parse(name, Path::new(name), &header).unwrap()
    }

    #[test]
    fn dependencies_come_first_once() {
        let set = JobSet::from_specs(
            Path::new("jobs"),
            vec![job("a", ""), job("b", "a"), job("c", "a, b")],
        )
        .unwrap();
        let order: Vec<&str> = set
            .order("c")
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn cycles_and_missing_jobs_are_named() {
        let err = JobSet::from_specs(
            Path::new("jobs"),
            vec![job("a", "c"), job("b", "a"), job("c", "b")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("circular job dependencies: a -> c -> b -> a"),
            "{err}"
        );
        let err = JobSet::from_specs(Path::new("jobs"), vec![job("a", "zzz")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("depends on 'zzz'"), "{err}");
        let set = JobSet::from_specs(Path::new("jobs"), vec![job("a", "")]).unwrap();
        let err = set.get("nightly").unwrap_err().to_string();
        assert!(
            err.contains("no job named 'nightly'") && err.contains("jobs there: a"),
            "{err}"
        );
    }
}
