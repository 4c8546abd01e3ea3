//! Dependency rules read from Cargo.lock: the kernels, ML and jobs crates stay
//! free of DataFusion, Arrow and Ballista so they build and test in seconds,
//! and the SQL layer never pulls in Ballista's scheduler or executor (they
//! belong to kiln-cluster).

use std::collections::{BTreeSet, HashMap};

/// Each package of Cargo.lock with the names of its dependencies.
fn lock_graph() -> HashMap<String, Vec<String>> {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let name = package
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .map(|n| n.trim_end_matches('"').to_string())
            .unwrap();
        let list = package
            .split("dependencies = [")
            .nth(1)
            .map(|d| d.split(']').next().unwrap_or(""))
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.trim().trim_end_matches(',').strip_prefix('"'))
            .map(|l| {
                l.trim_end_matches('"')
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        deps.entry(name).or_default().extend::<Vec<String>>(list);
    }
    deps
}

/// Every package `root` depends on, directly or not.
fn closure(deps: &HashMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(name) = stack.pop() {
        if seen.insert(name.clone()) {
            stack.extend(deps.get(&name).cloned().unwrap_or_default());
        }
    }
    seen
}

#[test]
fn kernels_ml_and_jobs_do_not_depend_on_datafusion_arrow_or_ballista() {
    let deps = lock_graph();
    for (krate, witness) in [
        ("kiln-kernels", "gemm"),
        ("kiln-ml", "safetensors"),
        ("kiln-jobs", "croner"),
    ] {
        let seen = closure(&deps, krate);
        assert!(
            seen.contains(witness),
            "the walk found {krate}'s dependencies: {seen:?}"
        );
        let forbidden: Vec<_> = seen
            .iter()
            .filter(|n| {
                n.starts_with("datafusion")
                    || n.starts_with("arrow")
                    || n.starts_with("ballista")
                    || n.starts_with("parquet")
            })
            .collect();
        assert!(forbidden.is_empty(), "{krate} pulls in {forbidden:?}");
    }
}

#[test]
fn the_sql_layer_does_not_depend_on_ballista_processes() {
    let mut deps = lock_graph();
    // Cargo.lock lists dev-dependencies too; the rule is about what kiln-sql
    // ships with, its [dependencies] section.
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kiln-sql/Cargo.toml"
    ))
    .unwrap();
    let section = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap();
    let direct: Vec<String> = section
        .lines()
        .filter_map(|l| l.split(['=', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    assert!(direct.contains(&"datafusion".to_string()), "{direct:?}");
    deps.insert("kiln-sql".to_string(), direct);
    let seen = closure(&deps, "kiln-sql");
    assert!(seen.contains("ballista-core"), "{seen:?}");
    for process in [
        "ballista-scheduler",
        "ballista-executor",
        "ballista-flight-sql",
        "kiln-cluster",
    ] {
        assert!(!seen.contains(process), "kiln-sql pulls in {process}");
    }
    assert!(
        !deps["kiln-sql"]
            .iter()
            .any(|d| d == "axum" || d == "tonic" || d == "arrow-flight"),
        "kiln-sql depends on a server crate directly: {:?}",
        deps["kiln-sql"]
    );
    assert!(closure(&deps, "kiln-cluster").contains("ballista-scheduler"));
}
