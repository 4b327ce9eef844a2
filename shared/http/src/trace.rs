//! The span of each HTTP request, on both forms: method and route,
//! continuing a W3C `traceparent` sent with the request.

use axum::extract::MatchedPath;
use axum::http::Request;

/// The span of an HTTP request.
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{} {route}", req.method()),
        http.request.method = %req.method(),
        http.route = %route,
        url.path = %req.uri().path(),
    );
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    lotsawa_telemetry::continue_trace(&span, traceparent);
    span
}
