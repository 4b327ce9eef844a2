//! The OpenAPI description of the API ([`ApiDoc`], served at
//! `/openapi.json`): the operations the handlers' `#[utoipa::path]`
//! attributes describe, the schemas, and the answers common to many
//! operations, added in one place so each operation's attribute lists only
//! what is its own.

use axum::Json;
use utoipa::OpenApi;

use crate::dto::*;
use crate::{Problem, batches, sse};
// The handlers by their bare names (with the `__path_` types utoipa makes
// for them), so the document's operations carry no tag from the module
// they are in, as before the router was split into modules.
use crate::jobs::{
    __path_cancel_job, __path_get_job, __path_job_chunks, __path_job_result, __path_list_jobs,
    __path_retry_job, __path_submit_job,
};
use crate::router::{__path_healthz, __path_metrics};

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
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
