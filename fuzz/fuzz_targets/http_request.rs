//! Arbitrary HTTP requests (method, path, body) through the real router and engine over an
//! in-memory store: no panic, no hang, and never an INTERNAL error, whatever the input.
#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tally_core::SystemClock;
use tally_engine::{Engine, EngineOptions, LocalBestEffort, LocalCache};
use tally_server::auth::Authenticator;
use tally_server::http::{HttpState, router};
use tally_store::MemoryStore;
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fn state() -> &'static HttpState {
    static STATE: OnceLock<HttpState> = OnceLock::new();
    STATE.get_or_init(|| {
        runtime().block_on(async {
            let clock = Arc::new(SystemClock);
            let store = Arc::new(MemoryStore::new(clock.clone()));
            let engine = Engine::open(
                store,
                Arc::new(LocalCache::new(1_000)),
                Arc::new(LocalBestEffort::default()),
                clock,
                EngineOptions::default(),
            )
            .await
            .expect("engine");
            HttpState {
                engine,
                ready: Arc::new(AtomicBool::new(true)),
                metrics: tally_server::metrics::handle(),
                max_body_bytes: 4096,
                body_read_timeout: std::time::Duration::from_secs(10),
                auth: Arc::new(Authenticator::disabled()),
                cors: None,
            }
        })
    })
}

const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
const PREFIXES: [&str; 6] = [
    "/v1/namespaces/",
    "/v1/namespaces/default/counters/",
    "/v1/namespaces/fz/counters/",
    "/v1/namespaces",
    "/",
    "",
];
const SUFFIXES: [&str; 4] = ["", "/add", "/add-and-get", "/clear"];

fuzz_target!(|data: &[u8]| {
    let [selector, split, rest @ ..] = data else { return };
    let method = METHODS[usize::from(selector & 3)].clone();
    let prefix = PREFIXES[usize::from((selector >> 2) % 6)];
    let suffix = SUFFIXES[usize::from(selector >> 6)];
    let (segment, body) = rest.split_at(usize::from(*split).min(rest.len()));
    // Percent-encode the segment so that any bytes make a valid URI; the router decodes it.
    let encoded: String = segment.iter().map(|b| format!("%{b:02X}")).collect();
    let uri = format!("{prefix}{encoded}{suffix}");
    let Ok(request) = Request::builder().method(method).uri(&uri).body(Body::from(body.to_vec())) else {
        return;
    };
    let app = router(state().clone());
    let status = runtime().block_on(async { app.oneshot(request).await.expect("infallible").status() });
    assert_ne!(status.as_u16(), 500, "{uri} answered 500");
});
