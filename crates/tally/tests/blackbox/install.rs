//! What an operator installs next to the binary: shell completions, and the files in `deploy/`
//! and the `Dockerfile`, checked with the tools that read them where those run here
//! (`bash -n` for the completions, `systemd-analyze verify` for the unit, a YAML parser for the
//! compose file and the alert rules; container images are not built here: there is no
//! container daemon), and the dashboard and alert rules against the metrics the server exports.

use std::path::Path;
use std::process::Command;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("repository root")
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repository().join("deploy/tally.service")).expect("unit");
    // `verify` checks that ExecStart names an executable: point it at the binary under test.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tally.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/tally", env!("CARGO_BIN_EXE_tally"))).expect("write");
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are warnings with exit status 0: any output is a failure.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    assert!(unit.contains("ExecStart=/usr/local/bin/tally serve"), "the unit starts the server");
}

#[test]
fn the_compose_file_parses_and_its_instances_agree_on_their_peers() {
    let script = r#"
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
instances = {name: s for name, s in doc["services"].items() if name.startswith("tally-")}
assert len(instances) == 3, instances.keys()
for name, s in instances.items():
    env = s["environment"]
    peers = env["TALLY_PEERS"].split(",")
    assert env["TALLY_ADVERTISE"] in peers, (name, env)
    assert env["TALLY_ADVERTISE"].startswith(name + ":"), (name, env)
    assert env["TALLY_STORE"].startswith("cassandra://"), env
print("ok")
"#;
    run_python(script, "deploy/compose.yaml");
}

/// Runs a Python `script` (with PyYAML) on the repository's file `path`; fails the test with
/// its stderr if the script fails, and returns its stdout.
fn run_python(script: &str, path: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(repository().join(path))
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn the_dockerfile_builds_the_binary_and_serves_on_every_interface() {
    let text = std::fs::read_to_string(repository().join("Dockerfile")).expect("Dockerfile");
    let rust = env!("CARGO_PKG_RUST_VERSION");
    assert!(text.contains(&format!("FROM rust:{rust}-")), "the build stage uses the MSRV {rust}");
    for needed in ["cargo build --release --locked", "TALLY_HTTP=0.0.0.0:7080", "STOPSIGNAL SIGTERM"] {
        assert!(text.contains(needed), "{needed}");
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_tally")).args(["completions", shell]).output().expect("runs");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("serve") && script.contains("data-dir"), "{shell}");
        if shell == "bash" {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("tally.bash");
            std::fs::write(&path, script.as_bytes()).expect("write");
            let check = Command::new("bash").arg("-n").arg(&path).output().expect("bash runs");
            assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_tally")).args(["completions", "tcsh"]).output().expect("runs");
    assert!(!bad.status.success(), "an unknown shell is refused");
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally")).arg("--version").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repository())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = if head.is_empty() { "unknown".to_owned() } else { head };
    let expected = format!("tally {} (commit {commit}, features: tls, mimalloc)", env!("CARGO_PKG_VERSION"));
    assert_eq!(text.trim(), expected);
}

/// The metric a name in a query stands for: a histogram's `_bucket`, `_sum` and `_count`
/// series are the histogram's.
fn exported_metric(name: &str) -> Option<&'static str> {
    use tally_server::metrics::{DESCRIBED, Kind};
    DESCRIBED.iter().find_map(|(metric, kind, _)| {
        let series_of_it = *metric == name
            || (matches!(kind, Kind::Histogram)
                && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(*metric)));
        series_of_it.then_some(*metric)
    })
}

/// Every `tally_*` and `process_*` name in `expr`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("tally_") || word.starts_with("process_") {
            names.push(word.to_owned());
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_and_alert_rules_name_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repository().join("deploy/grafana/tally.json")).expect("read"),
    )
    .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("each target has an expr").to_owned())
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    // The rules, read by a YAML parser: each has a name, an expression, a severity and a summary.
    let script = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
rules = [r for g in doc["groups"] for r in g["rules"]]
for r in rules:
    assert r["alert"] and r["expr"] and r["labels"]["severity"] and r["annotations"]["summary"], r
print(json.dumps([r["expr"] for r in rules]))
"#;
    let rules: Vec<String> = serde_json::from_slice(&run_python(script, "deploy/prometheus/alerts.yaml"))
        .expect("the rules' expressions");
    assert!(rules.len() >= 5, "the alert rules are there");
    exprs.extend(rules);
    let mut named = std::collections::BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(exported_metric(&name).is_some(), "`{name}` in `{expr}` is not a metric tally exports");
            named.extend(exported_metric(&name));
        }
    }
    for needed in ["tally_requests_total", "tally_checkpoint_age_seconds", "tally_store_shed_total"] {
        assert!(named.contains(needed), "{needed} is watched");
    }
    assert!(
        exported_metric("tally_requests_totl").is_none()
            && exported_metric("tally_requests_total_bucket").is_none()
    );
}
