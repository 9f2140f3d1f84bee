//! The dashboard at `/ui` in a real headless browser (Debian's `chromium`): the page loads,
//! shows a counter written by the test with its count, and draws its chart. A screenshot is
//! kept in the target directory (`target/tmp/ui-dashboard.png`).

use std::path::Path;
use std::process::Command;

use crate::Server;

/// Runs headless Chromium on `url` with `args` (a profile of its own in `profile`).
fn chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Runs the page's timers without waiting for them in real time, so a refresh or two
        // happens before the DOM is taken.
        .arg("--virtual-time-budget=10000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_shows_a_counter_s_count_and_draws_its_chart_in_a_headless_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start(dir.path());
    let (status, _) = s.curl("PUT", "/v1/namespaces/shop", Some(r#"{"counter_type": "eventual"}"#));
    assert_eq!(status, 201);
    for (counter, delta) in [("orders", "5"), ("orders", "2"), ("visits", "1")] {
        let (ok, out) = s.cli(&["add", "shop", counter, delta]);
        assert!(ok, "{out}");
    }
    let url = format!("http://{}/ui#ns=shop&counter=orders", s.http);
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = chromium(profile.path(), &url, &["--dump-dom"]);

    assert!(dom.contains("Live, refreshed"), "the page reached the API: {dom}");
    let row = dom.split(r#"<tr data-counter="orders">"#).nth(1).expect("a row for orders");
    assert!(row.split("</tr>").next().is_some_and(|r| r.contains(r#"data-count="7""#)), "count 7: {row}");
    assert!(dom.contains(r#"<tr data-counter="visits">"#), "every counter is listed");
    assert!(dom.contains(r#"data-buckets="60""#), "an hour by minutes: {dom}");
    let bars: u32 = dom
        .split(r#"data-bars=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("the chart says how many bars it drew");
    assert!(bars >= 1, "the adds are drawn: {dom}");
    assert!(dom.contains("Added in the last hour: 7"), "{dom}");
    assert!(dom.contains("requests served"), "the server panel read /metrics: {dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(profile.path(), &url, &["--window-size=1280,800", &format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture: {} bytes", png.len());
}
