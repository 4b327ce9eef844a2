//! The Router assembly: which handler answers which path, the body limits
//! per route, the problem answers for unknown paths and methods, and the
//! two small operational endpoints (health, metrics). Each deployment picks
//! one of the three routers here; the handlers live in their own modules.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use lotsawa_core::JobService;

use crate::guards::with_guards;
use crate::probes::{healthz, metrics};
use crate::{
    ApiConfig, ApiError, AppState, Router, batches, dashboard, desk, glossaries, jobs, openapi, sse,
};

/// Build the router over any backend.
pub fn router(service: Arc<dyn JobService>, config: ApiConfig) -> Router {
    let limit = config.body_limit;
    let files = config.pdf_limit.max(limit);
    let state = AppState::new(service, config);
    with_guards(
        state.clone(),
        with_fallbacks(
            Router::new()
                .route(
                    "/api/jobs",
                    post(jobs::submit_job)
                        .layer(DefaultBodyLimit::max(files))
                        .get(jobs::list_jobs),
                )
                .route("/api/jobs/{id}/result", get(jobs::job_result))
                .route(
                    "/api/jobs/{id}",
                    get(jobs::get_job).delete(jobs::cancel_job),
                )
                .route("/api/jobs/{id}/retry", post(jobs::retry_job))
                .route("/api/jobs/{id}/stream", get(sse::stream_job))
                .route(
                    "/api/batches",
                    post(batches::submit_batch)
                        .layer(DefaultBodyLimit::max(files))
                        .get(batches::list_batches),
                )
                .route(
                    "/api/batches/{id}",
                    get(batches::get_batch).delete(batches::cancel_batch),
                )
                .route("/api/batches/{id}/retry", post(batches::retry_batch))
                .route("/api/batches/{id}/stream", get(batches::stream_batch))
                .route("/api/jobs/{id}/chunks", get(jobs::job_chunks))
                .route("/api/jobs/{id}/chunks/{index}", get(desk::get_chunk))
                .route(
                    "/api/jobs/{id}/chunks/{index}/translation",
                    axum::routing::put(desk::put_translation),
                )
                .route(
                    "/api/jobs/{id}/chunks/{index}/retranslate",
                    post(desk::retranslate_chunk),
                )
                .route(
                    "/api/glossaries",
                    post(glossaries::create_glossary)
                        .layer(DefaultBodyLimit::max(files))
                        .get(glossaries::list_glossaries),
                )
                .route(
                    "/api/glossaries/{id}",
                    get(glossaries::get_glossary)
                        .put(glossaries::replace_glossary)
                        .layer(DefaultBodyLimit::max(files))
                        .delete(glossaries::delete_glossary),
                )
                .route(
                    "/api/memory/import",
                    post(desk::import_memory).layer(DefaultBodyLimit::max(files)),
                )
                .route("/api/jobs/{id}/export", get(desk::export_job))
                .route(
                    "/api/jobs/{id}/import",
                    post(desk::import_job).layer(DefaultBodyLimit::max(files)),
                )
                .route("/api/usage", get(crate::usage::usage))
                .route("/", get(dashboard::page))
                .route("/jobs/{id}", get(dashboard::page))
                .route("/batches/{id}", get(dashboard::page))
                .route("/assets/app.js", get(dashboard::app_js))
                .route("/assets/app.css", get(dashboard::app_css))
                .route("/assets/config.json", get(dashboard::config))
                .route("/healthz", get(healthz))
                .route("/metrics", get(metrics))
                .route("/openapi.json", get(openapi::openapi)),
        ),
    )
    .layer(DefaultBodyLimit::max(limit))
    .layer(traced())
    .with_state(state)
}

/// How a request's span is made.
type MakeSpan = fn(&axum::http::Request<axum::body::Body>) -> tracing::Span;
/// The trace layer's response classes.
type Classes = tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>;

/// A span per request (method, route, a `traceparent` continued).
fn traced() -> tower_http::trace::TraceLayer<Classes, MakeSpan> {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(crate::trace::request_span)
}

/// Only the SSE route (and health), for a deployment that serves streams
/// from a function of their own with read-only rights.
pub fn stream_router(service: Arc<dyn JobService>, config: ApiConfig) -> Router {
    let state = AppState::new(service, config);
    with_guards(
        state.clone(),
        with_fallbacks(
            Router::new()
                .route("/api/jobs/{id}/stream", get(sse::stream_job))
                .route("/api/batches/{id}/stream", get(batches::stream_batch))
                .route("/healthz", get(healthz)),
        ),
    )
    .layer(DefaultBodyLimit::max(1024))
    .layer(traced())
    // The dashboard is served from the API's origin and opens its streams
    // here (the key in `access_token`: no cookie, no credentials), so any
    // origin may read them.
    .layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(tower_http::cors::Any)
            .allow_methods([axum::http::Method::GET])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::HeaderName::from_static("last-event-id"),
            ]),
    )
    .with_state(state)
}

/// A keyless `/metrics` only, for its own bind address
/// (`LOTSAWA_METRICS_BIND`): scrapers need no key, and the API stays keyed.
pub fn metrics_router(service: Arc<dyn JobService>) -> Router {
    let state = AppState::new(service, ApiConfig::default());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Unknown paths and methods answer with a problem like every other error,
/// not with axum's empty default bodies.
fn with_fallbacks(routes: Router<AppState>) -> Router<AppState> {
    routes
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
}
