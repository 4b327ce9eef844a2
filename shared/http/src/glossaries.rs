//! Glossaries as resources: `POST /api/glossaries` (TSV, TBX or JSON),
//! `GET /api/glossaries`, `GET/PUT/DELETE /api/glossaries/{id}`, each the
//! caller's tenant's.

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotsawa_core::Tenant;
use lotsawa_core::glossaries::{GlossaryFormat, GlossaryRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dto::{GlossaryTermDto, rfc3339};
use crate::extract::GlossaryIdPath;
use crate::{ApiError, AppState};

/// A glossary.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlossaryDto {
    /// Its id: name it in a job's `config.glossaryIds`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How many terms it has.
    pub terms: u32,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, when its terms or name last changed.
    pub updated_at: String,
    /// Its terms (not in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<GlossaryTermDto>>,
}

impl GlossaryDto {
    fn from_record(g: GlossaryRecord, with_entries: bool) -> Self {
        Self {
            id: g.id.to_string(),
            name: g.name,
            terms: g.terms,
            created_at: rfc3339(g.created_at),
            updated_at: rfc3339(g.updated_at),
            entries: with_entries.then(|| {
                g.entries
                    .into_iter()
                    .map(|e| GlossaryTermDto { bo: e.bo, en: e.en })
                    .collect()
            }),
        }
    }
}

/// `GET /api/glossaries` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GlossaryListDto {
    /// The caller's glossaries, oldest first, without their terms.
    pub glossaries: Vec<GlossaryDto>,
}

/// The query of an upload.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GlossaryParams {
    /// Its name (a JSON body may carry `name` instead).
    pub name: Option<String>,
}

/// The format and text of an uploaded glossary, by its `Content-Type`.
fn upload(headers: &HeaderMap, body: &[u8]) -> Result<(GlossaryFormat, String), ApiError> {
    let mime = crate::documents::media_type(headers);
    let format = match mime.as_str() {
        "application/json" => GlossaryFormat::Json,
        "text/tab-separated-values" | "text/plain" => GlossaryFormat::Tsv,
        "application/x-tbx" | "application/tbx+xml" | "application/xml" | "text/xml" => {
            GlossaryFormat::Tbx
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the glossary as application/json ({\"name\", \"entries\": [{\"bo\", \"en\"}]}), \
                 text/tab-separated-values (bo<TAB>en lines) or application/x-tbx (TBX)",
            ));
        }
    };
    Ok((format, crate::documents::utf8_text(body, "the glossary")?))
}

/// Parse an upload: its name (the query's, else the file's) and terms.
async fn parse_upload(
    headers: &HeaderMap,
    body: &[u8],
    name: Option<String>,
) -> Result<(Option<String>, Vec<lotsawa_core::GlossaryEntry>), ApiError> {
    let (format, text) = upload(headers, body)?;
    let (file_name, entries) =
        tokio::task::spawn_blocking(move || lotsawa_core::glossaries::parse(format, &text))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is busy; try again",
                )
            })?
            .map_err(ApiError::bad_request)?;
    Ok((name.or(file_name), entries))
}

/// Upload a glossary: TSV (`bo<TAB>en` lines, name in `?name=`), TBX
/// (`?name=`) or JSON (`{"name", "entries": [{"bo", "en"}]}`).
#[utoipa::path(post, path = "/api/glossaries", params(GlossaryParams),
    request_body(description = "The glossary", content(
        (String = "text/tab-separated-values"),
        (String = "application/x-tbx"),
        (GlossaryDto = "application/json"))),
    responses(
        (status = 201, description = "Stored", body = GlossaryDto,
            headers(("Location" = String, description = "URL of the glossary"))),
        (status = 400, description = "Not a glossary of that format, a bad term (the message names where), no name"),
        (status = 409, description = "The tenant keeps as many glossaries as it may"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not TSV, TBX or JSON"),
    ))]
pub(crate) async fn create_glossary(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Result<Query<GlossaryParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Query(GlossaryParams { name }) = query?;
    let (name, entries) = parse_upload(&headers, &body, name).await?;
    let name = name.ok_or_else(|| {
        ApiError::bad_request("name: give the glossary a name (?name=…, or \"name\" in JSON)")
    })?;
    let g = state
        .service
        .create_glossary(&tenant, name, entries)
        .await?;
    let location = format!("/api/glossaries/{}", g.id);
    let mut res = (
        StatusCode::CREATED,
        Json(GlossaryDto::from_record(g, false)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// The caller's glossaries, oldest first, without their terms.
#[utoipa::path(get, path = "/api/glossaries",
    responses((status = 200, description = "The glossaries", body = GlossaryListDto)))]
pub(crate) async fn list_glossaries(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
) -> Result<Json<GlossaryListDto>, ApiError> {
    let list = state.service.glossaries(&tenant).await?;
    Ok(Json(GlossaryListDto {
        glossaries: list
            .into_iter()
            .map(|g| GlossaryDto::from_record(g, false))
            .collect(),
    }))
}

/// A glossary with its terms.
#[utoipa::path(get, path = "/api/glossaries/{id}", params(GlossaryIdPath),
    responses(
        (status = 200, description = "The glossary", body = GlossaryDto),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such glossary"),
    ))]
pub(crate) async fn get_glossary(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    GlossaryIdPath(id): GlossaryIdPath,
) -> Result<Json<GlossaryDto>, ApiError> {
    let g = state.service.glossary(&tenant, id).await?;
    Ok(Json(GlossaryDto::from_record(g, true)))
}

/// Replace a glossary's terms (and its name, when given), in any upload
/// format. Jobs submitted before keep the terms they took.
#[utoipa::path(put, path = "/api/glossaries/{id}", params(GlossaryIdPath, GlossaryParams),
    request_body(description = "The glossary", content(
        (String = "text/tab-separated-values"),
        (String = "application/x-tbx"),
        (GlossaryDto = "application/json"))),
    responses(
        (status = 200, description = "Replaced", body = GlossaryDto),
        (status = 400, description = "Malformed id; not a glossary of that format, a bad term"),
        (status = 404, description = "No such glossary"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not TSV, TBX or JSON"),
    ))]
pub(crate) async fn replace_glossary(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    GlossaryIdPath(id): GlossaryIdPath,
    query: Result<Query<GlossaryParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<GlossaryDto>, ApiError> {
    let Query(GlossaryParams { name }) = query?;
    let (name, entries) = parse_upload(&headers, &body, name).await?;
    let g = state
        .service
        .replace_glossary(&tenant, id, name, entries)
        .await?;
    Ok(Json(GlossaryDto::from_record(g, false)))
}

/// Delete a glossary; jobs that took its terms keep them.
#[utoipa::path(delete, path = "/api/glossaries/{id}", params(GlossaryIdPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such glossary"),
    ))]
pub(crate) async fn delete_glossary(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    GlossaryIdPath(id): GlossaryIdPath,
) -> Result<StatusCode, ApiError> {
    state.service.delete_glossary(&tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
