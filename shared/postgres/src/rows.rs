//! How jobs, chunks, batches and keys are stored as rows, and read back.

use chrono::{DateTime, Utc};
use lotsawa_core::{
    ApiKeyRecord, ChunkRecord, ChunkStatus, Job, JobConfig, JobResult, StoreError, Tenant,
};
use tokio_postgres::Row;

pub(crate) const JOB_COLUMNS: &str = "seq, id, kind, status, source, config, result, error, \
    chunks_total, chunks_completed, created_at, started_at, completed_at, cancelled_at, run, \
    tenant, callback, batch, trace, reviewed, edits";
pub(crate) const LIST_COLUMNS: &str = "seq, id, kind, status, '' AS source, config, \
    NULL::TEXT AS result, error, chunks_total, chunks_completed, created_at, started_at, \
    completed_at, cancelled_at, run, tenant, callback, batch, NULL::TEXT AS trace, reviewed, edits";
pub(crate) const CHUNK_COLUMNS: &str = "idx, source, status, attempts, translation, error, \
    duration_ms, run, confidence, from_memory, context, warning, usage_calls, prompt_tokens, \
    completion_tokens, revisions, current_rev, reviewed, version, examples";

/// Times are kept to the millisecond, as every store keeps them.
pub(crate) fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn count(row: &Row, i: usize) -> u32 {
    row.get::<_, i32>(i).max(0) as u32
}

/// A job row: its sequence number and the job.
pub(crate) fn job_from_row(row: &Row) -> Result<(i64, Job), StoreError> {
    let text = |i: usize| row.get::<_, String>(i);
    let parse = |e: lotsawa_core::ValidationError| corrupt(e.0);
    let job = Job {
        id: text(1).parse().map_err(parse)?,
        kind: text(2).parse().map_err(parse)?,
        status: text(3).parse().map_err(parse)?,
        source: text(4),
        config: serde_json::from_str::<JobConfig>(&text(5))
            .map_err(|e| corrupt(format!("config: {e}")))?,
        result: row
            .get::<_, Option<String>>(6)
            .map(|r| serde_json::from_str::<JobResult>(&r))
            .transpose()
            .map_err(|e| corrupt(format!("result: {e}")))?,
        error: row.get(7),
        chunks_total: count(row, 8),
        chunks_completed: count(row, 9),
        created_at: row.get(10),
        started_at: row.get(11),
        completed_at: row.get(12),
        cancelled_at: row.get(13),
        run: count(row, 14),
        tenant: Tenant::parse(&text(15)).map_err(|e| corrupt(e.0))?,
        callback: row
            .get::<_, Option<String>>(16)
            .map(|c| serde_json::from_str::<lotsawa_core::Callback>(&c))
            .transpose()
            .map_err(|e| corrupt(format!("callback: {e}")))?,
        batch: row
            .get::<_, Option<String>>(17)
            .as_deref()
            .map(parse_batch)
            .transpose()?,
        trace: row.get(18),
        review: lotsawa_core::review::ReviewCounts {
            reviewed: count(row, 19),
            edits: count(row, 20),
        },
    };
    Ok((row.get(0), job))
}

/// A job's batch as stored: `<batch id>:<item index>`.
pub(crate) fn batch_text(r: &lotsawa_core::BatchRef) -> String {
    format!("{}:{}", r.id, r.index)
}

fn parse_batch(text: &str) -> Result<lotsawa_core::BatchRef, StoreError> {
    let bad = || corrupt(format!("batch '{text}'"));
    let (id, index) = text.split_once(':').ok_or_else(bad)?;
    Ok(lotsawa_core::BatchRef {
        id: id.parse().map_err(|_| bad())?,
        index: index.parse().map_err(|_| bad())?,
    })
}

/// A chunk row (columns [`CHUNK_COLUMNS`]).
pub(crate) fn chunk_from_row(r: &Row) -> Result<ChunkRecord, StoreError> {
    let status: String = r.get(2);
    let revisions = match r.get::<_, Option<String>>(15) {
        Some(text) => lotsawa_core::review::decode(&text).map_err(corrupt)?,
        None => Vec::new(),
    };
    let big = |i: usize| r.get::<_, i64>(i).max(0) as u64;
    Ok(ChunkRecord {
        index: count(r, 0),
        source: r.get(1),
        status: ChunkStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("chunk status '{status}'")))?,
        provider_calls: count(r, 3),
        translation: r.get(4),
        error: r.get(5),
        duration_ms: r.get::<_, Option<i64>>(6).map(|d| d.max(0) as u64),
        run: count(r, 7),
        confidence: r.get(8),
        from_memory: r.get(9),
        context: r.get(10),
        warning: r.get(11),
        usage: lotsawa_core::usage::Usage {
            calls: big(12),
            prompt_tokens: big(13),
            completion_tokens: big(14),
        },
        review: lotsawa_core::review::ChunkReview {
            revisions,
            current: count(r, 16),
            reviewed: r.get(17),
            version: count(r, 18),
        },
        examples: r.get(19),
    })
}

/// A batch row: seq, id, tenant, created_at, items.
pub(crate) fn batch_from_row(r: &Row) -> Result<(i64, lotsawa_core::batch::Batch), StoreError> {
    let parse = |e: lotsawa_core::ValidationError| corrupt(e.0);
    Ok((
        r.get(0),
        lotsawa_core::batch::Batch {
            id: r.get::<_, String>(1).parse().map_err(parse)?,
            tenant: Tenant::parse(&r.get::<_, String>(2)).map_err(|e| corrupt(e.0))?,
            created_at: r.get(3),
            items: serde_json::from_str(&r.get::<_, String>(4))
                .map_err(|e| corrupt(format!("batch items: {e}")))?,
        },
    ))
}

/// A key row: id, tenant, created_at, revoked_at.
pub(crate) fn key_from_row(r: &Row) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.get(0),
        tenant: Tenant::parse(&r.get::<_, String>(1)).map_err(|e| corrupt(e.0))?,
        created_at: r.get(2),
        revoked_at: r.get(3),
    })
}

/// JSON text of a stored value.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))
}
