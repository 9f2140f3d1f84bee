//! What an operator installs next to the binary: shell completions, and the files in `deploy/`
//! and the `Dockerfile`, checked with the tools that read them where those run here
//! (`bash -n` for the completions, `systemd-analyze verify` for the unit, a YAML parser for the
//! compose file; container images are not built here: there is no container daemon).

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
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(repository().join("deploy/compose.yaml"))
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
