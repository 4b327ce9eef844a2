//! The OpenAPI description of the API ([`ApiDoc`], served at
//! `/openapi.json`): the operations the handlers' `#[utoipa::path]`
//! attributes describe, the schemas, and the answers common to many
//! operations, added in one place so each operation's attribute lists only
//! what is its own.

use std::collections::BTreeMap;

use axum::Json;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{IntoResponses, OpenApi};

use crate::desk::{
    __path_export_job, __path_get_chunk, __path_import_job, __path_import_memory,
    __path_put_translation, __path_retranslate_chunk, CorrectionRequest, ImportDto,
    MemoryImportDto, RetranslateAccepted, RetranslateRequest, SkippedDto,
};
use crate::dto::*;
use crate::error::PROBLEM_JSON;
use crate::glossaries::{
    __path_create_glossary, __path_delete_glossary, __path_get_glossary, __path_list_glossaries,
    __path_replace_glossary, GlossaryDto, GlossaryListDto,
};
use crate::{Problem, batches, sse};
// The handlers by their bare names (with the `__path_` types utoipa makes
// for them): utoipa tags an operation listed as `module::handler` with the
// module's name, and the job and health operations are untagged in the
// published document (batches and streams are tagged `batches`, `sse`).
use crate::jobs::{
    __path_cancel_job, __path_get_job, __path_job_chunks, __path_job_result, __path_list_jobs,
    __path_retry_job, __path_submit_job,
};
use crate::probes::{__path_healthz, __path_metrics};
use crate::usage::{__path_usage, BudgetDto, UsageLineDto, UsageReportDto};

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
        get_chunk,
        put_translation,
        retranslate_chunk,
        export_job,
        import_job,
        import_memory,
        create_glossary,
        list_glossaries,
        get_glossary,
        replace_glossary,
        delete_glossary,
        job_result,
        usage,
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
        UsageDto,
        UsageReportDto,
        UsageLineDto,
        BudgetDto,
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
        RevisionDto,
        ReviewDto,
        ExampleDto,
        CorrectionRequest,
        ImportDto,
        SkippedDto,
        MemoryImportDto,
        RetranslateRequest,
        RetranslateAccepted,
        GlossaryDto,
        GlossaryListDto,
        Health,
        Problem,
        ProgressEvent,
        SseEvent
    )),
    modifiers(&ErrorAnswers)
)]
pub struct ApiDoc;

// Answers that many operations list, each written once here. Like every
// error answer, they name only status and description: `ErrorAnswers`
// gives each its problem body.

/// 401 of every keyed operation (when keys are required).
#[derive(IntoResponses)]
#[response(status = 401, description = "No API key, or an unknown or revoked one")]
struct Unauthorized;

/// 503 of every keyed operation.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Shutting down, storage refusing writes, or past the request deadline"
)]
struct Unavailable;

/// 429 where quotas apply (job creation, streams).
#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "A quota is spent (creation rate, waiting jobs, open streams); see Retry-After"
)]
struct QuotaSpent;

/// Completes the error answers of every operation, so its attribute lists
/// only what is its own: keyed operations (`/api/…`, `/metrics`) get
/// [`Unauthorized`] and [`Unavailable`], quota-limited ones (job creation,
/// streams) [`QuotaSpent`], unless they list their own; then every 4xx and
/// 5xx answer gets the problem body, since every error is an
/// [`crate::ApiError`] answered as `application/problem+json`.
struct ErrorAnswers;

impl ErrorAnswers {
    /// The answers of `T` the operation does not list itself.
    fn add<T: IntoResponses>(responses: &mut BTreeMap<String, RefOr<Response>>) {
        for (status, answer) in T::responses() {
            responses.entry(status).or_insert(answer);
        }
    }
}

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let problem = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            let keyed = path.starts_with("/api/") || path == "/metrics";
            let limited = path == "/api/jobs" || path.ends_with("/stream");
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                if keyed {
                    Self::add::<Unauthorized>(responses);
                    Self::add::<Unavailable>(responses);
                }
                if limited {
                    Self::add::<QuotaSpent>(responses);
                }
                for (status, answer) in responses.iter_mut() {
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    if let RefOr::T(answer) = answer
                        && answer.content.is_empty()
                    {
                        answer.content.insert(PROBLEM_JSON.into(), problem.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The operations of the document: path, method, responses.
    fn operations() -> Vec<(String, String, serde_json::Map<String, Value>)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let responses = op["responses"].as_object().expect("responses").clone();
                ops.push((path.clone(), method.clone(), responses));
            }
        }
        ops
    }

    #[test]
    fn every_error_answer_is_a_problem() {
        for (path, method, responses) in operations() {
            for (status, answer) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = answer["content"].as_object().expect("content");
                    assert_eq!(content.len(), 1, "{method} {path} {status}");
                    assert_eq!(
                        content[PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn shared_answers_reach_their_operations() {
        for (path, method, responses) in operations() {
            let has = |s: &str| responses.contains_key(s);
            if path.contains("{id}") {
                assert!(has("400") && has("404"), "{method} {path}");
            }
            if path.starts_with("/api/") || path == "/metrics" {
                assert!(has("401") && has("503"), "{method} {path}");
            }
            if path == "/api/jobs" || path.ends_with("/stream") {
                assert!(has("429"), "{method} {path}");
            }
        }
    }
}
