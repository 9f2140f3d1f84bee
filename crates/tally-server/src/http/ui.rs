//! `GET /ui` and `GET /ui/app.js`: the dashboard, a static page embedded in the binary that
//! reads everything it shows from the HTTP API (with the bearer token the user types in, when
//! authentication is on). The page holds no data, so it is served without a token; its
//! Content-Security-Policy lets it load nothing but this server's own script and API.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");

/// Only this server: its script, its API; inline styles only (the page's one `<style>`).
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`
pub async fn page() -> Response {
    serve("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/app.js`
pub async fn script() -> Response {
    serve("text/javascript; charset=utf-8", SCRIPT)
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
