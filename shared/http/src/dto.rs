//! The wire format: request and response bodies, in the API's camelCase.

use chrono::{DateTime, SecondsFormat, Utc};
use lotsawa_core::{JobResult, JobView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/jobs` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitRequest {
    /// The text to translate (Tibetan, possibly mixed with other scripts).
    pub source_text: String,
    /// Job type; `translation` (the default).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Settings.
    pub config: Option<SubmitConfig>,
}

/// Per-job settings.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitConfig {
    /// Engine name (see `GET /healthz` for those configured).
    pub engine: Option<String>,
    /// Model for the engine.
    pub model: Option<String>,
    /// Target chunk size in characters (1..=100000, default 2000).
    pub chunk_size: Option<i64>,
    /// Review each chunk with a second model call.
    #[serde(rename = "useHelperAI")]
    pub use_helper_ai: Option<bool>,
    /// Confidence threshold in 0..=1 (default 0.8).
    pub quality_threshold: Option<f64>,
    /// Terms this job must use: they win over every other glossary.
    pub glossary: Option<Vec<GlossaryTermDto>>,
    /// An `http`/`https` URL to POST the job's terminal event to, signed
    /// with `Lotsawa-Signature` (public addresses only unless the operator
    /// allows others; loopback on a local server).
    pub callback_url: Option<String>,
    /// Chunks of the job translated at once (1..=64, default 1), under the
    /// provider limits; above 1 a chunk's context is the previous chunk's
    /// source only.
    pub parallel_chunks: Option<i64>,
    /// Queue priority (-10..=10, default 0): higher first, first come
    /// first served within one.
    pub priority: Option<i64>,
    /// Glossaries (ids from `POST /api/glossaries`) whose terms the job
    /// takes at submission, after its own `glossary` (at most 10).
    pub glossary_ids: Option<Vec<String>>,
    /// How many similar translated segments of the tenant's memory a model
    /// engine gets as examples for each chunk (0..=10, default 3; 0 turns
    /// it off).
    pub examples: Option<i64>,
}

impl SubmitConfig {
    /// These settings, each one unset taken from `defaults` (a batch's
    /// settings under an item's own).
    pub fn or(self, defaults: &SubmitConfig) -> SubmitConfig {
        let d = defaults.clone();
        SubmitConfig {
            engine: self.engine.or(d.engine),
            model: self.model.or(d.model),
            chunk_size: self.chunk_size.or(d.chunk_size),
            use_helper_ai: self.use_helper_ai.or(d.use_helper_ai),
            quality_threshold: self.quality_threshold.or(d.quality_threshold),
            glossary: self.glossary.or(d.glossary),
            callback_url: self.callback_url.or(d.callback_url),
            parallel_chunks: self.parallel_chunks.or(d.parallel_chunks),
            priority: self.priority.or(d.priority),
            glossary_ids: self.glossary_ids.or(d.glossary_ids),
            examples: self.examples.or(d.examples),
        }
    }
}

/// `POST /api/batches` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRequest {
    /// The items, each a job (at most 1000 unless the operator says
    /// otherwise); names must be unique within the batch.
    pub items: Vec<BatchItemRequest>,
    /// Settings for every item; an item's own settings win field by field.
    pub config: Option<SubmitConfig>,
}

/// One item of a batch submission.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchItemRequest {
    /// The text.
    pub source_text: String,
    /// A name for it (a file name, say): one line, 1 to 200 bytes.
    pub name: String,
    /// Job type; `translation` (the default).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Settings for this item.
    pub config: Option<SubmitConfig>,
}

/// `202` answer to a batch submission.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSubmitResponse {
    /// The new batch's id.
    pub batch_id: String,
    /// Its items' jobs, in item order.
    pub job_ids: Vec<String>,
}

/// Items of a batch by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchCountsDto {
    /// Waiting to start.
    pub pending: u32,
    /// Running.
    pub processing: u32,
    /// Completed.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

/// One item of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemDto {
    /// Its name.
    pub name: String,
    /// Its job.
    pub job_id: String,
    /// The job's status.
    pub status: String,
    /// The job's progress, 0..=100.
    pub progress: u8,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A batch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchDto {
    /// UUID.
    pub id: String,
    /// `pending` (no item started), `processing`, then `completed` (every
    /// item completed), `failed` (every item ended, one failed) or
    /// `cancelled` (every item ended, none failed, one cancelled).
    pub status: String,
    /// Chunks done over chunks in all, 0..=100.
    pub progress: u8,
    /// Milliseconds left at the batch's pace so far, when known.
    pub estimated_time_remaining: Option<u64>,
    /// Chunks per minute since the first item started, when known.
    pub throughput: Option<f64>,
    /// Items by status.
    pub counts: BatchCountsDto,
    /// Items in all.
    pub total: u32,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, when its first item started.
    pub started_at: Option<String>,
    /// RFC 3339 UTC, when its last item ended (once every item has).
    pub completed_at: Option<String>,
    /// The items, in submission order (omitted in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<BatchItemDto>>,
}

impl BatchItemDto {
    /// Render an item.
    pub fn from_view(i: &lotsawa_core::BatchItemView) -> Self {
        Self {
            name: i.name.clone(),
            job_id: i.job.id.to_string(),
            status: i.job.status.as_str().to_owned(),
            progress: i.progress.percent,
            error: i.job.error.clone(),
        }
    }
}

impl BatchDto {
    /// Render a batch; `with_items` is false in lists.
    pub fn from_view(v: &lotsawa_core::BatchView, with_items: bool) -> Self {
        let c = v.summary.counts;
        Self {
            id: v.batch.id.to_string(),
            status: v.summary.status.as_str().to_owned(),
            progress: v.summary.progress.percent,
            estimated_time_remaining: v.summary.progress.estimated_time_remaining_ms,
            throughput: v.summary.progress.throughput_per_minute,
            counts: BatchCountsDto {
                pending: c.pending,
                processing: c.processing,
                completed: c.completed,
                failed: c.failed,
                cancelled: c.cancelled,
            },
            total: v.batch.items.len() as u32,
            created_at: rfc3339(v.batch.created_at),
            started_at: v.summary.started_at.map(rfc3339),
            completed_at: v.summary.finished_at.map(rfc3339),
            items: with_items.then(|| v.items.iter().map(BatchItemDto::from_view).collect()),
        }
    }
}

/// `GET /api/batches` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchListDto {
    /// Batches, newest first, without their items.
    pub batches: Vec<BatchDto>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A glossary term.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlossaryTermDto {
    /// Tibetan.
    pub bo: String,
    /// English.
    pub en: String,
}

/// `202` answer to a submission.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResponse {
    /// The new job's id.
    pub job_id: String,
    /// Always `pending`.
    pub status: String,
    /// `Job enqueued successfully`.
    pub message: String,
}

/// Answer to cancel and retry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResponse {
    /// What happened.
    pub message: String,
    /// The job.
    pub job_id: String,
}

/// A completed job's output.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultDto {
    /// The whole translation.
    pub translation: String,
    /// Engine confidence in 0..=1, when the engine reports one.
    pub confidence: Option<f64>,
    /// Sum of chunk processing time, ms.
    pub processing_time: u64,
    /// Engine that produced it.
    pub engine: String,
    /// Model, when the engine has one.
    pub model: Option<String>,
    /// Chunks flagged by the quality checks.
    pub warnings: Vec<String>,
    /// Chunks served from the translation memory.
    pub chunks_from_memory: u32,
    /// Provider calls, tokens and their cost (`null` for results finished
    /// before usage was counted).
    pub usage: Option<UsageDto>,
}

/// A job's provider usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageDto {
    /// Provider calls (translation, quality retry, review).
    pub calls: u64,
    /// Prompt (input) tokens the provider reported.
    pub prompt_tokens: u64,
    /// Completion (output) tokens the provider reported.
    pub completion_tokens: u64,
    /// US dollars, from the server's price table (`null` when unpriced).
    pub cost_usd: Option<f64>,
}

impl From<lotsawa_core::usage::JobUsage> for UsageDto {
    fn from(u: lotsawa_core::usage::JobUsage) -> Self {
        Self {
            calls: u.calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

impl From<JobResult> for ResultDto {
    fn from(r: JobResult) -> Self {
        Self {
            translation: r.translation,
            confidence: r.confidence,
            processing_time: r.processing_time,
            engine: r.engine,
            model: r.model,
            warnings: r.warnings,
            chunks_from_memory: r.chunks_from_memory,
            usage: r.usage.map(UsageDto::from),
        }
    }
}

/// A job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobDto {
    /// UUID.
    pub id: String,
    /// `translation` or `transliteration`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `processing`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Percent complete, 0..=100.
    pub progress: u8,
    /// Chunks translated.
    pub chunks_completed: u32,
    /// Chunks in all.
    pub chunks_total: u32,
    /// Milliseconds left, when known.
    pub estimated_time_remaining: Option<u64>,
    /// Chunks per minute over recent chunks, when known.
    pub throughput: Option<f64>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, when the current run started.
    pub started_at: Option<String>,
    /// RFC 3339 UTC, when it completed or failed.
    pub completed_at: Option<String>,
    /// RFC 3339 UTC, when it was cancelled.
    pub cancelled_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The stable code its error starts with (`provider_unavailable`,
    /// `budget_exhausted`, …), when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Its run number: runs so far (1 on the first run, +1 per retry).
    #[serde(default)]
    pub run: u32,
    /// The same run number, under its first name (kept for clients that
    /// read it; a chunk's `attempts` counts provider calls instead).
    #[schema(deprecated)]
    pub attempts: u32,
    /// Engine the job uses.
    pub engine: Option<String>,
    /// Model the job asked for.
    pub model: Option<String>,
    /// Target chunk size.
    pub chunk_size: u32,
    /// Chunks translated at once.
    #[serde(default = "one")]
    pub parallel_chunks: u32,
    /// Queue priority (-10..=10).
    #[serde(default)]
    pub priority: i8,
    /// Output, once completed (omitted in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultDto>,
    /// Output of the chunks translated so far, while not completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_translation: Option<String>,
    /// Where its callback URL goes, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The delivery of its last terminal event to the callback URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackDto>,
    /// For a document (PDF) source: the page each chunk starts on, from 1,
    /// by chunk (only on `GET /api/jobs/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pages: Option<Vec<u32>>,
    /// Chunks a person marked reviewed, of all.
    #[serde(default)]
    pub review: ReviewDto,
}

/// A job's review: chunks marked reviewed, of all.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct ReviewDto {
    /// Chunks marked reviewed.
    pub reviewed: u32,
    /// Chunks in all.
    pub total: u32,
}

/// A callback delivery's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackDto {
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// RFC 3339 UTC, when the receiver took it.
    pub delivered_at: Option<String>,
}

fn one() -> u32 {
    1
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl JobDto {
    /// Render a job; `with_result` is false in lists.
    pub fn from_view(v: JobView, with_result: bool) -> Self {
        let j = v.job;
        Self {
            id: j.id.to_string(),
            kind: j.kind.as_str().to_owned(),
            status: j.status.as_str().to_owned(),
            progress: v.progress.percent,
            chunks_completed: j.chunks_completed,
            chunks_total: j.chunks_total,
            estimated_time_remaining: v.progress.estimated_time_remaining_ms,
            throughput: v.progress.throughput_per_minute,
            created_at: rfc3339(j.created_at),
            started_at: j.started_at.map(rfc3339),
            completed_at: j.completed_at.map(rfc3339),
            cancelled_at: j.cancelled_at.map(rfc3339),
            error_code: j
                .error
                .as_deref()
                .and_then(|e| lotsawa_core::pipeline::split_code(e).0)
                .map(str::to_owned),
            error: j.error,
            run: j.run,
            attempts: j.run,
            engine: j.config.engine.map(|e| e.to_string()),
            model: j.config.model,
            chunk_size: j.config.chunk_size.into(),
            parallel_chunks: j.config.parallel_chunks,
            priority: j.config.priority,
            result: if with_result {
                j.result.map(ResultDto::from)
            } else {
                None
            },
            partial_translation: if with_result { v.partial } else { None },
            callback_url: j.config.callback_url,
            callback: j.callback.map(|c| CallbackDto {
                status: c.status.as_str().to_owned(),
                attempts: c.attempts,
                last_error: c.last_error,
                delivered_at: c.delivered_at.map(rfc3339),
            }),
            source_pages: None,
            review: ReviewDto {
                reviewed: j.review.reviewed.min(j.chunks_total),
                total: j.chunks_total,
            },
        }
    }
}

/// `GET /api/jobs` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobListDto {
    /// Jobs, newest first.
    pub jobs: Vec<JobDto>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One chunk of a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChunkDto {
    /// Position in the job, from 0.
    pub index: u32,
    /// Its source text.
    pub source: String,
    /// The source in EWTS, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ewts: Option<String>,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// Provider calls made for it, over all runs.
    pub attempts: u32,
    /// Its output, once completed.
    pub translation: Option<String>,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// The engine's confidence, when it has one.
    pub confidence: Option<f64>,
    /// Served from the translation memory.
    pub from_memory: bool,
    /// What the quality checks flagged.
    pub warning: Option<String>,
    /// Time the successful attempt took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// For a document (PDF) source: the page it starts on, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_page: Option<u32>,
    /// Its entity tag: send it as `If-Match` to correct it.
    #[serde(default)]
    pub etag: String,
    /// Its current revision's number (from 1), once translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// Every text it has had, oldest first (the engine's first).
    #[serde(default)]
    pub revisions: Vec<RevisionDto>,
    /// A person marked its current text reviewed.
    #[serde(default)]
    pub reviewed: bool,
    /// The similar segments of the memory its engine was given as
    /// examples, with their similarity.
    #[serde(default)]
    pub examples: Vec<ExampleDto>,
}

/// A segment of the memory given to an engine as an example.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExampleDto {
    /// Its Tibetan source.
    pub source: String,
    /// Its translation.
    pub translation: String,
    /// Similarity to the chunk (chrF-like character n-grams), 0..=1.
    pub similarity: f64,
    /// `human` (a person's translation) or `engine`.
    pub origin: String,
}

/// One text a chunk has had.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionDto {
    /// Its number, from 1.
    pub n: u32,
    /// The text.
    pub text: String,
    /// `engine` or `human`.
    pub origin: String,
    /// The engine, for an engine revision (`memory` when served from the
    /// translation memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The model, for an engine revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// RFC 3339 UTC, when it was made (unknown for a first revision made
    /// before revisions were kept).
    pub created_at: Option<String>,
    /// The API key that made a human revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The translator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// It is the chunk's current text.
    pub current: bool,
}

impl ChunkDto {
    /// Render a chunk with its revisions, the first described by `label`;
    /// `ewts` adds the transliterated source.
    pub fn from_chunk(
        c: lotsawa_core::ChunkRecord,
        label: &lotsawa_core::review::EngineLabel,
        ewts: bool,
    ) -> Self {
        use lotsawa_core::review;
        let etag = review::etag(&c);
        let current = review::current_of(&c);
        let revisions: Vec<RevisionDto> = review::revisions_of(&c, label)
            .into_iter()
            .map(|r| RevisionDto {
                n: r.n,
                current: r.n == current,
                text: r.text,
                origin: r.origin.as_str().to_owned(),
                engine: r.engine,
                model: r.model,
                created_at: r.at.map(rfc3339),
                key_id: r.key_id,
                note: r.note,
            })
            .collect();
        let reviewed = c.review.reviewed;
        let examples = c
            .examples
            .as_deref()
            .map(lotsawa_core::segments::decode_examples)
            .unwrap_or_default()
            .into_iter()
            .map(|e| ExampleDto {
                source: e.source,
                translation: e.translation,
                similarity: e.similarity,
                origin: if e.human { "human" } else { "engine" }.to_owned(),
            })
            .collect();
        let mut dto = Self::from_record(c, ewts);
        dto.examples = examples;
        dto.revision = (!revisions.is_empty()).then_some(current);
        dto.revisions = revisions;
        dto.reviewed = reviewed;
        dto.etag = etag;
        dto
    }

    /// Render a chunk record without its revisions; `ewts` adds the
    /// transliterated source.
    pub fn from_record(c: lotsawa_core::ChunkRecord, ewts: bool) -> Self {
        Self {
            index: c.index,
            source_ewts: ewts.then(|| lotsawa_core::ewts::to_ewts(&c.source)),
            source: c.source,
            status: c.status.as_str().to_owned(),
            attempts: c.provider_calls,
            translation: c.translation,
            error: c.error,
            confidence: c.confidence,
            from_memory: c.from_memory,
            warning: c.warning,
            duration_ms: c.duration_ms,
            source_page: None,
            etag: String::new(),
            revision: None,
            revisions: Vec::new(),
            reviewed: false,
            examples: Vec::new(),
        }
    }
}

/// `GET /api/jobs/{id}/chunks` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChunkListDto {
    /// The chunks, in order.
    pub chunks: Vec<ChunkDto>,
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Engines jobs may name.
    pub engines: Vec<String>,
}

/// One Server-Sent Event of a job's stream, as a client parses it. `data`
/// is JSON: `{"type":"connected"}`, a [`ProgressEvent`] (`type`
/// `progress`), `{"type":"chunk","index","translation"}`, a terminal
/// `completed`/`failed`/`cancelled` object, or `reconnect`; the last event
/// is `event: close` with the text `Job completed` (failed, cancelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SseEvent {
    /// Event name: absent (`message`) or `close`.
    pub event: Option<String>,
    /// The payload (JSON, or the close text).
    pub data: String,
    /// Position in the job: completed chunks so far (for `Last-Event-ID`).
    pub id: Option<String>,
    /// Reconnect delay in milliseconds, on `reconnect`.
    pub retry: Option<u64>,
}

/// SSE `progress` event payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    /// `progress`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Job id.
    pub id: String,
    /// Job status.
    pub status: String,
    /// 0..=100.
    pub progress: u8,
    /// Milliseconds left, when known.
    pub estimated_time_remaining: Option<u64>,
    /// Chunks done.
    pub chunks_completed: u32,
    /// Chunks in all.
    pub chunks_total: u32,
    /// Chunks per minute.
    pub throughput: Option<f64>,
}
