//! The client examples in `examples/`, each run by its own `run.sh` (which fetches its
//! dependencies from the language's registry and generates its stubs from `proto/`) against
//! a real server: an add with a token, the same add again, a read, and where the language's
//! Redis client is part of the example, a counter over the Redis protocol.

use std::path::Path;
use std::process::Command;

use crate::Server;

fn run_example(language: &str, with_redis: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/{language}/run.sh"));
    let mut command = Command::new("bash");
    command.arg(&script).arg(&s.grpc);
    if with_redis {
        command.arg(&s.resp);
    }
    let out = command.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "the {language} example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = vec!["add: applied=true", "retry: applied=false", "get: count=3"];
    if with_redis {
        expected.push("redis: visits=2");
    }
    let printed: Vec<&str> = stdout.lines().filter(|l| l.contains(": ")).map(str::trim).collect();
    assert_eq!(printed, expected, "{language}: {stdout}");
}

#[test]
fn the_python_example_runs_with_grpcio_and_redis_py() {
    run_example("python", true);
}

#[test]
fn the_node_example_runs_with_grpc_js_and_ioredis() {
    run_example("node", true);
}

#[test]
fn the_go_example_runs_with_grpc_go() {
    run_example("go", false);
}

#[test]
fn the_java_example_runs_with_grpc_java() {
    run_example("java", false);
}

#[test]
fn the_rust_example_runs_with_tally_client() {
    run_example("rust", true);
}
