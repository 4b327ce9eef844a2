//! Documents as job input: a request body that is a PDF
//! (`Content-Type: application/pdf`, settings in the query) or a
//! `multipart/form-data` form (a `file` part, an optional `config` JSON part
//! and `type`). The PDF's text is read off the async runtime, within a time
//! budget and a few at a time; a PDF that cannot be read is refused with the
//! reason and never reaches the queue.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::dto::{SubmitConfig, SubmitRequest};
use crate::{ApiError, AppState};

/// PDFs read at once on one process; more wait.
pub const PDF_READERS: usize = 2;

/// Default time one PDF may take to read.
pub const DEFAULT_PDF_BUDGET: Duration = Duration::from_secs(20);

/// Default largest PDF (the file itself): 16 MiB.
pub const DEFAULT_PDF_LIMIT: usize = 16 * 1024 * 1024;

/// Readers of PDFs, shared by the routes of one router.
#[derive(Clone)]
pub(crate) struct Readers(Arc<Semaphore>);

impl Default for Readers {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(PDF_READERS)))
    }
}

/// What kind of body a submission has.
pub(crate) enum BodyKind {
    Json,
    Pdf,
    Form,
}

/// The media type of a request's `Content-Type`, lower case, without
/// parameters ("" when there is none).
pub(crate) fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// An uploaded file's text: UTF-8, a leading byte-order mark dropped; a
/// 400 naming `what` otherwise.
pub(crate) fn utf8_text(body: &[u8], what: &str) -> Result<String, ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request(format!("{what} is not UTF-8 text")))
}

/// The kind of a body by its `Content-Type`; other types are a 415.
pub(crate) fn body_kind(req: &Request) -> Result<BodyKind, ApiError> {
    let essence = media_type(req.headers());
    match essence.as_str() {
        "application/pdf" => Ok(BodyKind::Pdf),
        "multipart/form-data" => Ok(BodyKind::Form),
        e if e == "application/json" || (e.starts_with("application/") && e.ends_with("+json")) => {
            Ok(BodyKind::Json)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a request body with Content-Type: application/json, application/pdf or multipart/form-data",
        )),
    }
}

/// Settings of a PDF body, in the query, named as in the JSON `config`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PdfQuery {
    engine: Option<String>,
    model: Option<String>,
    #[serde(default, deserialize_with = "from_text")]
    chunk_size: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "useHelperAI", default, deserialize_with = "from_text")]
    use_helper_ai: Option<bool>,
    #[serde(default, deserialize_with = "from_text")]
    quality_threshold: Option<f64>,
    callback_url: Option<String>,
    #[serde(default, deserialize_with = "from_text")]
    parallel_chunks: Option<i64>,
    #[serde(default, deserialize_with = "from_text")]
    priority: Option<i64>,
}

fn from_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = String::deserialize(d)?;
    raw.trim()
        .parse()
        .map(Some)
        .map_err(|e| <D::Error as serde::de::Error>::custom(format!("{raw:?}: {e}")))
}

/// Read a PDF's text off the runtime; refusals are problems that say why.
pub(crate) async fn read_pdf(state: &AppState, bytes: Bytes) -> Result<String, ApiError> {
    let _slot = state
        .pdf_readers
        .0
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        })?;
    let budget = state.config.pdf_budget;
    let options = lotsawa_pdf::Options {
        budget,
        ..lotsawa_pdf::Options::default()
    };
    let task = tokio::task::spawn_blocking(move || lotsawa_pdf::extract(&bytes, &options));
    let refused = |e: lotsawa_pdf::PdfError| {
        let status = match e {
            lotsawa_pdf::PdfError::NotPdf => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    };
    match tokio::time::timeout(budget + Duration::from_secs(2), task).await {
        Err(_) => Err(refused(lotsawa_pdf::PdfError::TooSlow)),
        Ok(Err(join)) => {
            tracing::error!(error = %join, "the PDF reader failed");
            Err(refused(lotsawa_pdf::PdfError::Broken(
                "its structure made the reader fail".into(),
            )))
        }
        Ok(Ok(Err(e))) => Err(refused(e)),
        Ok(Ok(Ok(x))) => {
            tracing::info!(
                pages = x.pages,
                syllables = x.syllables,
                from_actual_text = x.from_actual_text,
                from_font_table = x.from_font_table,
                from_shaping = x.from_shaping,
                "read a PDF"
            );
            Ok(x.text)
        }
    }
}

/// A JSON body within the JSON limit (the route itself admits files up
/// to the PDF limit).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: Request,
) -> Result<T, ApiError> {
    let limit = state.config.body_limit;
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this server accepts",
            )
        })?;
    let axum::Json(v) = axum::Json::<T>::from_bytes(&bytes)?;
    Ok(v)
}

/// A job submission from any accepted body.
pub(crate) async fn submission(state: &AppState, req: Request) -> Result<SubmitRequest, ApiError> {
    match body_kind(&req)? {
        BodyKind::Json => json_body(state, req).await,
        BodyKind::Pdf => pdf_submission(state, req).await,
        BodyKind::Form => {
            let mut form = parse_form(req, state).await?;
            if form.files.len() != 1 {
                return Err(ApiError::bad_request(
                    "a job's form has exactly one file part (submit several as a batch)",
                ));
            }
            let file = form.files.remove(0);
            Ok(SubmitRequest {
                source_text: form_text(state, file).await?,
                kind: form.kind,
                config: form.config,
            })
        }
    }
}

/// A submission whose body is a PDF: its text and the query's settings.
pub(crate) async fn pdf_submission(
    state: &AppState,
    req: Request,
) -> Result<SubmitRequest, ApiError> {
    let Query(q) = Query::<PdfQuery>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let bytes = read_body(req, state.config.pdf_limit).await?;
    let text = read_pdf(state, bytes).await?;
    Ok(SubmitRequest {
        source_text: text,
        kind: q.kind,
        config: Some(SubmitConfig {
            engine: q.engine,
            model: q.model,
            chunk_size: q.chunk_size,
            use_helper_ai: q.use_helper_ai,
            quality_threshold: q.quality_threshold,
            glossary: None,
            callback_url: q.callback_url,
            parallel_chunks: q.parallel_chunks,
            priority: q.priority,
            glossary_ids: None,
            examples: None,
        }),
    })
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the file is larger than this server accepts ({limit} bytes)"),
            )
        })
}

/// One file of a form: its name and bytes.
pub(crate) struct FormFile {
    pub name: Option<String>,
    pub bytes: Bytes,
    pub pdf: bool,
}

/// A form's files (`file` parts), its `config` and `type`.
pub(crate) struct Form {
    pub files: Vec<FormFile>,
    pub config: Option<SubmitConfig>,
    pub kind: Option<String>,
}

/// Turn a form's file into a submission's text.
pub(crate) async fn form_text(state: &AppState, file: FormFile) -> Result<String, ApiError> {
    if file.pdf || lotsawa_pdf::is_pdf(&file.bytes) {
        return read_pdf(state, file.bytes).await;
    }
    String::from_utf8(file.bytes.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{}: a file must be a PDF or UTF-8 text",
                file.name.as_deref().unwrap_or("file")
            ),
        )
    })
}

/// Parse the parts of a form.
pub(crate) async fn parse_form(req: Request, state: &AppState) -> Result<Form, ApiError> {
    let mut form = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let mut out = Form {
        files: Vec::new(),
        config: None,
        kind: None,
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(
            status,
            format!("the form cannot be read: {}", e.body_text()),
        )
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                let pdf = field
                    .content_type()
                    .is_some_and(|t| t.eq_ignore_ascii_case("application/pdf"))
                    || field
                        .file_name()
                        .is_some_and(|f| f.to_ascii_lowercase().ends_with(".pdf"));
                let file_name = field.file_name().map(str::to_owned);
                let bytes = field.bytes().await.map_err(bad)?;
                out.files.push(FormFile {
                    name: file_name,
                    bytes,
                    pdf,
                });
            }
            "config" => {
                let bytes = field.bytes().await.map_err(bad)?;
                let config: SubmitConfig = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::bad_request(format!("the config part is not valid: {e}"))
                })?;
                out.config = Some(config);
            }
            "type" => out.kind = Some(field.text().await.map_err(bad)?.trim().to_owned()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown form part {other:?}: expected file, config or type"
                )));
            }
        }
    }
    if out.files.is_empty() {
        return Err(ApiError::bad_request("the form has no file part"));
    }
    Ok(out)
}
