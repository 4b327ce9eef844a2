//! Each item kind: how it is built from the domain types and read back
//! into them.

use chrono::{DateTime, Utc};
use lotsawa_core::batch::Batch;
use lotsawa_core::store::IdempotencyRecord;
use lotsawa_core::{
    ApiKeyRecord, ChunkRecord, ChunkStatus, Job, JobConfig, JobId, JobResult, JobStatus, JobType,
    Tenant,
};

use super::*;

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn req_s<'a>(item: &'a Item, k: &str) -> Result<&'a str, Corrupt> {
    get_s(item, k).ok_or_else(|| Corrupt(format!("missing {k}")))
}

fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn parse_ts(v: Option<&str>) -> Result<Option<DateTime<Utc>>, Corrupt> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| Corrupt(format!("timestamp {s}: {e}")))
    })
    .transpose()
}

fn parse_batch(text: &str) -> Result<lotsawa_core::BatchRef, Corrupt> {
    let corrupt = || Corrupt(format!("batch '{text}'"));
    let (id, index) = text.split_once(':').ok_or_else(corrupt)?;
    Ok(lotsawa_core::BatchRef {
        id: id.parse().map_err(|_| corrupt())?,
        index: index.parse().map_err(|_| corrupt())?,
    })
}

/// The item of a new API key; listed through `gsi2` under `KEYS`.
pub fn new_key_item(record: &ApiKeyRecord, hash: &str) -> Result<Item, Corrupt> {
    let created = ts(record.created_at);
    let mut item = Item::new();
    item.insert("pk".into(), s(key_pk(hash)));
    item.insert("sk".into(), s("KEY"));
    item.insert("id".into(), s(record.id.clone()));
    item.insert("tenant".into(), s(record.tenant.as_str()));
    item.insert("createdAt".into(), s(created.clone()));
    if let Some(t) = record.revoked_at {
        item.insert("revokedAt".into(), s(ts(t)));
    }
    item.insert("gsi2pk".into(), s("KEYS"));
    item.insert("gsi2sk".into(), s(format!("{created}#{}", record.id)));
    Ok(item)
}

/// Read an API key item.
pub fn key_from_item(item: &Item) -> Result<ApiKeyRecord, Corrupt> {
    Ok(ApiKeyRecord {
        id: req_s(item, "id")?.to_owned(),
        tenant: Tenant::parse(req_s(item, "tenant")?).map_err(|e| Corrupt(e.0))?,
        created_at: parse_ts(Some(req_s(item, "createdAt")?))?.unwrap_or_default(),
        revoked_at: parse_ts(get_s(item, "revokedAt"))?,
    })
}

/// The job item of a new pending job (no texts, no settings), in the
/// queue index at `turn`.
pub fn new_job_item(job: &Job, turn: u64) -> Result<Item, Corrupt> {
    let mut item = job_item(job);
    item.insert("gsi4pk".into(), s(queue_pk(shard_of(job.id))));
    item.insert(
        "gsi4sk".into(),
        s(queue_sk(turn, &ts(job.created_at), job.id)),
    );
    Ok(item)
}

/// The job item of a job that failed before it could start: its error and,
/// once it has ended, when and (`expires_at`) until when it is kept.
pub fn failed_job_item(job: &Job, expires_at: Option<i64>) -> Result<Item, Corrupt> {
    let mut item = job_item(job);
    if let Some(e) = &job.error {
        item.insert("error".into(), s(e.clone()));
    }
    if let Some(t) = job.completed_at {
        item.insert("completedAt".into(), s(ts(t)));
    }
    if let Some(at) = expires_at {
        item.insert("expiresAt".into(), n(at));
    }
    Ok(item)
}

/// What every new job item holds.
fn job_item(job: &Job) -> Item {
    let created = ts(job.created_at);
    let shard = shard_of(job.id);
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(job.id)));
    item.insert("sk".into(), s("JOB"));
    item.insert("id".into(), s(job.id.to_string()));
    item.insert("tenant".into(), s(job.tenant.as_str()));
    item.insert("kind".into(), s(job.kind.as_str()));
    item.insert("status".into(), s(job.status.as_str()));
    item.insert("chunksTotal".into(), n(job.chunks_total));
    item.insert("chunksCompleted".into(), n(0));
    item.insert("run".into(), n(0));
    item.insert("createdAt".into(), s(created.clone()));
    item.insert("gsi1pk".into(), s(status_pk(job.status, shard)));
    item.insert("gsi1sk".into(), s(list_sk(&created, job.id)));
    item.insert("gsi2pk".into(), s(all_pk(&job.tenant, shard)));
    item.insert("gsi2sk".into(), s(list_sk(&created, job.id)));
    item.insert("gsi3pk".into(), s(type_pk(&job.tenant, job.kind, shard)));
    item.insert("gsi3sk".into(), s(list_sk(&created, job.id)));
    item.insert(
        "gsi5pk".into(),
        s(tenant_status_pk(&job.tenant, job.status, shard)),
    );
    item.insert("gsi5sk".into(), s(list_sk(&created, job.id)));
    if let Some(b) = &job.batch {
        item.insert("batch".into(), s(batch_text(b)));
    }
    item
}

/// The settings item of a new job. A job's glossary is written as lines of
/// `bo<TAB>en` in an attribute of its own (terms hold no control
/// characters): as JSON objects, the largest glossary a job may have
/// (10,000 terms, 256 KiB of text) would pass DynamoDB's 400 KB item limit.
pub fn new_config_item(job: &Job, expires_at: i64) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(job.id)));
    item.insert("sk".into(), s(CONFIG_SK));
    let mut config = job.config.clone();
    let glossary = std::mem::take(&mut config.glossary);
    item.insert(
        "config".into(),
        s(serde_json::to_string(&config).map_err(|e| Corrupt(e.to_string()))?),
    );
    if !glossary.is_empty() {
        let mut lines =
            String::with_capacity(glossary.iter().map(|t| t.bo.len() + t.en.len() + 2).sum());
        for t in &glossary {
            if t.bo.contains(['\t', '\n']) || t.en.contains(['\t', '\n']) {
                return Err(Corrupt(
                    "a glossary term holds a tab or a line break".into(),
                ));
            }
            lines.push_str(&t.bo);
            lines.push('\t');
            lines.push_str(&t.en);
            lines.push('\n');
        }
        item.insert("glossary".into(), s(lines));
    }
    item.insert("expiresAt".into(), n(expires_at));
    Ok(item)
}

/// The glossary lines of a settings item (see [`new_config_item`]).
fn glossary_from_lines(lines: &str) -> Result<Vec<lotsawa_core::GlossaryEntry>, Corrupt> {
    lines
        .lines()
        .map(|l| {
            l.split_once('\t')
                .map(|(bo, en)| lotsawa_core::GlossaryEntry {
                    bo: bo.to_owned(),
                    en: en.to_owned(),
                })
                .ok_or_else(|| Corrupt("glossary: a line without a tab".into()))
        })
        .collect()
}

/// The texts item of a new job: `source` is the text, or `None` when it
/// went to S3 under `source_key`.
pub fn new_text_item(
    id: JobId,
    source: Option<&str>,
    source_key: Option<&str>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(id)));
    item.insert("sk".into(), s(TEXT_SK));
    if let Some(src) = source {
        item.insert("source".into(), s(src));
    }
    if let Some(key) = source_key {
        item.insert("sourceKey".into(), s(key));
    }
    item.insert("expiresAt".into(), n(expires_at));
    Ok(item)
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
    let id: JobId = req_s(item, "id")?
        .parse()
        .map_err(|e: lotsawa_core::ValidationError| Corrupt(e.0))?;
    let kind: JobType = req_s(item, "kind")?
        .parse()
        .map_err(|e: lotsawa_core::ValidationError| Corrupt(e.0))?;
    let status: JobStatus = req_s(item, "status")?
        .parse()
        .map_err(|e: lotsawa_core::ValidationError| Corrupt(e.0))?;
    let config: JobConfig = match config {
        Some(c) => {
            let mut parsed: JobConfig = serde_json::from_str(req_s(c, "config")?)
                .map_err(|e| Corrupt(format!("config: {e}")))?;
            if let Some(lines) = get_s(c, "glossary") {
                parsed.glossary = glossary_from_lines(lines)?;
            }
            parsed
        }
        None => JobConfig::default(),
    };
    let text_s = |k: &str| text.and_then(|t| get_s(t, k));
    let result_s = |k: &str| result.and_then(|t| get_s(t, k));
    let result: Option<JobResult> = result_s("result")
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| Corrupt(format!("result: {e}")))?;
    let tenant = match get_s(item, "tenant") {
        Some(t) => Tenant::parse(t).map_err(|e| Corrupt(e.0))?,
        None => Tenant::default(),
    };
    Ok(JobItem {
        job: Job {
            id,
            tenant,
            kind,
            status,
            source: text_s("source").unwrap_or("").to_owned(),
            config,
            result,
            error: get_s(item, "error").map(str::to_owned),
            chunks_completed: get_n(item, "chunksCompleted").unwrap_or(0),
            chunks_total: get_n(item, "chunksTotal").unwrap_or(0),
            created_at: parse_ts(Some(req_s(item, "createdAt")?))?.unwrap_or_default(),
            started_at: parse_ts(get_s(item, "startedAt"))?,
            completed_at: parse_ts(get_s(item, "completedAt"))?,
            cancelled_at: parse_ts(get_s(item, "cancelledAt"))?,
            run: get_n(item, "run").unwrap_or(0),
            callback: get_s(item, "callback")
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| Corrupt(format!("callback: {e}")))?,
            batch: get_s(item, "batch").map(parse_batch).transpose()?,
        },
        source_key: text_s("sourceKey").map(str::to_owned),
        result_key: result_s("resultKey").map(str::to_owned),
        execution_arn: get_s(item, "executionArn").map(str::to_owned),
        slot: get_n(item, "slot"),
        ingest_key: get_s(item, "ingestKey").map(str::to_owned),
    })
}

/// The ledger item of a new chunk: status, attempts and (once done) the
/// output. Its source is an item of its own, so a commit rewrites only this.
pub fn new_chunk_item(
    id: JobId,
    index: u32,
    chars: usize,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(id)));
    item.insert("sk".into(), s(chunk_sk(index)));
    item.insert("idx".into(), n(index));
    item.insert("chars".into(), n(chars));
    item.insert("status".into(), s("pending"));
    item.insert("attempts".into(), n(0));
    item.insert("expiresAt".into(), n(expires_at));
    Ok(item)
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
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(id)));
    item.insert("sk".into(), s(chunk_source_sk(index)));
    if let Some(src) = source {
        item.insert("source".into(), s(src));
    }
    if let Some(k) = source_key {
        item.insert("sourceKey".into(), s(k));
    }
    item.insert("expiresAt".into(), n(expires_at));
    Ok(item)
}

/// Put a source item's text (or S3 key) on its chunk.
pub fn add_chunk_source(chunk: &mut ChunkItem, item: &Item) -> Result<(), Corrupt> {
    chunk.record.source = get_s(item, "source").unwrap_or("").to_owned();
    chunk.source_key = get_s(item, "sourceKey").map(str::to_owned);
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
    let status = req_s(item, "status")?;
    Ok(ChunkItem {
        record: ChunkRecord {
            index: get_n(item, "idx").ok_or_else(|| Corrupt("missing idx".into()))?,
            source: get_s(item, "source").unwrap_or("").to_owned(),
            status: ChunkStatus::parse(status)
                .ok_or_else(|| Corrupt(format!("chunk status {status}")))?,
            provider_calls: get_n(item, "attempts").unwrap_or(0),
            translation: get_s(item, "translation").map(str::to_owned),
            error: get_s(item, "error").map(str::to_owned),
            duration_ms: get_n(item, "durationMs"),
            run: get_n(item, "run").unwrap_or(0),
            confidence: get_n(item, "confidence"),
            from_memory: item
                .get("fromMemory")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            context: get_s(item, "context").map(str::to_owned),
            warning: get_s(item, "warning").map(str::to_owned),
        },
        source_key: get_s(item, "sourceKey").map(str::to_owned),
        translation_key: get_s(item, "translationKey").map(str::to_owned),
        chars: get_n(item, "chars").unwrap_or(0),
    })
}

/// The item of a new batch; listed per tenant through `gsi2`.
pub fn batch_item(batch: &Batch) -> Result<Item, Corrupt> {
    let created = ts(batch.created_at);
    let items = serde_json::to_string(&batch.items).map_err(|e| Corrupt(e.to_string()))?;
    let mut item = Item::new();
    item.insert("pk".into(), s(batch_pk(batch.id)));
    item.insert("sk".into(), s("BATCH"));
    item.insert("tenant".into(), s(batch.tenant.as_str()));
    item.insert("createdAt".into(), s(created.clone()));
    item.insert("items".into(), s(items));
    item.insert("gsi2pk".into(), s(batches_pk(&batch.tenant)));
    item.insert("gsi2sk".into(), s(format!("{created}#{}", batch.id)));
    Ok(item)
}

/// Read the item of batch `id`.
pub fn batch_from_item(id: lotsawa_core::BatchId, item: &Item) -> Result<Batch, Corrupt> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| Corrupt(format!("batch {id}: no {name}")))
    };
    Ok(Batch {
        id,
        tenant: Tenant::parse(text("tenant")?).map_err(|e| Corrupt(e.0))?,
        created_at: DateTime::parse_from_rfc3339(text("createdAt")?)
            .map_err(|e| Corrupt(format!("batch {id}: {e}")))?
            .with_timezone(&Utc),
        items: serde_json::from_str(text("items")?)
            .map_err(|e| Corrupt(format!("batch {id} items: {e}")))?,
    })
}

/// The item of an idempotency record; kept two days after it is made.
pub fn idempotency_item(record: &IdempotencyRecord) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(idempotency_pk(&record.tenant, &record.key)));
    item.insert("sk".into(), s("IDEM"));
    item.insert("fingerprint".into(), s(record.fingerprint.clone()));
    item.insert("jobId".into(), s(record.job_id.to_string()));
    item.insert("createdAt".into(), s(ts(record.created_at)));
    item.insert(
        "expiresAt".into(),
        n(record.created_at.timestamp() + 2 * 86_400),
    );
    Ok(item)
}

/// Read the idempotency record stored for the tenant and key of `asked`.
pub fn idempotency_from_item(
    asked: &IdempotencyRecord,
    item: &Item,
) -> Result<IdempotencyRecord, Corrupt> {
    let get = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| Corrupt(format!("idempotency record: no {k}")))
    };
    Ok(IdempotencyRecord {
        tenant: asked.tenant.clone(),
        key: asked.key.clone(),
        fingerprint: get("fingerprint")?,
        job_id: get("jobId")?
            .parse()
            .map_err(|e: lotsawa_core::ValidationError| Corrupt(e.0))?,
        created_at: DateTime::parse_from_rfc3339(&get("createdAt")?)
            .map_err(|e| Corrupt(e.to_string()))?
            .with_timezone(&Utc),
    })
}

/// A tenant's rate bucket as stored: what is unreadable in it reads as
/// absent (the bucket refills).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateBucket {
    /// Tokens left.
    pub tokens: Option<f64>,
    /// When they were counted.
    pub at: Option<DateTime<Utc>>,
    /// Who wrote it last: unique per write, the condition of the next one.
    pub writer: Option<String>,
}

/// The item of a tenant's rate bucket, `tokens` left `at` a time, written
/// by `writer`; kept a day.
pub fn rate_item(
    tenant: &Tenant,
    tokens: f64,
    at: DateTime<Utc>,
    writer: &str,
) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(rate_pk(tenant)));
    item.insert("sk".into(), s("RATE"));
    item.insert("tokens".into(), n(tokens));
    item.insert("at".into(), s(ts(at)));
    item.insert("writer".into(), s(writer));
    item.insert("expiresAt".into(), n(at.timestamp() + 86_400));
    Ok(item)
}

/// Read a rate bucket item.
pub fn rate_from_item(item: &Item) -> RateBucket {
    RateBucket {
        tokens: get_n(item, "tokens"),
        at: get_s(item, "at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        writer: get_s(item, "writer").map(str::to_owned),
    }
}

/// The item of a translation memory entry, kept until `expires_at`.
pub fn memory_item(
    key: &str,
    translation: &str,
    confidence: Option<f64>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(memory_pk(key)));
    item.insert("sk".into(), s("MEM"));
    item.insert("translation".into(), s(translation));
    item.insert("expiresAt".into(), n(expires_at));
    if let Some(c) = confidence {
        item.insert("confidence".into(), n(c));
    }
    Ok(item)
}

/// Read a translation memory entry: its translation and confidence; `None`
/// (a miss) when it has no translation: the memory is a cache.
pub fn memory_from_item(item: &Item) -> Option<(String, Option<f64>)> {
    Some((
        get_s(item, "translation")?.to_owned(),
        get_n(item, "confidence"),
    ))
}

/// The marker listing job `id` under [`CALLBACKS_PK`] in `gsi2` while its
/// callback is pending, by when it is `due`; gone at `expires_at`.
pub fn callback_marker_item(
    id: JobId,
    due: DateTime<Utc>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(id)));
    item.insert("sk".into(), s(CALLBACK_SK));
    item.insert("gsi2pk".into(), s(CALLBACKS_PK));
    item.insert("gsi2sk".into(), s(format!("{}#{id}", ts(due))));
    item.insert("expiresAt".into(), n(expires_at));
    Ok(item)
}
