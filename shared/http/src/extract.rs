//! Extractors for the ids in a route's path (`/api/jobs/{id}`,
//! `/api/batches/{id}`). A handler takes a [`JobIdPath`] or a
//! [`BatchIdPath`] and gets a parsed id; a bad one is answered before the
//! handler runs, with the one 400 problem written here, so every route
//! refuses a malformed id in the same words. Each also describes its path
//! parameter to the OpenAPI document (`params(JobIdPath)`), for the same
//! reason.

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use lotsawa_core::{BatchId, JobId, ValidationError};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

use crate::ApiError;

/// The job id of a `/api/jobs/{id}…` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobIdPath(pub JobId);

/// The batch id of a `/api/batches/{id}…` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdPath(pub BatchId);

/// The glossary id of a `/api/glossaries/{id}` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlossaryIdPath(pub lotsawa_core::job::GlossaryId);

impl<S: Send + Sync> FromRequestParts<S> for GlossaryIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        id_in_path(parts, state).await.map(Self)
    }
}

impl IntoParams for GlossaryIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        id_parameter("Glossary id (UUID)")
    }
}

/// The job id and chunk index of a `/api/jobs/{id}/chunks/{index}…` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPath {
    /// The job.
    pub id: JobId,
    /// The chunk's index, from 0.
    pub index: u32,
}

impl<S: Send + Sync> FromRequestParts<S> for ChunkPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((id, index)) = Path::<(String, String)>::from_request_parts(parts, state).await?;
        let id = id
            .parse()
            .map_err(|e: ValidationError| ApiError::bad_request(e.0))?;
        let index = index
            .parse::<u32>()
            .ok()
            .filter(|_| index == "0" || !index.starts_with('0'))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'{}' is not a chunk index: give a whole number from 0",
                    index.chars().take(40).collect::<String>()
                ))
            })?;
        Ok(Self { id, index })
    }
}

impl IntoParams for ChunkPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = id_parameter("Job id (UUID)");
        params.push(
            ParameterBuilder::new()
                .name("index")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("Chunk index, from 0"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0.0)),
                ))
                .build(),
        );
        params
    }
}

/// The route's one path parameter parsed as `T`. A path axum cannot
/// decode and an id the domain refuses are both 400 problems: the first
/// through `From<PathRejection>`, the second with the domain's message
/// (which names what the id was for).
async fn id_in_path<T, S>(parts: &mut Parts, state: &S) -> Result<T, ApiError>
where
    T: FromStr<Err = ValidationError>,
    S: Send + Sync,
{
    let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
    raw.parse()
        .map_err(|e: ValidationError| ApiError::bad_request(e.0))
}

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        id_in_path(parts, state).await.map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BatchIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        id_in_path(parts, state).await.map(Self)
    }
}

/// The `id` path parameter, a string, described for people as `what`.
fn id_parameter(what: &str) -> Vec<Parameter> {
    vec![
        ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(what))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build(),
    ]
}

impl IntoParams for JobIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        id_parameter("Job id (UUID)")
    }
}

impl IntoParams for BatchIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        id_parameter("Batch id (UUID)")
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn answer(router: Router, uri: &str) -> (StatusCode, String) {
        let req = Request::get(uri).body(Body::empty()).expect("request");
        let res = router.oneshot(req).await.expect("infallible");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 4096)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn jobs() -> Router {
        Router::new().route(
            "/jobs/{id}",
            get(|JobIdPath(id): JobIdPath| async move { id.to_string() }),
        )
    }

    #[tokio::test]
    async fn a_good_id_reaches_the_handler() {
        let id = JobId::new();
        let (status, body) = answer(jobs(), &format!("/jobs/{id}")).await;
        assert_eq!((status, body), (StatusCode::OK, id.to_string()));
    }

    #[tokio::test]
    async fn a_bad_id_is_the_domains_problem() {
        let (status, body) = answer(jobs(), "/jobs/xyz").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let want = ApiError::bad_request("'xyz' is not a valid job id (expected a UUID)");
        let want = axum::body::to_bytes(want.into_response().into_body(), 4096)
            .await
            .expect("body");
        assert_eq!(body.as_bytes(), &want[..]);

        let batches = Router::new().route(
            "/batches/{id}",
            get(|BatchIdPath(id): BatchIdPath| async move { id.to_string() }),
        );
        let (status, body) = answer(batches, "/batches/xyz").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("not a valid batch id"), "{body}");
    }

    #[tokio::test]
    async fn an_undecodable_path_is_a_400_problem() {
        let (status, body) = answer(jobs(), "/jobs/%FF%FE").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("the path is not valid"), "{body}");
    }
}
