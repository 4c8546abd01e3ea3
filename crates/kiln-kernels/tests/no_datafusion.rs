//! The kernels and ML crates must stay free of DataFusion, Arrow and Ballista
//! so they build and test in seconds: walk their dependency graphs in Cargo.lock.

use std::collections::{BTreeSet, HashMap};

#[test]
fn kernels_and_ml_do_not_depend_on_datafusion_arrow_or_ballista() {
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
    let mut seen = BTreeSet::new();
    let mut stack = vec!["kiln-kernels".to_string()];
    while let Some(name) = stack.pop() {
        if seen.insert(name.clone()) {
            stack.extend(deps.get(&name).cloned().unwrap_or_default());
        }
    }
    assert!(
        seen.contains("gemm"),
        "the walk found kiln-kernels' dependencies: {seen:?}"
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
    assert!(forbidden.is_empty(), "kiln-kernels pulls in {forbidden:?}");
}
