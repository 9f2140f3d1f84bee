//! `tally export` and `tally import` between the embedded store and Cassandra, both ways:
//! counts, namespaces and their settings arrive as they left, and an import run twice applies
//! each count once. Needs `TALLY_TEST_CASSANDRA` (see `scripts/test.sh`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Server;

/// Every line of an export but its header (which names the export, not the data).
fn data_lines(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("export written");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header")).expect("JSON header");
    assert_eq!(header["tally_export"], json!(1), "{header}");
    lines.map(str::to_owned).collect()
}

fn export(server: &Server, path: &Path) -> BTreeSet<String> {
    let (ok, out) = server.cli(&["export", "-o", path.to_str().expect("utf-8 path")]);
    assert!(ok, "{out}");
    data_lines(path)
}

fn import(server: &Server, path: &Path) -> String {
    let (ok, out) = server.cli(&["import", path.to_str().expect("utf-8 path")]);
    assert!(ok, "{out}");
    out
}

/// Exports `server` until its data lines are `expected` (counts on Cassandra converge after
/// the write window), or fails after a minute.
fn export_until(server: &Server, path: &Path, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = export(server, path);
        if &got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never converged: missing {:?}",
            expected.difference(&got).take(5)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn write_counters(server: &Server) {
    for (name, config) in [
        ("views", r#"{"counter_type":"eventual","accept_limit":"3s"}"#),
        ("ledger", r#"{"counter_type":"accurate"}"#),
        ("fleeting", r#"{"counter_type":"best_effort"}"#),
    ] {
        let (status, body) = server.curl("PUT", &format!("/v1/namespaces/{name}"), Some(config));
        assert!(status < 300, "{body}");
    }
    // More counters than one page of the export holds.
    for part in 0..2 {
        let adds: Vec<Value> = (0..600)
            .map(|i| {
                let n = part * 600 + i;
                json!({"namespace": "views", "counter_name": format!("page-{n:04}"), "delta": n + 1})
            })
            .collect();
        let (status, body) =
            server.curl("POST", "/v1/counters:batchAdd", Some(&json!({"adds": adds}).to_string()));
        assert_eq!(status, 200, "{body}");
    }
    for (counter, delta) in [("debit", -7), ("credit", 12)] {
        let body = json!({"delta": delta}).to_string();
        let (status, body) =
            server.curl("POST", &format!("/v1/namespaces/ledger/counters/{counter}/add"), Some(&body));
        assert!(status < 300, "{body}");
    }
}

#[test]
fn export_and_import_move_counters_between_the_embedded_store_and_cassandra_both_ways() {
    let node = std::env::var("TALLY_TEST_CASSANDRA").expect(
        "set TALLY_TEST_CASSANDRA=127.0.0.1:9042 after `bash scripts/cassandra.sh start` (scripts/test.sh does)",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = Server::start(&dir.path().join("a"));
    write_counters(&embedded);
    let first = dir.path().join("first.jsonl");
    let lines = export(&embedded, &first);
    // Four namespaces (every server starts with `default`) and every durable counter.
    assert_eq!(
        lines.len(),
        4 + 1_200 + 2,
        "{:?}",
        lines.iter().filter(|l| !l.contains("page-")).collect::<Vec<_>>()
    );
    assert!(lines.contains(r#"{"namespace":"views","counter":"page-1199","count":1200}"#), "{lines:?}");
    assert!(lines.contains(r#"{"namespace":"ledger","counter":"debit","count":-7}"#));

    let store = format!("cassandra://{node}/transfer_{}", std::process::id());
    let cassandra = Server::start_with(&dir.path().join("b"), &["--store".to_owned(), store]);
    let out = import(&cassandra, &first);
    assert!(out.contains("imported 4 namespaces and 1202 counters (0 of them"), "{out}");
    let second = dir.path().join("second.jsonl");
    export_until(&cassandra, &second, &lines);
    // Run again (as after an interruption): every count was applied already, none twice.
    let out = import(&cassandra, &first);
    assert!(out.contains("1202 counters (1202 of them applied already"), "{out}");

    let back = Server::start(&dir.path().join("c"));
    import(&back, &second);
    assert_eq!(export(&back, &dir.path().join("third.jsonl")), lines, "Cassandra back to the embedded store");
}

#[test]
fn an_export_resumes_after_a_counter_and_an_import_from_a_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Server::start(&dir.path().join("a"));
    write_counters(&source);
    let whole = dir.path().join("whole.jsonl");
    let lines = export(&source, &whole);
    let text = std::fs::read_to_string(&whole).expect("export");
    // Cut after the 100th counter of `views`, then resume: the two parts are the whole.
    let cut = text.lines().position(|l| l.contains(r#""counter":"page-0099""#)).expect("page-0099") + 1;
    let part = dir.path().join("part.jsonl");
    std::fs::write(&part, text.lines().take(cut).map(|l| format!("{l}\n")).collect::<String>())
        .expect("write");
    let (ok, out) =
        source.cli(&["export", "--after", "views:page-0099", "-o", part.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    assert_eq!(data_lines(&part), lines, "the resumed export appended the rest");

    let target = Server::start(&dir.path().join("b"));
    let (ok, out) = target.cli(&["import", "--from-line", "2000", whole.to_str().expect("utf-8")]);
    assert!(ok && out.contains("imported 0 namespaces and 0 counters"), "{out}");
    let (ok, out) = target.cli(&["import", whole.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    let (ok, out) = source.cli(&["import", "--from-line", "x", whole.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("--from-line"), "{out}");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"tally_export\":1,\"id\":\"0\",\"exported_at\":\"now\"}\n{\"namespace\":\"views\",\"counter\":\"c\",\"cuont\":1}\n")
        .expect("write");
    let (ok, out) = target.cli(&["import", bad.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("line 2 is neither a namespace nor a counter"), "{out}");
    assert_eq!(export(&target, &dir.path().join("again.jsonl")), lines);
}
