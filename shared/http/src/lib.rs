//! The one axum [`Router`] of Lotsawa's HTTP API (jobs, SSE progress,
//! health, metrics, OpenAPI), used by the local server, the Lambda functions
//! and the tests alike. It talks to a backend only through
//! [`lotsawa_core::JobService`].

mod batches;
mod dashboard;
mod documents;
pub mod dto;
pub mod error;
mod sse;

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lotsawa_core::ledger::PAGE_BREAK;
use lotsawa_core::{
    ChunkSize, EngineName, JobConfig, JobId, JobService, JobStatus, JobType, ListQuery, NewJob,
    SourceText, Tenant,
};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use axum::Router;
pub use documents::{DEFAULT_PDF_BUDGET, DEFAULT_PDF_LIMIT};
pub use dto::*;
pub use error::{ApiError, Problem};

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Router settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// Longest time one SSE response stays open; the client is then told to
    /// reconnect (Lambda streams end at 15 minutes).
    pub stream_max: Duration,
    /// Cancelled when the server shuts down: open SSE streams end.
    pub shutdown: CancellationToken,
    /// Every `/api` request (and `/metrics`) needs `Authorization: Bearer
    /// <key>`; jobs belong to the key's tenant. Off: everything is the
    /// default tenant's.
    pub require_auth: bool,
    /// Host names a keyless local server answers besides `localhost` and IP
    /// literals (`LOTSAWA_ALLOWED_HOSTS`); `None`: no `Host` check (the
    /// cloud, or keys required). A web page cannot then drive the server
    /// through DNS rebinding, and cross-site browser requests are refused.
    pub allowed_hosts: Option<Vec<String>>,
    /// Most SSE streams open at once on this process (then 503).
    pub max_streams: usize,
    /// Most SSE streams one tenant may hold open at once (then 429).
    pub max_streams_per_tenant: usize,
    /// Longest time a request may take until its response starts (then 503;
    /// a stream's events are not counted, only its start).
    pub request_timeout: Duration,
    /// Where the dashboard opens SSE streams, when not on this origin (the
    /// cloud's stream function URL, `STREAM_URL`).
    pub stream_url: Option<String>,
    /// Largest PDF (or form of files) accepted (413 above).
    pub pdf_limit: usize,
    /// Longest time one PDF may take to read (then 422).
    pub pdf_budget: Duration,
}

/// Default cap on open streams in all.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// Default cap on one tenant's open streams.
pub const DEFAULT_MAX_STREAMS_PER_TENANT: usize = 32;
/// Default time until a response starts.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            stream_max: Duration::from_secs(24 * 3600),
            shutdown: CancellationToken::new(),
            require_auth: false,
            stream_url: None,
            allowed_hosts: None,
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_tenant: DEFAULT_MAX_STREAMS_PER_TENANT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            pdf_limit: documents::DEFAULT_PDF_LIMIT,
            pdf_budget: documents::DEFAULT_PDF_BUDGET,
        }
    }
}

/// Router state.
#[derive(Clone)]
pub struct AppState {
    service: Arc<dyn JobService>,
    config: ApiConfig,
    streams: Arc<sse::StreamSlots>,
    reads: Arc<sse::JobReads>,
    pdf_readers: documents::Readers,
}

impl AppState {
    fn new(service: Arc<dyn JobService>, config: ApiConfig) -> Self {
        Self {
            service,
            config,
            streams: Arc::default(),
            reads: Arc::default(),
            pdf_readers: documents::Readers::default(),
        }
    }
}

/// Build the router over any backend.
pub fn router(service: Arc<dyn JobService>, config: ApiConfig) -> Router {
    let limit = config.body_limit;
    let files = config.pdf_limit.max(limit);
    let state = AppState::new(service, config);
    with_auth(
        state.clone(),
        with_fallbacks(
            Router::new()
                .route(
                    "/api/jobs",
                    post(submit_job)
                        .layer(DefaultBodyLimit::max(files))
                        .get(list_jobs),
                )
                .route("/api/jobs/{id}/result", get(job_result))
                .route("/api/jobs/{id}", get(get_job).delete(cancel_job))
                .route("/api/jobs/{id}/retry", post(retry_job))
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
                .route("/api/jobs/{id}/chunks", get(job_chunks))
                .route("/", get(dashboard::page))
                .route("/jobs/{id}", get(dashboard::page))
                .route("/batches/{id}", get(dashboard::page))
                .route("/assets/app.js", get(dashboard::app_js))
                .route("/assets/app.css", get(dashboard::app_css))
                .route("/assets/config.json", get(dashboard::config))
                .route("/healthz", get(healthz))
                .route("/metrics", get(metrics))
                .route("/openapi.json", get(openapi)),
        ),
    )
    .layer(DefaultBodyLimit::max(limit))
    .with_state(state)
}

/// Only the SSE route (and health), for a deployment that serves streams
/// from a function of their own with read-only rights.
pub fn stream_router(service: Arc<dyn JobService>, config: ApiConfig) -> Router {
    let state = AppState::new(service, config);
    with_auth(
        state.clone(),
        with_fallbacks(
            Router::new()
                .route("/api/jobs/{id}/stream", get(sse::stream_job))
                .route("/api/batches/{id}/stream", get(batches::stream_batch))
                .route("/healthz", get(healthz)),
        ),
    )
    .layer(DefaultBodyLimit::max(1024))
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

/// The `Host` check (keyless local servers), then the caller's tenant on
/// every request (the default tenant when keys are
/// off); with keys on, a request other than `/healthz` and `/openapi.json`
/// without a valid key is answered 401.
fn with_auth(state: AppState, routes: Router<AppState>) -> Router<AppState> {
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .layer(axum::middleware::from_fn_with_state(state, deadline))
}

/// Answer 503 when a response has not started within the request timeout
/// (a store stuck on a full disk, say), instead of holding the connection.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(seconds = limit.as_secs_f64(), "request timed out");
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {} s; try again",
                    limit.as_secs_f64()
                ),
            );
            e.with_retry_after(1).into_response()
        }
    }
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

/// The host part of a `Host` or `Origin` authority (no port, no brackets).
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// Whether a keyless server answers requests for `host`: an IP literal (a
/// rebinding attack needs a name), `localhost`, or a configured name.
pub fn host_allowed(host: &str, extra: &[String]) -> bool {
    let h = host_of(host).trim_end_matches('.');
    h.parse::<std::net::IpAddr>().is_ok()
        || h.eq_ignore_ascii_case("localhost")
        || extra.iter().any(|e| e.eq_ignore_ascii_case(h))
}

async fn check_host(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(extra) = &state.config.allowed_hosts {
        let headers = req.headers();
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(host) = host
            && !host_allowed(&host, extra)
        {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server answers only for localhost, IP addresses and LOTSAWA_ALLOWED_HOSTS, not '{}'",
                    host_of(&host)
                ),
            ));
        }
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        let foreign_origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != "null")
            .is_some_and(|o| {
                let authority = o.split_once("://").map_or(o, |(_, a)| a);
                !host_allowed(authority, extra)
            });
        if cross_site || foreign_origin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-site browser requests are refused by a server without API keys",
            ));
        }
    }
    Ok(next.run(req).await)
}

async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    // Health, the API description and the dashboard's page and assets (the
    // page asks for a key and sends it with its API calls).
    let open = matches!(path, "/healthz" | "/openapi.json") || dashboard::is_page(path);
    let tenant = if !state.config.require_auth || open {
        Tenant::default()
    } else {
        let key = bearer(req.headers()).or_else(|| {
            // Browsers' EventSource cannot set headers: the stream route
            // alone takes the key as a query parameter.
            let stream = (path.starts_with("/api/jobs/") || path.starts_with("/api/batches/"))
                && path.ends_with("/stream");
            stream.then(|| access_token(req.uri().query())).flatten()
        });
        let Some(key) = key else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs an API key: send Authorization: Bearer <key>",
            ));
        };
        state.service.authenticate(&key).await?
    };
    req.extensions_mut().insert(tenant);
    Ok(next.run(req).await)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

fn access_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "access_token").then(|| v.to_owned())
    })
}

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

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse::<JobId>().map_err(|e| ApiError::bad_request(e.0))
}

fn to_new_job(tenant: Tenant, req: SubmitRequest) -> Result<NewJob, ApiError> {
    let source = SourceText::parse(req.source_text).map_err(|e| ApiError::bad_request(e.0))?;
    let kind = match req.kind.as_deref() {
        None => JobType::Translation,
        Some(k) => k
            .parse::<JobType>()
            .map_err(|e| ApiError::bad_request(e.0))?,
    };
    let c = req.config.unwrap_or_default();
    let mut config = JobConfig::default();
    if let Some(engine) = c.engine {
        config.engine = Some(EngineName::parse(&engine).map_err(|e| ApiError::bad_request(e.0))?);
    }
    if let Some(model) = c.model {
        let model = model.trim().to_owned();
        if model.is_empty() || model.len() > 200 {
            return Err(ApiError::bad_request(
                "config.model must be 1 to 200 characters",
            ));
        }
        config.model = Some(model);
    }
    if let Some(size) = c.chunk_size {
        let size = u32::try_from(size).map_err(|_| {
            ApiError::bad_request(format!(
                "chunkSize must be between 1 and 100000, got {size}"
            ))
        })?;
        config.chunk_size = ChunkSize::new(size).map_err(|e| ApiError::bad_request(e.0))?;
    }
    if let Some(h) = c.use_helper_ai {
        config.use_helper_ai = h;
    }
    if let Some(terms) = c.glossary {
        use lotsawa_core::glossary::{MAX_JOB_GLOSSARY_BYTES, MAX_JOB_TERMS, check_term};
        if terms.len() > MAX_JOB_TERMS {
            return Err(ApiError::bad_request(format!(
                "config.glossary holds at most {MAX_JOB_TERMS} terms"
            )));
        }
        let bytes: usize = terms.iter().map(|t| t.bo.len() + t.en.len()).sum();
        if bytes > MAX_JOB_GLOSSARY_BYTES {
            return Err(ApiError::bad_request(format!(
                "config.glossary holds at most {MAX_JOB_GLOSSARY_BYTES} bytes of terms"
            )));
        }
        for (i, t) in terms.into_iter().enumerate() {
            if let Err(why) = check_term(t.bo.trim(), t.en.trim()) {
                return Err(ApiError::bad_request(format!("config.glossary[{i}] {why}")));
            }
            config.glossary.push(lotsawa_core::GlossaryEntry {
                bo: t.bo.trim().to_owned(),
                en: t.en.trim().to_owned(),
            });
        }
    }
    if let Some(url) = c.callback_url {
        // Its address is checked by the service (it resolves the host).
        config.callback_url = Some(url.trim().to_owned());
    }
    if let Some(q) = c.quality_threshold {
        if !(0.0..=1.0).contains(&q) {
            return Err(ApiError::bad_request(format!(
                "qualityThreshold must be between 0 and 1, got {q}"
            )));
        }
        config.quality_threshold = q;
    }
    Ok(NewJob {
        tenant,
        kind,
        source,
        config,
    })
}

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
        (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or file too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON, a PDF or a form; or the body is not a PDF", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key used with a different request; or a PDF that cannot be read: encrypted, damaged, scanned (no text layer), or its Tibetan unrecoverable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn submit_job(
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
#[utoipa::path(get, path = "/api/jobs/{id}", params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The job", body = JobDto),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobDto>, ApiError> {
    let Path(id) = path?;
    let id = parse_id(&id)?;
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
    params(("id" = String, Path, description = "Job id (UUID)"),
           ("pages" = Option<bool>, Query, description = "Mark where each page of the source starts: a `[page N]` line before the first chunk that starts on it")),
    responses(
        (status = 200, description = "The output", body = String, content_type = "text/plain"),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not completed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn job_result(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<ResultParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let id = parse_id(&id)?;
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
#[utoipa::path(delete, path = "/api/jobs/{id}", params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "Cancelled", body = ActionResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already completed, failed or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ActionResponse>, ApiError> {
    let Path(id) = path?;
    let id = parse_id(&id)?;
    state.service.cancel(&tenant, id).await?;
    Ok(Json(ActionResponse {
        message: "Job cancelled successfully".into(),
        job_id: id.to_string(),
    }))
}

/// Queue a failed or cancelled job again; only unfinished chunks run.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "Queued again", body = ActionResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not failed or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn retry_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ActionResponse>, ApiError> {
    let Path(id) = path?;
    let id = parse_id(&id)?;
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
    params(("id" = String, Path, description = "Job id (UUID)"),
           ("ewts" = Option<bool>, Query, description = "Add each source in EWTS (Wylie) transliteration")),
    responses(
        (status = 200, description = "The chunks, in order", body = ChunkListDto),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
async fn job_chunks(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<ChunkParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChunkListDto>, ApiError> {
    let Path(id) = path?;
    let id = parse_id(&id)?;
    let Query(ChunkParams { ewts }) = query?;
    let records = state.service.chunk_records(&tenant, id).await?;
    let chunks = tokio::task::spawn_blocking(move || {
        let pages = lotsawa_core::ledger::source_pages(records.iter().map(|c| c.source.as_str()));
        records
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut dto = ChunkDto::from_record(c, ewts);
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

/// Most jobs one page may hold.
pub const MAX_PAGE: u32 = 100;

/// The query of a list request, parsed at the edge: a bad value or an
/// unknown parameter is a 400 problem naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only jobs in this status.
    #[serde(default, deserialize_with = "parsed")]
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    #[serde(default, rename = "type", deserialize_with = "parsed")]
    pub kind: Option<JobType>,
    /// Page size.
    #[serde(default, deserialize_with = "parsed")]
    pub limit: Option<PageLimit>,
    /// Opaque cursor from a previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A page size in 1..=[`MAX_PAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(pub u32);

impl std::str::FromStr for PageLimit {
    type Err = lotsawa_core::ValidationError;
    fn from_str(l: &str) -> Result<Self, Self::Err> {
        match l.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(Self(n)),
            _ => Err(lotsawa_core::ValidationError(format!(
                "limit must be an integer between 1 and {MAX_PAGE}, got '{l}'"
            ))),
        }
    }
}

/// A query value through its type's own parser, so the message is the
/// domain's.
pub(crate) fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = lotsawa_core::ValidationError>,
{
    let raw = String::deserialize(d)?;
    raw.parse()
        .map(Some)
        .map_err(|e: lotsawa_core::ValidationError| <D::Error as serde::de::Error>::custom(e.0))
}

/// Jobs, newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/jobs",
    params(
        ("status" = Option<String>, Query, description = "pending, processing, completed, failed or cancelled"),
        ("type" = Option<String>, Query, description = "translation or transliteration"),
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of jobs", body = JobListDto),
        (status = 400, description = "Bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_jobs(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobListDto>, ApiError> {
    let Query(ListParams {
        status,
        kind,
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

/// Liveness and readiness.
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "Shutting down or store unavailable", body = Problem, content_type = "application/problem+json"),
))]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
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
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.service.metrics().await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok((headers, text).into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lotsawa",
        description = "Durable Tibetan to English translation jobs. \
        `GET /api/jobs/{id}/stream` is a text/event-stream: events `connected`, `progress`, \
        `chunk`, then `completed`, `failed` or `cancelled`, then `event: close`."
    ),
    paths(
        submit_job,
        get_job,
        cancel_job,
        retry_job,
        list_jobs,
        sse::stream_job,
        batches::submit_batch,
        batches::get_batch,
        batches::cancel_batch,
        batches::retry_batch,
        batches::list_batches,
        batches::stream_batch,
        job_chunks,
        job_result,
        healthz,
        metrics,
        openapi
    ),
    components(schemas(
        SubmitRequest,
        SubmitConfig,
        SubmitResponse,
        ActionResponse,
        JobDto,
        ResultDto,
        JobListDto,
        BatchRequest,
        BatchItemRequest,
        BatchSubmitResponse,
        BatchDto,
        BatchItemDto,
        BatchCountsDto,
        BatchListDto,
        ChunkDto,
        ChunkListDto,
        Health,
        Problem,
        ProgressEvent,
        SseEvent
    )),
    modifiers(&CommonResponses)
)]
pub struct ApiDoc;

/// Answers every keyed operation can give, added to each once: 401 (no or
/// a wrong key, when keys are required), 503 (shutting down, the store
/// refusing writes, a request past its deadline), and 429 where quotas
/// apply (job creation, streams).
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let keyed = path.starts_with("/api/") || path == "/metrics";
            let limited = path == "/api/jobs" || path.ends_with("/stream");
            for op in [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()]
                .into_iter()
                .flatten()
            {
                let responses = &mut op.responses.responses;
                if keyed {
                    responses.entry("401".into()).or_insert_with(|| {
                        problem("No API key, or an unknown or revoked one").into()
                    });
                    responses.entry("503".into()).or_insert_with(|| {
                        problem(
                            "Shutting down, storage refusing writes, or past the request deadline",
                        )
                        .into()
                    });
                }
                if limited {
                    responses.entry("429".into()).or_insert_with(|| {
                        problem("A quota is spent (creation rate, waiting jobs, open streams); see Retry-After").into()
                    });
                }
            }
        }
    }
}
