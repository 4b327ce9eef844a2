//! The job handlers: submit, read (the job, its chunks, its result
//! download), cancel, retry and list. Each turns its request into a call on
//! [`lotsawa_core::JobService`] and the answer into a DTO; the guards have
//! already put the caller's tenant in the request.

use axum::Json;
use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotsawa_core::ledger::PAGE_BREAK;
use lotsawa_core::{JobStatus, ListQuery, Tenant};
use serde::Deserialize;

use crate::dto::{
    ActionResponse, ChunkDto, ChunkListDto, JobDto, JobListDto, SubmitRequest, SubmitResponse,
};
use crate::error::{MalformedId, NoSuchJob};
use crate::extract::JobIdPath;
use crate::query::ListParams;
use crate::submission::to_new_job;
use crate::{ApiError, AppState, documents};

/// Submit a job.
#[utoipa::path(post, path = "/api/jobs",
    request_body(description = "The text as JSON; or a PDF file (`application/pdf`, settings in the query); or a `multipart/form-data` form with a `file` part (a PDF or UTF-8 text), an optional `config` part (JSON, as `config` above) and `type`",
        content((SubmitRequest = "application/json"), (Vec<u8> = "application/pdf"))),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same key and request from the same tenant within 24 h answer with the first job"),
        ("engine" = Option<String>, Query, description = "PDF body: the engine"),
        ("model" = Option<String>, Query, description = "PDF body: the model"),
        ("chunkSize" = Option<i64>, Query, description = "PDF body: target chunk size"),
        ("type" = Option<String>, Query, description = "PDF body: translation or transliteration"),
        ("useHelperAI" = Option<bool>, Query, description = "PDF body: review each chunk"),
        ("qualityThreshold" = Option<f64>, Query, description = "PDF body: confidence threshold"),
        ("callbackUrl" = Option<String>, Query, description = "PDF body: where to POST the terminal event")),
    responses(
        (status = 202, description = "Job enqueued (or, with Idempotent-Replayed: true, the job an earlier request with the key made)", body = SubmitResponse,
            headers(("Location" = String, description = "URL of the new job"),
                    ("Idempotent-Replayed" = String, description = "true on a replay"))),
        (status = 400, description = "Invalid input"),
        (status = 413, description = "Body or file too large"),
        (status = 415, description = "Not JSON, a PDF or a form; or the body is not a PDF"),
        (status = 422, description = "Idempotency-Key used with a different request; or a PDF that cannot be read: encrypted, damaged, scanned (no text layer), or its Tibetan unrecoverable"),
    ))]
pub(crate) async fn submit_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let req = documents::submission(&state, request).await?;
    let new = to_new_job(tenant, req)?;
    let (id, replayed) = match key {
        Some(key) => {
            let s = state.service.submit_once(new, &key).await?;
            (s.job_id, s.replayed)
        }
        None => (state.service.submit(new).await?.id, false),
    };
    let id = id.to_string();
    let location = format!("/api/jobs/{id}");
    // A replay answers exactly as the first request did.
    let mut res = (
        StatusCode::ACCEPTED,
        Json(SubmitResponse {
            job_id: id,
            status: JobStatus::Pending.as_str().to_owned(),
            message: "Job enqueued successfully".into(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters");
    let v = v.to_str().map_err(|_| bad())?.trim();
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(v.to_owned()))
}

/// A job with its progress; its result once completed.
#[utoipa::path(get, path = "/api/jobs/{id}", params(JobIdPath),
    responses(
        (status = 200, description = "The job", body = JobDto),
        MalformedId,
        NoSuchJob,
    ))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JobIdPath(id): JobIdPath,
) -> Result<Json<JobDto>, ApiError> {
    let view = state.service.get(&tenant, id).await?;
    let pages = document_chunks(&state, &tenant, &view.job).await?;
    let mut dto = JobDto::from_view(view, true);
    dto.source_pages = pages.map(|(_, pages)| pages);
    Ok(Json(dto))
}

/// A document's chunks and the page each starts on; `None` for a source
/// without pages (only then are the chunks not read).
async fn document_chunks(
    state: &AppState,
    tenant: &Tenant,
    job: &lotsawa_core::Job,
) -> Result<Option<(Vec<lotsawa_core::ChunkRecord>, Vec<u32>)>, ApiError> {
    if !job.source.contains(PAGE_BREAK) {
        return Ok(None);
    }
    let records = state.service.chunk_records(tenant, job.id).await?;
    Ok(
        lotsawa_core::ledger::source_pages(records.iter().map(|c| c.source.as_str()))
            .map(|pages| (records, pages)),
    )
}

/// The query of a result download.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultParams {
    /// A `[page N]` line before the first chunk of each page (documents).
    #[serde(default)]
    pub pages: bool,
}

/// A completed job's output as plain text (a download).
#[utoipa::path(get, path = "/api/jobs/{id}/result",
    params(JobIdPath,
           ("pages" = Option<bool>, Query, description = "Mark where each page of the source starts: a `[page N]` line before the first chunk that starts on it")),
    responses(
        (status = 200, description = "The output", body = String, content_type = "text/plain"),
        (status = 400, description = "Malformed id or query"),
        NoSuchJob,
        (status = 409, description = "Not completed"),
    ))]
pub(crate) async fn job_result(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JobIdPath(id): JobIdPath,
    query: Result<Query<ResultParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(ResultParams { pages }) = query?;
    let view = state.service.get(&tenant, id).await?;
    let Some(result) = view
        .job
        .result
        .as_ref()
        .filter(|_| view.job.status == JobStatus::Completed)
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {id} is {}: only a completed job has a result",
                view.job.status.as_str()
            ),
        ));
    };
    let mut text = result.translation.clone();
    if pages && let Some((records, p)) = document_chunks(&state, &tenant, &view.job).await? {
        text = lotsawa_core::ledger::assemble_with_pages(
            records
                .iter()
                .map(|c| (c.source.as_str(), c.translation.as_deref().unwrap_or(""))),
            &p,
        );
    }
    if !pages {
        text = text.replace(PAGE_BREAK, "");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{id}.txt\""),
            ),
        ],
        text,
    )
        .into_response())
}

/// Cancel a pending or processing job.
#[utoipa::path(delete, path = "/api/jobs/{id}", params(JobIdPath),
    responses(
        (status = 200, description = "Cancelled", body = ActionResponse),
        MalformedId,
        NoSuchJob,
        (status = 409, description = "Already completed, failed or cancelled"),
    ))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JobIdPath(id): JobIdPath,
) -> Result<Json<ActionResponse>, ApiError> {
    state.service.cancel(&tenant, id).await?;
    Ok(Json(ActionResponse {
        message: "Job cancelled successfully".into(),
        job_id: id.to_string(),
    }))
}

/// Queue a failed or cancelled job again; only unfinished chunks run.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", params(JobIdPath),
    responses(
        (status = 200, description = "Queued again", body = ActionResponse),
        MalformedId,
        NoSuchJob,
        (status = 409, description = "Not failed or cancelled"),
    ))]
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JobIdPath(id): JobIdPath,
) -> Result<Json<ActionResponse>, ApiError> {
    state.service.retry(&tenant, id).await?;
    Ok(Json(ActionResponse {
        message: "Job retry initiated".into(),
        job_id: id.to_string(),
    }))
}

/// The query of a chunk list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkParams {
    /// Add each source in EWTS transliteration.
    #[serde(default)]
    pub ewts: bool,
}

/// A job's chunks: source, status, attempts and output of each.
#[utoipa::path(get, path = "/api/jobs/{id}/chunks",
    params(JobIdPath,
           ("ewts" = Option<bool>, Query, description = "Add each source in EWTS (Wylie) transliteration")),
    responses(
        (status = 200, description = "The chunks, in order", body = ChunkListDto),
        (status = 400, description = "Malformed id or query"),
        NoSuchJob,
    ))]
pub(crate) async fn job_chunks(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JobIdPath(id): JobIdPath,
    query: Result<Query<ChunkParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChunkListDto>, ApiError> {
    let Query(ChunkParams { ewts }) = query?;
    let sheet = state.service.chunk_sheet(&tenant, id).await?;
    let chunks = tokio::task::spawn_blocking(move || {
        let records = sheet.chunks;
        let label = sheet.label;
        let pages = lotsawa_core::ledger::source_pages(records.iter().map(|c| c.source.as_str()));
        records
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut dto = ChunkDto::from_chunk(c, &label, ewts);
                dto.source_page = pages.as_ref().and_then(|p| p.get(i).copied());
                dto
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy; try again",
        )
    })?;
    Ok(Json(ChunkListDto { chunks }))
}

/// Jobs, newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/jobs",
    params(
        ("status" = Option<String>, Query, description = "pending, processing, completed, failed or cancelled"),
        ("type" = Option<String>, Query, description = "translation or transliteration"),
        ("priority" = Option<i32>, Query, description = "only jobs of this queue priority, -10..=10"),
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of jobs", body = JobListDto),
        (status = 400, description = "Bad filter, limit or cursor"),
    ))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobListDto>, ApiError> {
    let Query(ListParams {
        status,
        kind,
        priority,
        limit,
        cursor,
    }) = query?;
    let limit = limit.map_or(20, |l| l.0);
    let page = state
        .service
        .list(ListQuery {
            tenant,
            status,
            kind,
            priority: priority.map(|p| p.0),
            limit,
            cursor,
        })
        .await?;
    Ok(Json(JobListDto {
        jobs: page
            .jobs
            .into_iter()
            .map(|v| JobDto::from_view(v, false))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
