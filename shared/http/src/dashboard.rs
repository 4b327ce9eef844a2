//! The dashboard: one page and its assets, embedded in the binary and
//! served by the same Router as the API (no build step, no Node at run
//! time). The page talks to the API like any other client.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The paths the page answers at (the page routes among them itself).
pub(crate) fn is_page(path: &str) -> bool {
    path == "/"
        || path.starts_with("/assets/")
        || path.starts_with("/jobs/")
        || path.starts_with("/batches/")
}

fn asset(content_type: &'static str, body: &'static str, csp: Option<String>) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Always revalidated: a new binary serves its own page at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = csp.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("content-security-policy", csp);
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    }
    res
}

/// `/`, `/jobs/{id}`, `/batches/{id}`: the page.
pub(crate) async fn page(State(state): State<AppState>) -> Response {
    // Scripts and styles from this origin only; streams from this origin
    // or the deployment's stream URL.
    let stream = state
        .config
        .stream_url
        .as_deref()
        .and_then(url_origin)
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'{stream}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    asset("text/html; charset=utf-8", INDEX, Some(csp))
}

fn url_origin(u: &str) -> Option<String> {
    let (scheme, rest) = u.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty() && matches!(scheme, "http" | "https")).then(|| format!("{scheme}://{host}"))
}

/// `/assets/app.js`.
pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS, None)
}

/// `/assets/app.css`.
pub(crate) async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS, None)
}

/// `/assets/config.json`: what the page needs of the deployment.
pub(crate) async fn config(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "streamUrl": state.config.stream_url.as_deref().unwrap_or("").trim_end_matches('/'),
        "requireAuth": state.config.require_auth,
    });
    let mut res = axum::Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_origins_are_taken_from_urls() {
        assert_eq!(
            url_origin("https://abc.lambda-url.us-east-1.on.aws/").as_deref(),
            Some("https://abc.lambda-url.us-east-1.on.aws")
        );
        assert_eq!(
            url_origin("http://127.0.0.1:9000/lambda-url/stream").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(url_origin("javascript:alert(1)"), None);
        assert_eq!(url_origin("ftp://x/"), None);
    }

    #[test]
    fn pages_are_the_dashboard_paths() {
        for p in ["/", "/jobs/x", "/batches/x", "/assets/app.js"] {
            assert!(is_page(p), "{p}");
        }
        for p in ["/api/jobs", "/healthz", "/metrics", "/jobsx"] {
            assert!(!is_page(p), "{p}");
        }
    }
}
