//! No Docker engine or Kubernetes cluster is available to CI: instead every
//! file in `deploy/` is parsed, and each `kiln` command line in it must be
//! accepted by Kiln's own argument parser.

use std::path::{Path, PathBuf};

use clap::Parser;
use kiln_cli::args::Cli;
use yaml_rust2::{Yaml, YamlLoader};

use crate::common::repo_root;

fn deploy_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            deploy_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn check_kiln_args(file: &Path, args: &[String]) {
    let mut argv = vec!["kiln".to_string()];
    argv.extend(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(&argv) {
        panic!(
            "{}: `{}` is not a valid kiln command line:\n{e}",
            file.display(),
            argv.join(" ")
        );
    }
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_vec()
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().expect("command items are strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Command lines in a compose file: every service's `command`.
fn compose_commands(doc: &Yaml) -> Vec<Vec<String>> {
    doc["services"]
        .as_hash()
        .expect("compose file has services")
        .values()
        .map(|service| strings(&service["command"]))
        .filter(|c| !c.is_empty())
        .collect()
}

/// Command lines in Kubernetes manifests: `args` of every container of a
/// workload or CronJob (the image's entrypoint is `kiln`).
fn kubernetes_commands(doc: &Yaml) -> Vec<Vec<String>> {
    let pod = if doc["kind"].as_str() == Some("CronJob") {
        let schedule = doc["spec"]["schedule"]
            .as_str()
            .expect("a CronJob has a schedule");
        let zone = doc["spec"]["timeZone"].as_str().unwrap_or("UTC");
        kiln_jobs::Schedule::new("CronJob", schedule, zone).unwrap();
        &doc["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &doc["spec"]["template"]
    };
    let containers = &pod["spec"]["containers"];
    containers
        .as_vec()
        .map(|cs| {
            cs.iter()
                .map(|c| strings(&c["args"]))
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Command lines of a crontab: five schedule fields, then the command up to
/// its redirections. Every schedule must be a valid cron expression.
fn crontab_commands(file: &Path, text: &str) -> Vec<Vec<String>> {
    let mut commands = vec![];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.contains('=') && !line.contains(' ') {
            continue;
        }
        let words = shlex::split(line).expect("crontab line splits");
        let schedule = words[..5].join(" ");
        kiln_jobs::Schedule::new("crontab", &schedule, "UTC")
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(words[5].ends_with("/kiln"), "{}: {line}", file.display());
        commands.push(
            words[6..]
                .iter()
                .take_while(|w| !w.starts_with('>') && !w.starts_with("2>"))
                .cloned()
                .collect(),
        );
    }
    commands
}

#[test]
fn every_deploy_file_parses_and_its_kiln_command_lines_are_valid() {
    let mut files = vec![];
    deploy_files(&repo_root().join("deploy"), &mut files);
    files.sort();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let commands: Vec<Vec<String>> = if name.ends_with(".md") {
            continue;
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            let docs = YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", file.display()));
            docs.iter()
                .flat_map(|doc| {
                    if doc["services"].is_badvalue() {
                        kubernetes_commands(doc)
                    } else {
                        compose_commands(doc)
                    }
                })
                .collect()
        } else if name == "Dockerfile" {
            let json_array = |keyword: &str| -> Vec<String> {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(keyword))
                    .unwrap_or_else(|| panic!("{}: no {keyword}", file.display()));
                serde_json::from_str(line[keyword.len()..].trim()).unwrap_or_else(|e| {
                    panic!("{}: {keyword} is not a JSON array: {e}", file.display())
                })
            };
            assert_eq!(json_array("ENTRYPOINT"), vec!["kiln".to_string()]);
            vec![json_array("CMD")]
        } else if name.ends_with(".crontab") {
            crontab_commands(file, &text)
        } else if name.ends_with(".timer") {
            let unit = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Unit="))
                .unwrap_or_else(|| panic!("{}: no Unit=", file.display()));
            assert!(
                file.with_file_name(unit).exists(),
                "{}: Unit={unit} is not a file beside it",
                file.display()
            );
            continue;
        } else if name.ends_with(".service") {
            let mut section = String::new();
            let mut commands = vec![];
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line.starts_with('[') {
                    assert!(
                        line.ends_with(']'),
                        "{}: bad section {line}",
                        file.display()
                    );
                    section = line.to_string();
                    continue;
                }
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: not key=value: {line}", file.display()));
                if key == "ExecStart" {
                    assert_eq!(section, "[Service]", "{}", file.display());
                    let words = shlex::split(value).expect("ExecStart splits");
                    assert!(words[0].ends_with("/kiln"), "{}: {value}", file.display());
                    commands.push(words[1..].to_vec());
                }
            }
            commands
        } else {
            panic!(
                "{}: unknown kind of deploy file; teach this test to check it",
                file.display()
            );
        };
        assert!(
            !commands.is_empty(),
            "{}: no kiln command line found",
            file.display()
        );
        for args in &commands {
            check_kiln_args(file, args);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} command lines checked");
}

#[test]
fn the_check_rejects_a_bad_command_line() {
    let bad = [
        "executor".to_string(),
        "--slots".to_string(),
        "many".to_string(),
    ];
    let result = std::panic::catch_unwind(|| check_kiln_args(Path::new("x"), &bad));
    assert!(result.is_err());
}
