//! `/api/batches`: many jobs submitted as one unit and followed as one,
//! with aggregate progress over Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use lotsawa_core::{BatchView, JobId, NewBatch, NewBatchItem, Tenant};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::dto::{
    BatchDto, BatchItemDto, BatchItemRequest, BatchListDto, BatchRequest, BatchSubmitResponse,
    SubmitRequest,
};
use crate::error::{MalformedId, NoSuchBatch};
use crate::extract::BatchIdPath;
use crate::query::PageLimit;
use crate::submission::to_new_job;
use crate::{ApiError, AppState, documents};

/// How often a batch stream reads its batch again.
const POLL: Duration = Duration::from_millis(500);

/// Progress is re-sent at least this often while a batch is live.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Submit a batch.
#[utoipa::path(post, path = "/api/batches",
    request_body(description = "The items as JSON; or a `multipart/form-data` form of `file` parts (PDF or UTF-8 text, each an item named by its file name), an optional `config` part (JSON, for every item) and `type`",
        content((BatchRequest = "application/json"))),
    responses(
        (status = 202, description = "Every item enqueued as a job", body = BatchSubmitResponse,
            headers(("Location" = String, description = "URL of the new batch"))),
        (status = 400, description = "Invalid input (the item is named); nothing was stored"),
        (status = 413, description = "Body or files too large"),
        (status = 415, description = "Not JSON or a form; or a file that is neither a PDF nor UTF-8 text"),
        (status = 422, description = "A PDF that cannot be read (the item is named): encrypted, damaged, scanned, or its Tibetan unrecoverable"),
    ))]
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    request: Request,
) -> Result<Response, ApiError> {
    let req: BatchRequest = match documents::body_kind(&request)? {
        documents::BodyKind::Json => documents::json_body(&state, request).await?,
        documents::BodyKind::Form => {
            // Each file part is an item, named by its file name.
            let form = documents::parse_form(request, &state).await?;
            let mut items = Vec::with_capacity(form.files.len());
            for (i, file) in form.files.into_iter().enumerate() {
                let name = file.name.clone();
                let text = documents::form_text(&state, file).await.map_err(|e| {
                    e.prefixed(&format!(
                        "items[{i}]{}: ",
                        name.as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    ))
                })?;
                items.push(BatchItemRequest {
                    source_text: text,
                    name: name.unwrap_or_else(|| format!("file-{}", i + 1)),
                    kind: form.kind.clone(),
                    config: None,
                });
            }
            BatchRequest {
                items,
                config: form.config,
            }
        }
        documents::BodyKind::Pdf => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a batch is JSON or a multipart/form-data form of files; submit one PDF to /api/jobs",
            ));
        }
    };
    let defaults = req.config.unwrap_or_default();
    let mut items = Vec::with_capacity(req.items.len());
    for (i, item) in req.items.into_iter().enumerate() {
        let job = to_new_job(
            tenant.clone(),
            SubmitRequest {
                source_text: item.source_text,
                kind: item.kind,
                config: Some(item.config.unwrap_or_default().or(&defaults)),
            },
        )
        .map_err(|e| e.prefixed(&format!("items[{i}]: ")))?;
        items.push(NewBatchItem {
            name: item.name,
            job,
        });
    }
    let view = state
        .service
        .submit_batch(NewBatch { tenant, items })
        .await?;
    let id = view.batch.id.to_string();
    let mut res = (
        StatusCode::ACCEPTED,
        Json(BatchSubmitResponse {
            batch_id: id.clone(),
            job_ids: view
                .batch
                .items
                .iter()
                .map(|i| i.job_id.to_string())
                .collect(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/batches/{id}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// A batch with its status, aggregate progress and items.
#[utoipa::path(get, path = "/api/batches/{id}", params(BatchIdPath),
    responses(
        (status = 200, description = "The batch", body = BatchDto),
        MalformedId,
        NoSuchBatch,
    ))]
pub(crate) async fn get_batch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    BatchIdPath(id): BatchIdPath,
) -> Result<Json<BatchDto>, ApiError> {
    let view = state.service.batch(&tenant, id).await?;
    Ok(Json(BatchDto::from_view(&view, true)))
}

/// Cancel every item that has not ended.
#[utoipa::path(delete, path = "/api/batches/{id}", params(BatchIdPath),
    responses(
        (status = 200, description = "The batch after the cancel", body = BatchDto),
        MalformedId,
        NoSuchBatch,
    ))]
pub(crate) async fn cancel_batch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    BatchIdPath(id): BatchIdPath,
) -> Result<Json<BatchDto>, ApiError> {
    let view = state.service.cancel_batch(&tenant, id).await?;
    Ok(Json(BatchDto::from_view(&view, true)))
}

/// Queue every failed or cancelled item again.
#[utoipa::path(post, path = "/api/batches/{id}/retry", params(BatchIdPath),
    responses(
        (status = 200, description = "The batch after the retry", body = BatchDto),
        MalformedId,
        NoSuchBatch,
    ))]
pub(crate) async fn retry_batch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    BatchIdPath(id): BatchIdPath,
) -> Result<Json<BatchDto>, ApiError> {
    let view = state.service.retry_batch(&tenant, id).await?;
    Ok(Json(BatchDto::from_view(&view, true)))
}

/// The query of a batch list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchListParams {
    #[serde(default, deserialize_with = "crate::query::parsed")]
    limit: Option<PageLimit>,
    #[serde(default)]
    cursor: Option<String>,
}

/// Batches, newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/batches",
    params(
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of batches", body = BatchListDto),
        (status = 400, description = "Bad limit or cursor"),
    ))]
pub(crate) async fn list_batches(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Result<Query<BatchListParams>, QueryRejection>,
) -> Result<Json<BatchListDto>, ApiError> {
    let Query(BatchListParams { limit, cursor }) = query?;
    let page = state
        .service
        .list_batches(&tenant, limit.map_or(20, |l| l.0), cursor)
        .await?;
    Ok(Json(BatchListDto {
        batches: page
            .batches
            .iter()
            .map(|v| BatchDto::from_view(v, false))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Stream a batch's progress.
#[utoipa::path(get, path = "/api/batches/{id}/stream",
    params(BatchIdPath),
    responses(
        (status = 200, description = "Server-Sent Events: `connected`, `progress` (aggregate), one `item` per item as it ends, then `completed`, `failed` or `cancelled`, then `event: close`", content_type = "text/event-stream", body = crate::dto::SseEvent),
        MalformedId,
        NoSuchBatch,
    ))]
pub(crate) async fn stream_batch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    BatchIdPath(id): BatchIdPath,
) -> Result<Response, ApiError> {
    let first = state.service.batch(&tenant, id).await?;
    let stream_state = state.clone();
    crate::sse::serve_events(&stream_state, &tenant.clone(), move |tx| {
        pump(state, tenant, first, tx)
    })
}

fn data(v: &serde_json::Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(v.to_string()))
}

fn progress_of(v: &BatchView) -> serde_json::Value {
    let dto = BatchDto::from_view(v, false);
    json!({
        "type": "progress",
        "id": dto.id,
        "status": dto.status,
        "progress": dto.progress,
        "estimatedTimeRemaining": dto.estimated_time_remaining,
        "throughput": dto.throughput,
        "counts": dto.counts,
        "total": dto.total,
    })
}

async fn pump(
    state: AppState,
    tenant: Tenant,
    first: BatchView,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let id = first.batch.id;
    let connected = json!({"type": "connected", "batchId": id.to_string()});
    if tx.send(data(&connected)).await.is_err() {
        return;
    }
    let mut ended: std::collections::HashSet<JobId> = std::collections::HashSet::new();
    let mut view = first;
    let mut last: Option<(serde_json::Value, tokio::time::Instant)> = None;
    loop {
        // One event per item as it ends (an item retried and ended again
        // is told again).
        for item in &view.items {
            let done = item.job.status.is_terminal();
            if done && ended.insert(item.job.id) {
                let mut e = serde_json::to_value(BatchItemDto::from_view(item))
                    .unwrap_or_else(|_| json!({}));
                e["type"] = json!("item");
                if tx.send(data(&e)).await.is_err() {
                    return;
                }
            } else if !done {
                ended.remove(&item.job.id);
            }
        }
        let progress = progress_of(&view);
        let due = last
            .as_ref()
            .is_none_or(|(p, at)| *p != progress || at.elapsed() >= HEARTBEAT);
        if due {
            if tx.send(data(&progress)).await.is_err() {
                return;
            }
            last = Some((progress, tokio::time::Instant::now()));
        }
        if view.summary.status.is_terminal() {
            let word = view.summary.status.as_str();
            let mut end = serde_json::to_value(BatchDto::from_view(&view, false))
                .unwrap_or_else(|_| json!({}));
            end["type"] = json!(word);
            let _ = tx.send(data(&end)).await;
            let _ = tx
                .send(Ok(Event::default()
                    .event("close")
                    .data(format!("Batch {word}"))))
                .await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = tx.closed() => return,
        }
        view = match state.service.batch(&tenant, id).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(batch_id = %id, error = %e, "batch stream read failed");
                let _ = tx
                    .send(Ok(Event::default()
                        .retry(Duration::from_secs(2))
                        .data(json!({"type": "reconnect"}).to_string())))
                    .await;
                return;
            }
        };
    }
}
