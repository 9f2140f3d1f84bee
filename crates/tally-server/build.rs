//! Records the commit the server is built from, as `TALLY_COMMIT` (`unknown` outside a git
//! checkout), for `tally --version` and the `tally_build_info` metric.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TALLY_COMMIT={commit}");
    // Built again when HEAD moves: HEAD itself, and the branch it names.
    let git = root.join(".git");
    for watched in [git.join("HEAD"), git.join("packed-refs")] {
        if watched.exists() {
            println!("cargo:rerun-if-changed={}", watched.display());
        }
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(branch) = head.strip_prefix("ref: ")
    {
        let branch = git.join(branch.trim());
        if branch.exists() {
            println!("cargo:rerun-if-changed={}", branch.display());
        }
    }
}
