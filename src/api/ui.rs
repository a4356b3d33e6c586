//! The status page at `/`: one HTML page, two scripts and a style sheet, embedded in the binary
//! (no CDN, nothing fetched at build or run time). The page holds no data: it signs in with
//! an API token kept in the tab's `sessionStorage` and reads everything through `/api/v1`,
//! so every panel respects the caller's reach and permissions. `/healthz` and `/metrics`
//! (unauthenticated, as for monitoring) feed its health panel. `/favicon.ico` is a small
//! SVG icon (browsers ask for it on every page load; a 404 there is a console error).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const WEEK: &str = include_str!("ui/week.js");
const STYLE: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/favicon.svg");

/// Only this origin's own files and API; no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Served from the binary: a new version is a restart away, never a stale cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/`, `/ui/app.js`, `/ui/week.js`, `/ui/app.css` and `/favicon.ico`.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/week.js", get(|| async { asset("text/javascript; charset=utf-8", WEEK) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", ICON) }))
}
