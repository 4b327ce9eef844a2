//! The translator's desk: a job's chunks one by one, and corrections of a
//! chunk's translation under `If-Match` (a new human revision, another
//! revision made current, the reviewed flag).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use lotsawa_core::Tenant;
use lotsawa_core::auth::Caller;
use lotsawa_core::review::EditRequest;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::dto::ChunkDto;
use crate::error::NoSuchJob;
use crate::extract::ChunkPath;
use crate::{ApiError, AppState};

/// A correction of a chunk's translation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRequest {
    /// A new translation (a human revision); the text of a revision the
    /// chunk already has makes that one current.
    #[serde(default)]
    pub text: Option<String>,
    /// A note kept with the new revision.
    #[serde(default)]
    pub note: Option<String>,
    /// Mark the current text reviewed (or not). A new text without it is
    /// not reviewed.
    #[serde(default)]
    pub reviewed: Option<bool>,
    /// Make revision `n` (from 1) current.
    #[serde(default)]
    pub revision: Option<u32>,
}

/// A chunk answer: the chunk with its `ETag` header.
fn chunk_response(dto: ChunkDto) -> Response {
    let tag = HeaderValue::from_str(&dto.etag).ok();
    let mut res = Json(dto).into_response();
    if let Some(tag) = tag {
        res.headers_mut().insert(header::ETAG, tag);
    }
    res
}

/// One chunk of a job, with its revisions; its `ETag` names its version.
#[utoipa::path(get, path = "/api/jobs/{id}/chunks/{index}", params(ChunkPath),
    responses(
        (status = 200, description = "The chunk", body = ChunkDto,
            headers(("ETag" = String, description = "Send as If-Match to correct it"))),
        (status = 400, description = "Malformed id or index"),
        NoSuchJob,
    ))]
pub(crate) async fn get_chunk(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: ChunkPath,
) -> Result<Response, ApiError> {
    let (chunk, label) = state.service.chunk(&tenant, path.id, path.index).await?;
    Ok(chunk_response(ChunkDto::from_chunk(chunk, &label, false)))
}

/// Correct a chunk's translation: `{"text", "note"}` makes a new human
/// revision current, `{"revision": n}` makes revision n current,
/// `{"reviewed": true}` marks it reviewed (they combine, but `text` and
/// `revision` exclude each other). `If-Match` must be the chunk's `ETag`.
#[utoipa::path(put, path = "/api/jobs/{id}/chunks/{index}/translation", params(ChunkPath,
        ("If-Match" = String, Header, description = "The chunk's ETag from GET /api/jobs/{id}/chunks")),
    request_body = CorrectionRequest,
    responses(
        (status = 200, description = "The chunk as corrected", body = ChunkDto,
            headers(("ETag" = String, description = "Its new version"))),
        (status = 400, description = "Malformed id, index or body; an empty text; no such revision"),
        NoSuchJob,
        (status = 409, description = "The chunk is not translated yet, or keeps as many revisions as it may"),
        (status = 412, description = "If-Match names an older version: read the chunk again"),
        (status = 428, description = "No If-Match"),
    ))]
pub(crate) async fn put_translation(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: ChunkPath,
    headers: HeaderMap,
    body: Result<Json<CorrectionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let if_match = match headers.get(header::IF_MATCH) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("If-Match must be visible ASCII"))?,
        ),
        None => None,
    };
    let request = EditRequest {
        text: req.text,
        note: req.note,
        reviewed: req.reviewed,
        revision: req.revision,
    };
    let (chunk, label) = state
        .service
        .correct_chunk(&caller, path.id, path.index, if_match, &request)
        .await?;
    Ok(chunk_response(ChunkDto::from_chunk(chunk, &label, false)))
}

/// The query of an export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `tmx` (TMX 1.4b), `xliff` (XLIFF 2.1) or `html` (a printable
    /// bilingual page).
    pub format: Option<String>,
}

/// A job's bilingual text for CAT tools: TMX 1.4b (one `tu` per translated
/// chunk), XLIFF 2.1 (one `unit` per chunk, `state` from its status and
/// review) or a printable side-by-side HTML page; each chunk's current
/// revision.
#[utoipa::path(get, path = "/api/jobs/{id}/export",
    params(crate::extract::JobIdPath, ExportParams),
    responses(
        (status = 200, description = "The file", content(
            (String = "application/x-tmx+xml"),
            (String = "application/xliff+xml"),
            (String = "text/html"))),
        (status = 400, description = "Malformed id, or a format other than tmx, xliff or html"),
        NoSuchJob,
    ))]
pub(crate) async fn export_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    crate::extract::JobIdPath(id): crate::extract::JobIdPath,
    query: Result<axum::extract::Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(ExportParams { format }) = query?;
    let format = format.unwrap_or_default();
    let (content_type, extension) = match format.as_str() {
        "tmx" => ("application/x-tmx+xml; charset=utf-8", "tmx"),
        "xliff" => ("application/xliff+xml; charset=utf-8", "xlf"),
        "html" => ("text/html; charset=utf-8", "html"),
        _ => {
            return Err(ApiError::bad_request(format!(
                "format: give tmx, xliff or html{}",
                if format.is_empty() {
                    String::new()
                } else {
                    format!(" (not '{}')", format.chars().take(40).collect::<String>())
                }
            )));
        }
    };
    let sheet = state.service.chunk_sheet(&tenant, id).await?;
    let created = sheet.job.created_at;
    let body = tokio::task::spawn_blocking(move || {
        let segments = lotsawa_core::service::segments_of(&sheet.chunks);
        match extension {
            "tmx" => lotsawa_core::exchange::tmx(&segments, env!("CARGO_PKG_VERSION"), created),
            "xlf" => lotsawa_core::exchange::xliff(&format!("job-{id}"), &segments),
            _ => lotsawa_core::exchange::html(&format!("Lotsawa job {id}"), &segments),
        }
    })
    .await
    .map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy; try again",
        )
    })?;
    let disposition = if extension == "html" {
        "inline"
    } else {
        "attachment"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("{disposition}; filename=\"{id}.{extension}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// What an import did.
#[derive(Debug, serde::Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportDto {
    /// Chunks whose target became a new current revision.
    pub updated: Vec<u32>,
    /// Chunks whose reviewed state changed (`final` is reviewed).
    pub reviewed: Vec<u32>,
    /// Units that matched their chunk as it is (or had no target).
    pub unchanged: u32,
    /// Units not applied, and why.
    pub skipped: Vec<SkippedDto>,
}

/// A unit an import did not apply.
#[derive(Debug, serde::Serialize, Deserialize, ToSchema)]
pub struct SkippedDto {
    /// The chunk.
    pub index: u32,
    /// Why.
    pub reason: String,
}

/// The body of an XML upload as text: `wanted` (or generic XML) by its
/// `Content-Type`, else a 415.
fn xml_body(headers: &HeaderMap, body: &[u8], wanted: &str) -> Result<String, ApiError> {
    let mime = crate::documents::media_type(headers);
    if !(mime == wanted || mime == "application/xml" || mime == "text/xml") {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send the file as the body with Content-Type: {wanted}"),
        ));
    }
    crate::documents::utf8_text(body, "the file")
}

/// Import an XLIFF 2 file exported from this job and edited elsewhere:
/// each changed target becomes a human revision (a `final` unit is marked
/// reviewed). Every unit must be one of the job's chunks with its source,
/// or nothing is imported (422).
#[utoipa::path(post, path = "/api/jobs/{id}/import", params(crate::extract::JobIdPath),
    request_body(content = String, content_type = "application/xliff+xml"),
    responses(
        (status = 200, description = "What was imported", body = ImportDto),
        (status = 400, description = "Malformed id; not an XLIFF 2 document"),
        NoSuchJob,
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not application/xliff+xml"),
        (status = 422, description = "Units that are not the job's chunks: nothing imported"),
    ))]
pub(crate) async fn import_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    crate::extract::JobIdPath(id): crate::extract::JobIdPath,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ImportDto>, ApiError> {
    let xml = xml_body(&headers, &body, "application/xliff+xml")?;
    let report = state.service.import_xliff(&caller, id, &xml).await?;
    Ok(Json(ImportDto {
        updated: report.updated,
        reviewed: report.reviewed,
        unchanged: report.unchanged,
        skipped: report
            .skipped
            .into_iter()
            .map(|(index, reason)| SkippedDto { index, reason })
            .collect(),
    }))
}

/// What a memory import took.
#[derive(Debug, serde::Serialize, Deserialize, ToSchema)]
pub struct MemoryImportDto {
    /// Segments taken into the memory.
    pub imported: usize,
}

/// Take a TMX file's `bo`/`en` pairs into the caller's translation memory
/// as people's translations (at most 2,000 per file): they then serve
/// chunks of the same source, and similar ones as examples.
#[utoipa::path(post, path = "/api/memory/import",
    request_body(content = String, content_type = "application/x-tmx+xml"),
    responses(
        (status = 200, description = "Imported", body = MemoryImportDto),
        (status = 400, description = "Not a TMX document, or too many units"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not TMX"),
    ))]
pub(crate) async fn import_memory(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<MemoryImportDto>, ApiError> {
    let xml = xml_body(&headers, &body, "application/x-tmx+xml")?;
    let imported = state.service.import_memory(&tenant, &xml).await?;
    Ok(Json(MemoryImportDto { imported }))
}

/// A re-translation asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetranslateRequest {
    /// The engine (one the server offers).
    pub engine: String,
    /// The model (the engine's default when absent).
    #[serde(default)]
    pub model: Option<String>,
}

/// `202` answer to a re-translation.
#[derive(Debug, serde::Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetranslateAccepted {
    /// What happens now.
    pub message: String,
    /// The job.
    pub job_id: String,
    /// The chunk.
    pub index: u32,
}

/// Re-translate one chunk with another engine or model, in the
/// background through the chunk path (provider limits, retries, the
/// memory of that engine and model): its answer appears in the chunk's
/// `revisions` as an engine revision; make it current with
/// `PUT …/translation {"revision": n}`.
#[utoipa::path(post, path = "/api/jobs/{id}/chunks/{index}/retranslate", params(ChunkPath),
    request_body = RetranslateRequest,
    responses(
        (status = 202, description = "Started", body = RetranslateAccepted,
            headers(("Location" = String, description = "The chunk, where the revision appears"))),
        (status = 400, description = "Malformed id, index or body; an engine or model not offered"),
        NoSuchJob,
        (status = 409, description = "The chunk is not translated, or keeps as many revisions as it may; a transliteration"),
    ))]
pub(crate) async fn retranslate_chunk(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    path: ChunkPath,
    body: Result<Json<RetranslateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    state
        .service
        .retranslate(&tenant, path.id, path.index, &req.engine, req.model)
        .await?;
    let location = format!("/api/jobs/{}/chunks/{}", path.id, path.index);
    let mut res = (
        axum::http::StatusCode::ACCEPTED,
        Json(RetranslateAccepted {
            message: "Re-translation started; the chunk's revisions show its answer".into(),
            job_id: path.id.to_string(),
            index: path.index,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}
