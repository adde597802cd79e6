//! The browser console: one page, its script and its style, embedded in
//! the binary (no CDN, nothing fetched from elsewhere). It talks to the
//! `/v1` routes like any other client.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Pages may run only their own script and style, and no one may frame them.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
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

/// `GET /`.
pub async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// `GET /console.js`.
pub async fn script() -> Response {
    page(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /console.css`.
pub async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}
