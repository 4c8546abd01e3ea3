//! kiln-sql's folders are its data flow and depend only downward:
//! `catalog` < `error` < `functions` < `plan` < `parse` < `exec`, with the
//! root files (`session.rs`, `state.rs`, `lib.rs`) above them all. The one
//! sanctioned upward reference: `exec` names the session type its statement
//! families are functions over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: [&str; 6] = ["catalog", "error", "functions", "plan", "parse", "exec"];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| *l == module)
        .unwrap_or(LAYERS.len())
}

/// The modules a file names as `crate::<module>`.
fn references_of(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Every `.rs` file under `dir` with the modules it references.
fn references(dir: &Path, out: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            references(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.insert(path.display().to_string(), references_of(&path));
        }
    }
}

#[test]
fn folders_import_only_the_folders_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = vec![];
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for layer in LAYERS {
        let mut files = BTreeMap::new();
        let folder = src.join(layer);
        if folder.is_dir() {
            references(&folder, &mut files);
        } else {
            let file = src.join(format!("{layer}.rs"));
            files.insert(file.display().to_string(), references_of(&file));
        }
        assert!(!files.is_empty(), "no files for layer {layer}");
        for (file, names) in files {
            for name in names {
                let allowed = name == layer
                    || rank(&name) < rank(layer)
                    || (layer == "exec" && name == "session");
                if !allowed {
                    violations.push(format!("{file} uses crate::{name}"));
                }
                if name != layer && LAYERS.contains(&name.as_str()) {
                    edges.insert((layer.to_string(), name));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
    // With every edge pointing down, there is no cycle; check it outright anyway.
    for (from, to) in &edges {
        assert!(
            !edges.contains(&(to.clone(), from.clone())),
            "{from} <-> {to}"
        );
    }
}
