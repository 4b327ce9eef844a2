//! Liveness, readiness and metrics: the two endpoints a supervisor and a
//! scraper call.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState, Health};

/// Liveness and readiness.
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "Shutting down or store unavailable"),
))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.service.healthy().await?;
    Ok(Json(Health {
        status: "ok".into(),
        engines: state.service.engines(),
    }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.service.metrics().await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok((headers, text).into_response())
}
