//! TLS on all three front doors of the real binary (the default build has TLS), driven by
//! real clients that trust only a CA this test makes with `openssl`: `curl --cacert`,
//! `redis-cli --tls --cacert` and Python `grpcio` with that CA as its root.

use std::path::Path;
use std::process::Command;

use super::{Server, python_stubs, token};

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tally test CA"];
    run(&[&["req", "-x509"][..], &ec, &ca].concat());
    run(&[&["req"][..], &ec, &["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

fn tls_server(dir: &Path) -> Server {
    make_certificates(dir);
    let config = dir.join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    )
    .expect("write config");
    Server::start_with(&dir.join("data"), &["--config".to_owned(), config.display().to_string()])
}

fn curl(ca: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args(args)
        .arg("-w")
        .arg("\n%{http_code}")
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_front_door_speaks_tls_to_real_clients_and_refuses_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = tls_server(dir.path());
    let ca = dir.path().join("ca.pem");
    let base = format!("https://{}", s.http);

    // gRPC first (its scenario expects a fresh server): Python grpcio with the test CA as its
    // only root runs the whole scenario.
    let stubs = python_stubs();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(stubs.path())
        .arg(format!("localhost:{}", s.grpc.rsplit_once(':').expect("port").1))
        .arg("scenario")
        .env("TALLY_GRPC_CA", &ca)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "gRPC over TLS:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ok "), "the scenario reported its steps: {stdout}");

    // The CLI, trusting the test CA.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(args)
            .args(["--addr", &format!("https://localhost:{}", s.grpc.rsplit_once(':').expect("port").1)])
            .arg("--tls-ca")
            .arg(&ca)
            .output()
            .expect("tally runs");
        assert!(out.status.success(), "tally {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&["ns", "create", "tlscli", "--type", "accurate"]);
    cli(&["add", "tlscli", "c", "4"]);
    assert!(cli(&["get", "tlscli", "c"]).contains('4'), "the CLI reads its add back over TLS");

    // HTTP: curl trusting only the test CA.
    let (ok, out) = curl(
        &ca,
        &[
            "-X",
            "PUT",
            &format!("{base}/v1/namespaces/tls"),
            "--data-binary",
            r#"{"counter_type": "accurate"}"#,
        ],
    );
    assert!(ok && out.ends_with("201"), "create namespace over HTTPS: {out}");
    let body = serde_json::json!({"delta": 5, "idempotency_token": token("tls-1")}).to_string();
    let add = format!("{base}/v1/namespaces/tls/counters/c/add");
    let (ok, out) = curl(&ca, &["-X", "POST", &add, "--data-binary", &body]);
    assert!(ok && out.ends_with("200"), "add over HTTPS: {out}");
    let (ok, out) = curl(&ca, &[&format!("{base}/v1/namespaces/tls/counters/c")]);
    assert!(ok && out.contains("\"count\":5"), "get over HTTPS: {out}");
    // Without the CA, curl refuses the certificate; in plaintext, the server answers nothing.
    let untrusted = Command::new("curl").args(["-sS", &format!("{base}/healthz")]).output().expect("curl");
    assert!(!untrusted.status.success(), "curl must not trust the test certificate by default");
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("http://{}/healthz", s.http)])
        .output()
        .expect("curl");
    assert!(!plain.status.success(), "plaintext HTTP must not be served on a TLS port");

    // RESP: redis-cli over TLS.
    let redis = |tls: bool, args: &[&str]| {
        let (host, port) = s.resp.rsplit_once(':').expect("host:port");
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", host, "-p", port]);
        if tls {
            cmd.arg("--tls").arg("--cacert").arg(&ca);
        }
        let out = cmd.args(args).output().expect("redis-cli runs (install redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(redis(true, &["INCRBY", "tls:c", "2"]), "7", "INCRBY over TLS adds to the HTTPS count");
    assert_eq!(redis(true, &["GET", "tls:c"]), "7");
    assert!(!redis(false, &["GET", "tls:c"]).contains('7'), "plaintext RESP must get no answer");
}

/// A metric's value as `curl --cacert` reads it from an HTTPS `/metrics`.
fn metric(server: &Server, ca: &Path, name: &str) -> f64 {
    let (ok, out) = curl(ca, &[&format!("https://{}/metrics", server.http)]);
    assert!(ok, "metrics over HTTPS: {out}");
    super::metric_sum(&out, name)
}

#[test]
fn peers_hand_rollups_over_to_each_other_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_certificates(dir.path());
    let ca = dir.path().join("ca.pem");
    let ports: Vec<String> = (0..2)
        .map(|_| {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
            format!("127.0.0.1:{port}")
        })
        .collect();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display(),
            ca.display()
        ),
    )
    .expect("write config");
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            let args = [
                "--config".to_owned(),
                config.display().to_string(),
                "--grpc".to_owned(),
                ports[i].clone(),
                "--peers".to_owned(),
                ports.join(","),
                "--advertise".to_owned(),
                ports[i].clone(),
            ];
            Server::start_with(&dir.path().join(format!("data-{i}")), &args)
        })
        .collect();
    // Adds to many counters on the first instance: about half of them belong to the second,
    // whose rollups the first hands over through the peer service, over TLS.
    let base = format!("https://{}", servers[0].http);
    for c in 0..16 {
        let body = serde_json::json!({"delta": 1}).to_string();
        let add = format!("{base}/v1/namespaces/default/counters/c{c}/add");
        let (ok, out) = curl(&ca, &["-X", "POST", &add, "--data-binary", &body]);
        assert!(ok && out.ends_with("200"), "add over HTTPS: {out}");
    }
    let started = std::time::Instant::now();
    while metric(&servers[1], &ca, "tally_rollup_triggers_received_total") == 0.0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no rollup trigger reached the second instance over TLS; forwarded {}, unrouted {}",
            metric(&servers[0], &ca, "tally_rollup_triggers_forwarded_total"),
            metric(&servers[0], &ca, "tally_rollup_triggers_unrouted_total"),
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(metric(&servers[0], &ca, "tally_rollup_triggers_forwarded_total") > 0.0);
}
