//! DynamoDB item mapping: how jobs and chunks are stored. The domain types
//! know nothing of it.
//!
//! One table: `pk`/`sk`. A job is three items under `JOB#<id>`: `JOB` (small:
//! status, counters, timestamps, error, slot and execution, the listing
//! keys), `JOB#CONFIG` (its settings, read with `JOB` by every chunk step)
//! and `JOB#TEXT` (its source and result, or their S3 keys, read only by a
//! whole-job read). A chunk commit thus rewrites a few hundred bytes, not
//! the source. Its chunks are `JOB#<id>`/`CHUNK#<index, 6 digits>` (the
//! ledger: status, attempts, output) each followed by `CHUNK#<index>#S` (its
//! source), so a chunk commit rewrites only the ledger item; the
//! concurrency semaphore is `SEMAPHORE`/`SEMAPHORE`; memory entries are
//! `MEM#<key>`/`MEM`; jobs per status are counted in `COUNTS#<shard>`/`COUNTS`,
//! a tenant's waiting jobs in `TENANT#<tenant>`/`COUNTS` (`pending`).
//!
//! Three GSIs list jobs newest first, projecting keys only (a list reads
//! the small job items of one page): `gsi1` by status, `gsi2` all jobs,
//! `gsi3` by type, sort key `createdAt#id`. `gsi4` is the queue: only
//! pending jobs have its keys (`QUEUE#<shard>`, `<turn, 10 digits>#createdAt#id`),
//! so it orders them by turn, then arrival ([`lotsawa_core::batch`]). A
//! batch is `BATCH#<id>`/`BATCH` (its items as JSON), listed per tenant
//! through `gsi2` (`BATCHES#<tenant>`, `createdAt#id`). Each index key is spread over
//! [`LIST_SHARDS`] partitions by the job id (`STATUS#processing#2`), so no
//! one index partition takes every job's writes; a list merges the shards.
//! `expiresAt` is the TTL attribute.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use lotsawa_core::{
    ApiKeyRecord, ChunkRecord, ChunkStatus, Job, JobConfig, JobId, JobResult, JobStatus, JobType,
    Tenant,
};

/// An item.
pub type Item = HashMap<String, AttributeValue>;

/// Partition key of a job.
pub fn job_pk(id: JobId) -> String {
    format!("JOB#{id}")
}

/// Sort key of a chunk.
pub fn chunk_sk(index: u32) -> String {
    format!("CHUNK#{index:06}")
}

/// RFC 3339 with milliseconds.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Why an item could not be read.
#[derive(Debug, thiserror::Error)]
#[error("corrupt item: {0}")]
pub struct Corrupt(pub String);

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

/// Sort key of the listing indexes: newest first when read backwards.
pub fn list_sk(created_at: &str, id: JobId) -> String {
    format!("{created_at}#{id}")
}

/// Partitions of each listing index key and of the status counters.
pub const LIST_SHARDS: u32 = 4;

/// Sort key of a job's settings item.
pub const CONFIG_SK: &str = "JOB#CONFIG";

/// Sort key of a job's result item.
pub const RESULT_SK: &str = "JOB#RESULT";

/// Sort key of a job's source item (the last of a job's own items).
pub const TEXT_SK: &str = "JOB#TEXT";

/// The shard of a job: fixed by its id.
pub fn shard_of(id: JobId) -> u32 {
    let s = id.to_string();
    let last = s.as_bytes()[s.len() - 1];
    (last as char).to_digit(16).unwrap_or(0) % LIST_SHARDS
}

/// Partition key of the status index for `status` in `shard`.
pub fn status_pk(status: JobStatus, shard: u32) -> String {
    format!("STATUS#{}#{shard}", status.as_str())
}

/// Partition key of the queue index in `shard`.
pub fn queue_pk(shard: u32) -> String {
    format!("QUEUE#{shard}")
}

/// Sort key of the queue index: turn, then arrival.
pub fn queue_sk(turn: u64, created_at: &str, id: JobId) -> String {
    format!("{turn:010}#{created_at}#{id}")
}

/// The turn in a queue index sort key.
pub fn turn_of(queue_sk: &str) -> Option<u64> {
    queue_sk.split('#').next()?.parse().ok()
}

/// Partition key of a batch.
pub fn batch_pk(id: lotsawa_core::BatchId) -> String {
    format!("BATCH#{id}")
}

/// Partition key of a tenant's batches in `gsi2`.
pub fn batches_pk(tenant: &Tenant) -> String {
    format!("BATCHES#{tenant}")
}

/// A job's batch as stored: `<batch id>:<item index>`.
pub fn batch_text(r: &lotsawa_core::BatchRef) -> String {
    format!("{}:{}", r.id, r.index)
}

fn parse_batch(text: &str) -> Result<lotsawa_core::BatchRef, Corrupt> {
    let corrupt = || Corrupt(format!("batch '{text}'"));
    let (id, index) = text.split_once(':').ok_or_else(corrupt)?;
    Ok(lotsawa_core::BatchRef {
        id: id.parse().map_err(|_| corrupt())?,
        index: index.parse().map_err(|_| corrupt())?,
    })
}

/// Partition key of a tenant's all-jobs index in `shard`.
pub fn all_pk(tenant: &Tenant, shard: u32) -> String {
    format!("ALL#{tenant}#{shard}")
}

/// Partition key of a tenant's status index (`gsi5`) for `status` in
/// `shard`: a tenant's status list reads its own jobs only.
pub fn tenant_status_pk(tenant: &Tenant, status: JobStatus, shard: u32) -> String {
    format!("TSTATUS#{tenant}#{}#{shard}", status.as_str())
}

/// Partition key of a tenant's type index for `kind` in `shard`.
pub fn type_pk(tenant: &Tenant, kind: JobType, shard: u32) -> String {
    format!("TYPE#{tenant}#{}#{shard}", kind.as_str())
}

/// Partition key of an API key item (by the key's hash).
pub fn key_pk(hash: &str) -> String {
    format!("KEY#{hash}")
}

/// The item of a new API key; listed through `gsi2` under `KEYS`.
pub fn new_key_item(record: &ApiKeyRecord, hash: &str) -> Item {
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
    item
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

/// Partition key of the status counters of `shard`.
pub fn counts_pk(shard: u32) -> String {
    format!("COUNTS#{shard}")
}

/// Partition key of a tenant's counters (`pending`: jobs waiting to start).
pub fn tenant_counts_pk(tenant: &Tenant) -> String {
    format!("TENANT#{tenant}")
}

/// The job item of a new job (no texts, no settings).
pub fn new_job_item(job: &Job) -> Item {
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
) -> Item {
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
    item
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

/// Sort key of a chunk's source item: right after its ledger item, so one
/// key range reads both.
pub fn chunk_source_sk(index: u32) -> String {
    format!("CHUNK#{index:06}#S")
}

/// The ledger item of a new chunk: status, attempts and (once done) the
/// output. Its source is an item of its own, so a commit rewrites only this.
pub fn new_chunk_item(id: JobId, index: u32, chars: usize, expires_at: i64) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), s(job_pk(id)));
    item.insert("sk".into(), s(chunk_sk(index)));
    item.insert("idx".into(), n(index));
    item.insert("chars".into(), n(chars));
    item.insert("status".into(), s("pending"));
    item.insert("attempts".into(), n(0));
    item.insert("expiresAt".into(), n(expires_at));
    item
}

/// The source item of a new chunk: the text, or (`source` `None`) the S3
/// key of a source over the inline limit.
pub fn new_chunk_source_item(
    id: JobId,
    index: u32,
    source: Option<&str>,
    source_key: Option<&str>,
    expires_at: i64,
) -> Item {
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
    item
}

/// Whether an item is a chunk's source item.
pub fn is_chunk_source(item: &Item) -> bool {
    get_s(item, "sk").is_some_and(|k| k.starts_with("CHUNK#") && k.ends_with("#S"))
}

/// Put a source item's text (or S3 key) on its chunk.
pub fn add_chunk_source(chunk: &mut ChunkItem, item: &Item) {
    chunk.record.source = get_s(item, "source").unwrap_or("").to_owned();
    chunk.source_key = get_s(item, "sourceKey").map(str::to_owned);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending one-chunk job with `config`.
    fn pending_job(config: JobConfig) -> Job {
        Job {
            id: JobId::new(),
            tenant: Tenant::default(),
            kind: JobType::Translation,
            status: JobStatus::Pending,
            source: "ཀ།".into(),
            config,
            result: None,
            error: None,
            chunks_completed: 0,
            chunks_total: 1,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            cancelled_at: None,
            run: 0,
            callback: None,
            batch: None,
        }
    }

    /// Bytes DynamoDB counts for an item: attribute names and values.
    fn item_size(item: &Item) -> usize {
        item.iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        AttributeValue::S(x) | AttributeValue::N(x) => x.len(),
                        other => format!("{other:?}").len(),
                    }
            })
            .sum()
    }

    /// The largest glossary a job may have (the router's limits: 10,000
    /// terms, 256 KiB of terms) fits the 400 KB item limit, and reads back
    /// term for term, quotes and backslashes included.
    #[test]
    fn the_largest_allowed_glossary_fits_one_settings_item() {
        use lotsawa_core::glossary::{MAX_JOB_GLOSSARY_BYTES, MAX_JOB_TERMS};
        let per_term = MAX_JOB_GLOSSARY_BYTES / MAX_JOB_TERMS;
        let bo = "ཀ".repeat(3);
        let en = "\"\\".repeat((per_term - bo.len()) / 2);
        let config = JobConfig {
            glossary: (0..MAX_JOB_TERMS)
                .map(|i| lotsawa_core::GlossaryEntry {
                    bo: bo.clone(),
                    en: format!("{en}{}", i % 10),
                })
                .collect(),
            ..JobConfig::default()
        };
        let bytes: usize = config
            .glossary
            .iter()
            .map(|t| t.bo.len() + t.en.len())
            .sum();
        assert!(bytes <= MAX_JOB_GLOSSARY_BYTES && bytes > MAX_JOB_GLOSSARY_BYTES * 9 / 10);
        let job = pending_job(config);
        let item = new_config_item(&job, 1).expect("config");
        let size = item_size(&item);
        assert!(size < 400 * 1024, "settings item of {size} bytes");
        let back = job_from_items(&new_job_item(&job), Some(&item), None, None).expect("job");
        assert_eq!(back.job.config, job.config);
    }

    /// An item as the table holds it: `name TYPE value` lines, sorted.
    fn shape(item: &Item) -> Vec<String> {
        let mut lines: Vec<String> = item
            .iter()
            .map(|(k, v)| match v {
                AttributeValue::S(x) => format!("{k} S {x}"),
                AttributeValue::N(x) => format!("{k} N {x}"),
                AttributeValue::Bool(x) => format!("{k} BOOL {x}"),
                other => format!("{k} ? {other:?}"),
            })
            .collect();
        lines.sort();
        lines
    }

    /// That `item` holds exactly `expected` (`name TYPE value`, any order).
    fn assert_shape(item: &Item, expected: &[&str]) {
        let mut want: Vec<String> = expected.iter().map(|l| (*l).to_owned()).collect();
        want.sort();
        assert_eq!(shape(item), want);
    }

    /// The stored format of every item kind, attribute by attribute (name,
    /// DynamoDB type, value): what earlier builds wrote and later builds
    /// must read. Each item also reads back to what it was built from.
    #[test]
    fn items_keep_their_stored_format() {
        const ID: &str = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a47"; // shard 7 % 4 = 3
        const BATCH: &str = "0d6c1f3e-7a2b-4c5d-9e8f-1a2b3c4d5e6f";
        const T0: &str = "2024-05-06T07:08:09.120Z";
        const T1: &str = "2024-05-07T00:00:00.000Z";
        let created: DateTime<Utc> = T0.parse().expect("time");
        let later: DateTime<Utc> = T1.parse().expect("time");
        let id: JobId = ID.parse().expect("id");
        let tenant = Tenant::parse("acme").expect("tenant");
        let mut job = pending_job(JobConfig {
            model: Some("m".into()),
            glossary: [("ཀ", "ka"), ("ཁ", "kha \"quoted\"")]
                .map(|(bo, en)| lotsawa_core::GlossaryEntry {
                    bo: bo.into(),
                    en: en.into(),
                })
                .to_vec(),
            ..JobConfig::default()
        });
        job.id = id;
        job.tenant = tenant.clone();
        job.chunks_total = 3;
        job.created_at = created;
        job.batch = Some(lotsawa_core::BatchRef {
            id: BATCH.parse().expect("batch id"),
            index: 2,
        });

        // The job item: chunksCompleted and run start at 0.
        let item = new_job_item(&job);
        assert_shape(
            &item,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB",
                &format!("id S {ID}"),
                "tenant S acme",
                "kind S translation",
                "status S pending",
                "chunksTotal N 3",
                "chunksCompleted N 0",
                "run N 0",
                &format!("createdAt S {T0}"),
                "gsi1pk S STATUS#pending#3",
                &format!("gsi1sk S {T0}#{ID}"),
                "gsi2pk S ALL#acme#3",
                &format!("gsi2sk S {T0}#{ID}"),
                "gsi3pk S TYPE#acme#translation#3",
                &format!("gsi3sk S {T0}#{ID}"),
                "gsi5pk S TSTATUS#acme#pending#3",
                &format!("gsi5sk S {T0}#{ID}"),
                &format!("batch S {BATCH}:2"),
            ],
        );

        // The settings item: the job's settings as JSON, its glossary as
        // lines of `bo<TAB>en`.
        let config = new_config_item(&job, 1_700_000_000).expect("config");
        let settings = serde_json::to_string(&JobConfig {
            glossary: Vec::new(),
            ..job.config.clone()
        })
        .expect("json");
        assert_shape(
            &config,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB#CONFIG",
                &format!("config S {settings}"),
                "glossary S ཀ\tka\nཁ\tkha \"quoted\"\n",
                "expiresAt N 1700000000",
            ],
        );
        let bare = pending_job(JobConfig::default());
        let bare_config = new_config_item(&bare, 5).expect("config");
        assert!(!bare_config.contains_key("glossary"));

        // The texts item: the source inline, or its S3 key.
        let text = new_text_item(id, Some("ཀ།"), None, 1_700_000_000);
        assert_shape(
            &text,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB#TEXT",
                "source S ཀ།",
                "expiresAt N 1700000000",
            ],
        );
        assert_shape(
            &new_text_item(id, None, Some("sources/x.txt"), 9),
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB#TEXT",
                "sourceKey S sources/x.txt",
                "expiresAt N 9",
            ],
        );
        let back = job_from_items(&item, Some(&config), Some(&text), None).expect("job");
        assert_eq!(back.job, job);

        // A chunk's ledger item and its source item.
        let chunk = new_chunk_item(id, 7, 2, 99);
        assert_shape(
            &chunk,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CHUNK#000007",
                "idx N 7",
                "chars N 2",
                "status S pending",
                "attempts N 0",
                "expiresAt N 99",
            ],
        );
        let source = new_chunk_source_item(id, 7, Some("ཀ།"), None, 99);
        assert_shape(
            &source,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CHUNK#000007#S",
                "source S ཀ།",
                "expiresAt N 99",
            ],
        );
        assert_shape(
            &new_chunk_source_item(id, 7, None, Some("chunks/k"), 99),
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CHUNK#000007#S",
                "sourceKey S chunks/k",
                "expiresAt N 99",
            ],
        );
        let mut back = chunk_from_item(&chunk).expect("chunk");
        add_chunk_source(&mut back, &source);
        assert_eq!(
            (back.record.index, back.chars, back.record.source.as_str()),
            (7, 2, "ཀ།")
        );

        // An API key item, listed under `KEYS` in `gsi2`.
        let mut key = ApiKeyRecord {
            id: "key-1".into(),
            tenant: tenant.clone(),
            created_at: created,
            revoked_at: Some(later),
        };
        let key_item = new_key_item(&key, "abc123");
        assert_shape(
            &key_item,
            &[
                "pk S KEY#abc123",
                "sk S KEY",
                "id S key-1",
                "tenant S acme",
                &format!("createdAt S {T0}"),
                &format!("revokedAt S {T1}"),
                "gsi2pk S KEYS",
                &format!("gsi2sk S {T0}#key-1"),
            ],
        );
        assert_eq!(key_from_item(&key_item).expect("key"), key);
        key.revoked_at = None;
        let key_item = new_key_item(&key, "abc123");
        assert!(!key_item.contains_key("revokedAt"));
        assert_eq!(key_from_item(&key_item).expect("key"), key);
    }

    #[test]
    fn jobs_round_trip_through_items() {
        let job = pending_job(JobConfig::default());
        let item = new_job_item(&job);
        let config = new_config_item(&job, 1).expect("config");
        let text = new_text_item(job.id, Some("ཀ།"), None, 1);
        let back = job_from_items(&item, Some(&config), Some(&text), None).expect("job");
        assert_eq!(back.job.id, job.id);
        assert_eq!(back.job.source, "ཀ།");
        assert_eq!(back.job.config, job.config);
        assert_eq!(back.job.status, JobStatus::Pending);
        let shard = shard_of(job.id);
        assert!(shard < LIST_SHARDS);
        assert_eq!(
            get_s(&item, "gsi1pk").map(str::to_owned),
            Some(format!("STATUS#pending#{shard}"))
        );
        assert!(!item.contains_key("source") && !item.contains_key("config"));
        let brief = job_from_items(&item, Some(&config), None, None).expect("brief");
        assert_eq!(brief.job.source, "");
        let c = new_chunk_item(job.id, 7, 2, 1);
        assert_eq!(get_s(&c, "sk"), Some("CHUNK#000007"));
        let src = new_chunk_source_item(job.id, 7, Some("ཀ།"), None, 1);
        assert!(is_chunk_source(&src) && !is_chunk_source(&c));
        // The source item sorts between its chunk and the next one.
        assert!(chunk_sk(7) < chunk_source_sk(7) && chunk_source_sk(7) < chunk_sk(8));
        let mut back = chunk_from_item(&c).expect("chunk");
        add_chunk_source(&mut back, &src);
        assert_eq!(back.record.source, "ཀ།");
        assert_eq!(back.record.index, 7);
        assert_eq!(back.record.status, ChunkStatus::Pending);
    }
}
