//! Each item kind: a row struct holding its attributes, mapped to and from
//! an item by serde (`serde_dynamo`), and how it is built from the domain
//! types and read back into them.
//!
//! Strings are `S` attributes and numbers `N`; an absent `Option` is an
//! absent attribute (never `NULL`); timestamps are written as [`ts`] writes
//! them; JSON held in a string attribute is a [`Json`] field.

use chrono::{DateTime, Utc};
use lotsawa_core::{
    ApiKeyRecord, BatchRef, Callback, ChunkRecord, ChunkStatus, GlossaryEntry, Job, JobConfig,
    JobId, JobResult, JobStatus, JobType, Tenant,
};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

/// The item of a row.
pub(super) fn to_item<T: Serialize>(row: &T, what: &str) -> Result<Item, Corrupt> {
    serde_dynamo::to_item(row).map_err(|e| Corrupt(format!("{what}: {e}")))
}

/// The row of an item: `serde_dynamo::from_item`, read through
/// `serde_path_to_error` so that an error names the attribute at fault.
pub(super) fn from_item<T: DeserializeOwned>(item: &Item, what: &str) -> Result<T, Corrupt> {
    let map = serde_dynamo::Item::from(item.clone()).into_inner();
    let value =
        serde_dynamo::Deserializer::from_attribute_value(serde_dynamo::AttributeValue::M(map));
    serde_path_to_error::deserialize(value).map_err(|e| Corrupt(format!("{what}: {e}")))
}

/// A timestamp attribute: an `S` as [`ts`] writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stamp(pub(super) DateTime<Utc>);

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&ts(self.0))
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Stamp(t.with_timezone(&Utc)))
            .map_err(|e| D::Error::custom(format!("timestamp {text}: {e}")))
    }
}

/// A value kept as JSON in an `S` attribute.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Json<T>(pub(super) T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(Json)
            .map_err(D::Error::custom)
    }
}

fn parse_batch(text: &str) -> Result<BatchRef, Corrupt> {
    let corrupt = || Corrupt(format!("batch '{text}'"));
    let (id, index) = text.split_once(':').ok_or_else(corrupt)?;
    Ok(BatchRef {
        id: id.parse().map_err(|_| corrupt())?,
        index: index.parse().map_err(|_| corrupt())?,
    })
}

/// An API key item (`KEY#<hash>`/`KEY`), listed through `gsi2` under `KEYS`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    id: String,
    tenant: Tenant,
    created_at: Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<Stamp>,
    #[serde(default)]
    gsi2pk: String,
    #[serde(default)]
    gsi2sk: String,
}

/// The item of a new API key; listed through `gsi2` under `KEYS`.
pub fn new_key_item(record: &ApiKeyRecord, hash: &str) -> Result<Item, Corrupt> {
    let row = KeyRow {
        pk: key_pk(hash),
        sk: "KEY".into(),
        id: record.id.clone(),
        tenant: record.tenant.clone(),
        created_at: Stamp(record.created_at),
        revoked_at: record.revoked_at.map(Stamp),
        gsi2pk: "KEYS".into(),
        gsi2sk: format!("{}#{}", ts(record.created_at), record.id),
    };
    to_item(&row, "key item")
}

/// Read an API key item.
pub fn key_from_item(item: &Item) -> Result<ApiKeyRecord, Corrupt> {
    let row: KeyRow = from_item(item, "key item")?;
    Ok(ApiKeyRecord {
        id: row.id,
        tenant: row.tenant,
        created_at: row.created_at.0,
        revoked_at: row.revoked_at.map(|t| t.0),
    })
}

/// A job item (`JOB#<id>`/`JOB`): status, counters, timestamps, error, slot
/// and execution, and the listing keys.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    id: JobId,
    #[serde(default)]
    tenant: Tenant,
    kind: JobType,
    status: JobStatus,
    #[serde(default)]
    chunks_total: u32,
    #[serde(default)]
    chunks_completed: u32,
    #[serde(default)]
    run: u32,
    created_at: Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Stamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<Stamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled_at: Option<Stamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback: Option<Json<Callback>>,
    /// `<batch id>:<item index>` ([`batch_text`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<String>,
    /// The submitting request's W3C `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
    /// The queue priority, when not 0 (on the job item too, so lists can
    /// filter on it without the settings item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<i8>,
    /// Chunks marked reviewed (added to by corrections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reviewed: Option<i64>,
    /// Corrections that changed a chunk's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edits: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ingest_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi2pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi2sk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi3pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi3sk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi4pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi4sk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi5pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi5sk: Option<String>,
}

impl JobRow {
    /// What every new job item holds: counters and run at 0, and its keys
    /// in the status, all-jobs, type and tenant status indexes. The other
    /// attributes are written by the changes that make them.
    fn new(job: &Job) -> Self {
        let shard = shard_of(job.id);
        let list = Some(list_sk(&ts(job.created_at), job.id));
        JobRow {
            pk: job_pk(job.id),
            sk: "JOB".into(),
            id: job.id,
            tenant: job.tenant.clone(),
            kind: job.kind,
            status: job.status,
            chunks_total: job.chunks_total,
            chunks_completed: 0,
            run: 0,
            created_at: Stamp(job.created_at),
            started_at: None,
            completed_at: None,
            cancelled_at: None,
            error: None,
            callback: None,
            batch: job.batch.as_ref().map(batch_text),
            trace: job.trace.clone(),
            priority: (job.config.priority != 0).then_some(job.config.priority),
            reviewed: None,
            edits: None,
            execution_arn: None,
            slot: None,
            ingest_key: None,
            expires_at: None,
            gsi1pk: Some(status_pk(job.status, shard)),
            gsi1sk: list.clone(),
            gsi2pk: Some(all_pk(&job.tenant, shard)),
            gsi2sk: list.clone(),
            gsi3pk: Some(type_pk(&job.tenant, job.kind, shard)),
            gsi3sk: list.clone(),
            gsi4pk: None,
            gsi4sk: None,
            gsi5pk: Some(tenant_status_pk(&job.tenant, job.status, shard)),
            gsi5sk: list,
        }
    }
}

/// The job item of a new pending job (no texts, no settings), in the
/// queue index at `turn`.
pub fn new_job_item(job: &Job, turn: u64) -> Result<Item, Corrupt> {
    let row = JobRow {
        gsi4pk: Some(queue_pk(shard_of(job.id))),
        gsi4sk: Some(queue_sk(
            job.config.priority,
            turn,
            &ts(job.created_at),
            job.id,
        )),
        ..JobRow::new(job)
    };
    to_item(&row, "job item")
}

/// The job item of a job that failed before it could start: its error and,
/// once it has ended, when and (`expires_at`) until when it is kept.
pub fn failed_job_item(job: &Job, expires_at: Option<i64>) -> Result<Item, Corrupt> {
    let row = JobRow {
        error: job.error.clone(),
        completed_at: job.completed_at.map(Stamp),
        expires_at,
        ..JobRow::new(job)
    };
    to_item(&row, "job item")
}

/// A job's settings item (`JOB#<id>`/`JOB#CONFIG`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    /// The settings but the glossary.
    config: Json<JobConfig>,
    /// The glossary as lines of `bo<TAB>en`; absent when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    glossary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The settings item of a new job. A job's glossary is written as lines of
/// `bo<TAB>en` in an attribute of its own (terms hold no control
/// characters): as JSON objects, the largest glossary a job may have
/// (10,000 terms, 256 KiB of text) would pass DynamoDB's 400 KB item limit.
pub fn new_config_item(job: &Job, expires_at: i64) -> Result<Item, Corrupt> {
    let mut config = job.config.clone();
    let glossary = std::mem::take(&mut config.glossary);
    let lines = glossary_to_lines(&glossary)?;
    let row = ConfigRow {
        pk: job_pk(job.id),
        sk: CONFIG_SK.into(),
        config: Json(config),
        glossary: lines,
        expires_at: Some(expires_at),
    };
    to_item(&row, "settings item")
}

/// Terms as lines of `bo<TAB>en` (`None` for none): terms hold no control
/// characters, and as lines the largest glossary (10,000 terms, 256 KiB)
/// stays within DynamoDB's item limit.
pub(super) fn glossary_to_lines(glossary: &[GlossaryEntry]) -> Result<Option<String>, Corrupt> {
    if glossary.is_empty() {
        return Ok(None);
    }
    let mut text =
        String::with_capacity(glossary.iter().map(|t| t.bo.len() + t.en.len() + 2).sum());
    for t in glossary {
        if t.bo.contains(['\t', '\n']) || t.en.contains(['\t', '\n']) {
            return Err(Corrupt(
                "a glossary term holds a tab or a line break".into(),
            ));
        }
        text.push_str(&t.bo);
        text.push('\t');
        text.push_str(&t.en);
        text.push('\n');
    }
    Ok(Some(text))
}

/// The glossary lines of a settings item (see [`new_config_item`]).
pub(super) fn glossary_from_lines(lines: &str) -> Result<Vec<GlossaryEntry>, Corrupt> {
    lines
        .lines()
        .map(|l| {
            l.split_once('\t')
                .map(|(bo, en)| GlossaryEntry {
                    bo: bo.to_owned(),
                    en: en.to_owned(),
                })
                .ok_or_else(|| Corrupt("glossary: a line without a tab".into()))
        })
        .collect()
}

/// A text or its S3 key: a job's texts item (`JOB#<id>`/`JOB#TEXT`) and a
/// chunk's source item (`JOB#<id>`/`CHUNK#<index>#S`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    /// The text, when inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The S3 key of a text over the inline limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The texts item of a new job: `source` is the text, or `None` when it
/// went to S3 under `source_key`.
pub fn new_text_item(
    id: JobId,
    source: Option<&str>,
    source_key: Option<&str>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let row = SourceRow {
        pk: job_pk(id),
        sk: TEXT_SK.into(),
        source: source.map(str::to_owned),
        source_key: source_key.map(str::to_owned),
        expires_at: Some(expires_at),
    };
    to_item(&row, "texts item")
}

/// A job's result item (`JOB#<id>`/`JOB#RESULT`): written by the update
/// that completes the job (or clears its result), read here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultRow {
    result: Option<Json<JobResult>>,
    result_key: Option<String>,
}

/// A job item as read back, with the cloud-only attributes.
#[derive(Debug, Clone)]
pub struct JobItem {
    /// The job (its result is filled in when inline).
    pub job: Job,
    /// S3 key of a large source.
    pub source_key: Option<String>,
    /// S3 key of a large result.
    pub result_key: Option<String>,
    /// Current execution.
    pub execution_arn: Option<String>,
    /// Run number holding a concurrency slot.
    pub slot: Option<u32>,
    /// The S3 key the job was ingested from.
    pub ingest_key: Option<String>,
}

/// Read a job from its items: the job item, its settings item and, when
/// read, its source and result items (large texts stay as S3 keys in the
/// answer).
pub fn job_from_items(
    item: &Item,
    config: Option<&Item>,
    text: Option<&Item>,
    result: Option<&Item>,
) -> Result<JobItem, Corrupt> {
    let row: JobRow = from_item(item, "job item")?;
    let config = match config {
        Some(c) => {
            let row: ConfigRow = from_item(c, "settings item")?;
            let mut parsed = row.config.0;
            if let Some(lines) = row.glossary {
                parsed.glossary = glossary_from_lines(&lines)?;
            }
            parsed
        }
        None => JobConfig {
            priority: row.priority.unwrap_or(0),
            ..JobConfig::default()
        },
    };
    let text: Option<SourceRow> = text.map(|t| from_item(t, "texts item")).transpose()?;
    let (source, source_key) = text.map_or((None, None), |t| (t.source, t.source_key));
    let result: Option<ResultRow> = result.map(|r| from_item(r, "result item")).transpose()?;
    let (result, result_key) = result.map_or((None, None), |r| (r.result, r.result_key));
    Ok(JobItem {
        job: Job {
            id: row.id,
            tenant: row.tenant,
            kind: row.kind,
            status: row.status,
            source: source.unwrap_or_default(),
            config,
            result: result.map(|r| r.0),
            error: row.error,
            chunks_completed: row.chunks_completed,
            chunks_total: row.chunks_total,
            created_at: row.created_at.0,
            started_at: row.started_at.map(|t| t.0),
            completed_at: row.completed_at.map(|t| t.0),
            cancelled_at: row.cancelled_at.map(|t| t.0),
            run: row.run,
            callback: row.callback.map(|c| c.0),
            batch: row.batch.as_deref().map(parse_batch).transpose()?,
            trace: row.trace,
            review: lotsawa_core::review::ReviewCounts {
                reviewed: row.reviewed.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                edits: row.edits.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
            },
        },
        source_key,
        result_key,
        execution_arn: row.execution_arn,
        slot: row.slot,
        ingest_key: row.ingest_key,
    })
}

/// A chunk's ledger item (`JOB#<id>`/`CHUNK#<index>`): status, attempts and
/// (once done) the output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChunkRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    idx: u32,
    #[serde(default)]
    chars: u64,
    status: ChunkStatus,
    /// Provider calls over all runs.
    #[serde(default)]
    attempts: u32,
    /// The run it completed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// The source, in items written before it had an item of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    translation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    translation_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_memory: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    /// Provider calls of the committed attempt and their tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<u64>,
    /// Every revision (JSON), once the chunk was corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revisions: Option<String>,
    /// The current revision's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current_rev: Option<u32>,
    /// Marked reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reviewed: Option<bool>,
    /// Raised by each change of the text or the reviewed flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    /// The examples the engine was given (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    examples: Option<String>,
}

/// The ledger item of a new chunk: status, attempts and (once done) the
/// output. Its source is an item of its own, so a commit rewrites only this.
pub fn new_chunk_item(
    id: JobId,
    index: u32,
    chars: usize,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let row = ChunkRow {
        pk: job_pk(id),
        sk: chunk_sk(index),
        idx: index,
        chars: chars as u64,
        status: ChunkStatus::Pending,
        attempts: 0,
        expires_at: Some(expires_at),
        // Written by the commit that completes it.
        run: None,
        source: None,
        source_key: None,
        translation: None,
        translation_key: None,
        error: None,
        duration_ms: None,
        confidence: None,
        from_memory: None,
        context: None,
        warning: None,
        usage_calls: None,
        prompt_tokens: None,
        completion_tokens: None,
        revisions: None,
        current_rev: None,
        reviewed: None,
        version: None,
        examples: None,
    };
    to_item(&row, "chunk item")
}

/// The source item of a new chunk: the text, or (`source` `None`) the S3
/// key of a source over the inline limit.
pub fn new_chunk_source_item(
    id: JobId,
    index: u32,
    source: Option<&str>,
    source_key: Option<&str>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let row = SourceRow {
        pk: job_pk(id),
        sk: chunk_source_sk(index),
        source: source.map(str::to_owned),
        source_key: source_key.map(str::to_owned),
        expires_at: Some(expires_at),
    };
    to_item(&row, "chunk source item")
}

/// Put a source item's text (or S3 key) on its chunk.
pub fn add_chunk_source(chunk: &mut ChunkItem, item: &Item) -> Result<(), Corrupt> {
    let row: SourceRow = from_item(item, "chunk source item")?;
    chunk.record.source = row.source.unwrap_or_default();
    chunk.source_key = row.source_key;
    Ok(())
}

/// A chunk item as read back.
#[derive(Debug, Clone)]
pub struct ChunkItem {
    /// The ledger record (source empty when it lives in S3).
    pub record: ChunkRecord,
    /// S3 key of a large source.
    pub source_key: Option<String>,
    /// S3 key of a large translation.
    pub translation_key: Option<String>,
    /// Characters in the source.
    pub chars: u64,
}

/// Read a chunk item.
pub fn chunk_from_item(item: &Item) -> Result<ChunkItem, Corrupt> {
    let row: ChunkRow = from_item(item, "chunk item")?;
    Ok(ChunkItem {
        record: ChunkRecord {
            index: row.idx,
            source: row.source.unwrap_or_default(),
            status: row.status,
            provider_calls: row.attempts,
            translation: row.translation,
            error: row.error,
            duration_ms: row.duration_ms,
            run: row.run.unwrap_or(0),
            confidence: row.confidence,
            from_memory: row.from_memory.unwrap_or(false),
            context: row.context,
            warning: row.warning,
            usage: lotsawa_core::usage::Usage {
                calls: row.usage_calls.unwrap_or(0),
                prompt_tokens: row.prompt_tokens.unwrap_or(0),
                completion_tokens: row.completion_tokens.unwrap_or(0),
            },
            review: lotsawa_core::review::ChunkReview {
                revisions: match row.revisions.as_deref() {
                    Some(text) => lotsawa_core::review::decode(text).map_err(Corrupt)?,
                    None => Vec::new(),
                },
                current: row.current_rev.unwrap_or(0),
                reviewed: row.reviewed.unwrap_or(false),
                version: row.version.unwrap_or(0),
            },
            examples: row.examples,
        },
        source_key: row.source_key,
        translation_key: row.translation_key,
        chars: row.chars,
    })
}
