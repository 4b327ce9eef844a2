//! [`ApiError`]: every error the API returns, as RFC 9457 problem details.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotsawa_core::ServiceError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

/// The media type of every error answer, in its headers and in the OpenAPI
/// document alike.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the problem type (`about:blank` for plain HTTP statuses).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the status.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// A stable code for programs (`budget_exhausted`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// A spent budget: tokens a month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// A spent budget: when it resets (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
    budget: Option<lotsawa_core::usage::BudgetSpent>,
}

impl ApiError {
    /// An error with this status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
            budget: None,
        }
    }
    /// The same error with a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// The same error with `prefix` before its detail (which item of a
    /// batch it is about, say).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.detail.insert_str(0, prefix);
        self
    }
    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(id) => Self::not_found(format!("no job with id {id}")),
            ServiceError::BatchNotFound(id) => Self::not_found(format!("no batch with id {id}")),
            c @ ServiceError::Conflict { .. } => Self::new(StatusCode::CONFLICT, c.to_string()),
            ServiceError::Invalid(m) => Self::bad_request(m),
            ServiceError::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, m),
            ServiceError::Unauthorized(m) => Self::new(StatusCode::UNAUTHORIZED, m),
            r @ ServiceError::RateLimited(wait) => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, r.to_string());
                e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                e
            }
            ServiceError::IdempotencyMismatch(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            c @ ServiceError::ChunkNotFound { .. } => Self::not_found(c.to_string()),
            ServiceError::Conflicted(m) => Self::new(StatusCode::CONFLICT, m),
            g @ ServiceError::GlossaryNotFound(_) => Self::not_found(g.to_string()),
            ServiceError::Stale(m) => Self::new(StatusCode::PRECONDITION_FAILED, m),
            ServiceError::PreconditionRequired(m) => {
                Self::new(StatusCode::PRECONDITION_REQUIRED, m)
            }
            ServiceError::Unprocessable(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            ServiceError::QuotaExceeded(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, m),
            r @ ServiceError::BudgetExhausted(spent) => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, r.to_string());
                let wait = (spent.resets_at - chrono::Utc::now()).num_seconds().max(1);
                e.retry_after = Some(wait as u64);
                e.budget = Some(spent);
                e
            }
            ServiceError::Store(source) => {
                tracing::error!(error = %source, source = ?source, "store error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "an internal error occurred; the server log has the details",
                )
            }
            ServiceError::Internal(source) => {
                tracing::error!(error = %source, source = ?source, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "an internal error occurred; the server log has the details",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let detail = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a request body with Content-Type: application/json".to_owned()
            }
            JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is larger than this server accepts".to_owned()
            }
            _ => r.body_text(),
        };
        let status = match status {
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => status,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, detail)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("the path is not valid: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            error_code: self
                .budget
                .map(|_| lotsawa_core::usage::BUDGET_EXHAUSTED.to_owned()),
            budget: self.budget.map(|b| b.budget),
            resets_at: self.budget.map(|b| {
                b.resets_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
        };
        let status = self.status;
        let retry_after = self.retry_after;
        let mut res = (status, Json(problem)).into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

// Answers that many operations list in the OpenAPI document, each written
// once here; `openapi::ErrorAnswers` gives each its problem body.

/// 400 of an operation on one job or batch by its id.
#[derive(IntoResponses)]
#[response(status = 400, description = "Malformed id")]
pub(crate) struct MalformedId;

/// 404 of an operation on one job by its id.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such job")]
pub(crate) struct NoSuchJob;

/// 404 of an operation on one batch by its id.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such batch")]
pub(crate) struct NoSuchBatch;
