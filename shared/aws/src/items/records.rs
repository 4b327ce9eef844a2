//! The store's other items: batches, idempotency records, rate buckets,
//! translation memory entries and callback markers, mapped as in
//! [`super::kinds`].

use chrono::{DateTime, Utc};
use lotsawa_core::batch::{Batch, BatchItem};
use lotsawa_core::store::IdempotencyRecord;
use lotsawa_core::{JobId, Tenant};
use serde::{Deserialize, Serialize};

use super::kinds::{Json, Stamp, from_item, to_item};
use super::*;

/// A batch item (`BATCH#<id>`/`BATCH`), listed per tenant through `gsi2`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    tenant: Tenant,
    created_at: Stamp,
    items: Json<Vec<BatchItem>>,
    #[serde(default)]
    gsi2pk: String,
    #[serde(default)]
    gsi2sk: String,
}

/// The item of a new batch; listed per tenant through `gsi2`.
pub fn batch_item(batch: &Batch) -> Result<Item, Corrupt> {
    let row = BatchRow {
        pk: batch_pk(batch.id),
        sk: "BATCH".into(),
        tenant: batch.tenant.clone(),
        created_at: Stamp(batch.created_at),
        items: Json(batch.items.clone()),
        gsi2pk: batches_pk(&batch.tenant),
        gsi2sk: format!("{}#{}", ts(batch.created_at), batch.id),
    };
    to_item(&row, &format!("batch {}", batch.id))
}

/// Read the item of batch `id`.
pub fn batch_from_item(id: lotsawa_core::BatchId, item: &Item) -> Result<Batch, Corrupt> {
    let row: BatchRow = from_item(item, &format!("batch {id}"))?;
    Ok(Batch {
        id,
        tenant: row.tenant,
        created_at: row.created_at.0,
        items: row.items.0,
    })
}

/// An idempotency record's item (`IDEM#<tenant>#<key hash>`/`IDEM`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdempotencyRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    fingerprint: String,
    job_id: JobId,
    created_at: Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The item of an idempotency record; kept two days after it is made.
pub fn idempotency_item(record: &IdempotencyRecord) -> Result<Item, Corrupt> {
    let row = IdempotencyRow {
        pk: idempotency_pk(&record.tenant, &record.key),
        sk: "IDEM".into(),
        fingerprint: record.fingerprint.clone(),
        job_id: record.job_id,
        created_at: Stamp(record.created_at),
        expires_at: Some(record.created_at.timestamp() + 2 * 86_400),
    };
    to_item(&row, "idempotency record")
}

/// Read the idempotency record stored for the tenant and key of `asked`.
pub fn idempotency_from_item(
    asked: &IdempotencyRecord,
    item: &Item,
) -> Result<IdempotencyRecord, Corrupt> {
    let row: IdempotencyRow = from_item(item, "idempotency record")?;
    Ok(IdempotencyRecord {
        tenant: asked.tenant.clone(),
        key: asked.key.clone(),
        fingerprint: row.fingerprint,
        job_id: row.job_id,
        created_at: row.created_at.0,
    })
}

/// A tenant's rate bucket item (`RATE#<tenant>`/`RATE`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<f64>,
    /// When the tokens were counted, as [`ts`] writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
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
    let row = RateRow {
        pk: rate_pk(tenant),
        sk: "RATE".into(),
        tokens: Some(tokens),
        at: Some(ts(at)),
        writer: Some(writer.to_owned()),
        expires_at: Some(at.timestamp() + 86_400),
    };
    to_item(&row, "rate bucket")
}

/// Read a rate bucket item.
pub fn rate_from_item(item: &Item) -> RateBucket {
    let row: RateRow = from_item(item, "rate bucket").unwrap_or_default();
    RateBucket {
        tokens: row.tokens,
        at: row
            .at
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
        writer: row.writer,
    }
}

/// A translation memory entry's item (`MEM#<key>`/`MEM`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemoryRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    translation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The item of a translation memory entry, kept until `expires_at`.
pub fn memory_item(
    key: &str,
    translation: &str,
    confidence: Option<f64>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let row = MemoryRow {
        pk: memory_pk(key),
        sk: "MEM".into(),
        translation: translation.to_owned(),
        confidence,
        expires_at: Some(expires_at),
    };
    to_item(&row, "memory entry")
}

/// Read a translation memory entry: its translation and confidence; `None`
/// (a miss) when it cannot be read: the memory is a cache.
pub fn memory_from_item(item: &Item) -> Option<(String, Option<f64>)> {
    let row: MemoryRow = from_item(item, "memory entry").ok()?;
    Some((row.translation, row.confidence))
}

/// A job's pending-callback marker (`JOB#<id>`/`CALLBACK`), listed under
/// [`CALLBACKS_PK`] in `gsi2` by when the callback is due.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallbackMarkerRow {
    pk: String,
    sk: String,
    gsi2pk: String,
    gsi2sk: String,
    expires_at: i64,
}

/// The marker listing job `id` under [`CALLBACKS_PK`] in `gsi2` while its
/// callback is pending, by when it is `due`; gone at `expires_at`.
pub fn callback_marker_item(
    id: JobId,
    due: DateTime<Utc>,
    expires_at: i64,
) -> Result<Item, Corrupt> {
    let row = CallbackMarkerRow {
        pk: job_pk(id),
        sk: CALLBACK_SK.into(),
        gsi2pk: CALLBACKS_PK.into(),
        gsi2sk: format!("{}#{id}", ts(due)),
        expires_at,
    };
    to_item(&row, "callback marker")
}
