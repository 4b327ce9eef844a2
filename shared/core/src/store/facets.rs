//! The store's other facets, each a trait of its own so that a new store
//! can be built and tested one facet at a time: admission (idempotency,
//! rate tokens, counts), API keys, batches, callbacks and translation
//! memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::auth::{ApiKeyRecord, Tenant};
use crate::batch::Batch;
use crate::job::{BatchId, Callback, Job, JobId, JobStatus};
use crate::rate::RateLimit;

/// A remembered submission under an `Idempotency-Key`: the job it made and
/// the request's fingerprint ([`crate::job::NewJob::fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Whose key.
    pub tenant: Tenant,
    /// The client's key.
    pub key: String,
    /// The request it was first used with.
    pub fingerprint: String,
    /// The job that request made.
    pub job_id: JobId,
    /// When it was first used.
    pub created_at: DateTime<Utc>,
}

/// What admission reads and writes before a job is created or started:
/// idempotency records, per-tenant rate tokens, and counts of jobs.
#[async_trait]
pub trait AdmissionStore: Send + Sync {
    /// Remember `record` unless its tenant's key is held by a record made at
    /// or after `expired_before` (first writer wins; an older one is
    /// replaced); the record held afterwards.
    async fn idempotency_put(
        &self,
        record: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> Result<IdempotencyRecord, StoreError>;

    /// Take a job-creation token from `tenant`'s bucket
    /// ([`crate::rate::take`]); `Some(wait)` when it is empty. Atomic per
    /// tenant: concurrent takes never spend one token twice.
    async fn take_token(
        &self,
        tenant: &Tenant,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError>;

    /// Jobs in each status.
    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, StoreError>;

    /// `tenant`'s jobs waiting to start (exact once writes settle).
    async fn pending_count(&self, tenant: &Tenant) -> Result<u64, StoreError>;

    /// Concurrency slots held now.
    async fn slots_in_use(&self) -> Result<u32, StoreError>;
}

/// API keys, stored by the hash of the key.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Store a new API key by the hash of the key.
    async fn key_put(&self, record: &ApiKeyRecord, hash: &str) -> Result<(), StoreError>;

    /// The key with this hash, revoked or not.
    async fn key_find(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, oldest first.
    async fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revoke the key named `id`; false when there is no such key.
    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// Batches of jobs.
#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Store a batch (its jobs are stored first, each with its
    /// [`crate::job::BatchRef`]); `ConditionFailed` if the id is taken.
    async fn batch_put(&self, batch: &Batch) -> Result<(), StoreError>;

    /// A batch; `BatchNotFound` when there is none.
    async fn batch_get(&self, id: BatchId) -> Result<Batch, StoreError>;

    /// `tenant`'s batches, newest first, at most `limit`, after the store
    /// position `after`; the position of the last when there are more.
    async fn batch_list(
        &self,
        tenant: &Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<Batch>, Option<String>), StoreError>;
}

/// Webhook callback state of jobs.
#[async_trait]
pub trait CallbackStore: Send + Sync {
    /// Jobs whose callback delivery is pending and due at `now`, the
    /// earliest due first.
    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError>;

    /// Replace the job's callback state `before` (as read) by `after`; false
    /// when it changed meanwhile (another deliverer, or a newer event).
    async fn callback_update(
        &self,
        id: JobId,
        before: &Callback,
        after: &Callback,
    ) -> Result<bool, StoreError>;
}

/// Translation memory: one translation per key.
#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// A translation memory entry.
    async fn memory_get(&self, key: &str) -> Result<Option<(String, Option<f64>)>, StoreError>;

    /// Remember a translation; the first one stored for a key stays.
    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> Result<(), StoreError>;
}

/// One tenant's provider usage on one day, for one engine and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The day (UTC).
    pub day: chrono::NaiveDate,
    /// The engine.
    pub engine: String,
    /// The model ("" when none).
    pub model: String,
    /// Calls and tokens.
    pub usage: crate::usage::Usage,
}

/// Provider usage per tenant and day (written by each committed chunk
/// with its usage) and each tenant's monthly token budget.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// `tenant`'s usage rows from `from` to `to` (days, both included).
    async fn usage(
        &self,
        tenant: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<UsageRow>, StoreError>;
    /// `tenant`'s monthly token budget, when it has one.
    async fn budget(&self, tenant: &Tenant) -> Result<Option<u64>, StoreError>;
    /// Set (`Some`) or lift (`None`) `tenant`'s monthly token budget.
    async fn set_budget(&self, tenant: &Tenant, tokens: Option<u64>) -> Result<(), StoreError>;
    /// Add provider usage that no chunk checkpoint carries (a
    /// re-translation's calls) to its tenant's day.
    async fn add_usage(&self, usage: &super::ChunkUsage) -> Result<(), StoreError>;
}

/// What became of a chunk edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edited {
    /// Written, with the job's review counts.
    Done,
    /// The chunk changed since it was read (its version or revisions).
    Stale,
    /// The chunk is not completed (any more): nothing written.
    NotTranslated,
}

/// Corrections: chunks' revisions and review state.
#[async_trait]
pub trait ReviewStore: Send + Sync {
    /// Write `edit` to its chunk of job `id` if the chunk is still
    /// completed at `edit.version` with `edit.revisions_before` stored
    /// revisions (a compare-and-set); the job's reviewed count moves by
    /// `edit.reviewed_delta` and its edit count by one when the text
    /// changed, in the same write.
    async fn edit_chunk(
        &self,
        id: JobId,
        edit: &crate::review::ChunkEdit,
    ) -> Result<Edited, StoreError>;
}

/// Tenants' glossaries.
#[async_trait]
pub trait GlossaryStore: Send + Sync {
    /// Store a glossary, new or replacing the one with its id (the
    /// caller checked that it is the tenant's).
    async fn glossary_put(
        &self,
        glossary: &crate::glossaries::GlossaryRecord,
    ) -> Result<(), StoreError>;

    /// `tenant`'s glossary `id`, with its terms.
    async fn glossary_get(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
    ) -> Result<Option<crate::glossaries::GlossaryRecord>, StoreError>;

    /// `tenant`'s glossaries, oldest first, without their terms (each with
    /// its count).
    async fn glossary_list(
        &self,
        tenant: &Tenant,
    ) -> Result<Vec<crate::glossaries::GlossaryRecord>, StoreError>;

    /// Delete `tenant`'s glossary `id`; false when there was none.
    async fn glossary_delete(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
    ) -> Result<bool, StoreError>;
}

/// A tenant's segment memory ([`crate::segments`]): what model engines
/// answered and what people wrote, found exactly (a person's translation
/// of the same source) or by similarity (examples).
#[async_trait]
pub trait SegmentStore: Send + Sync {
    /// Remember a translation of `source`: a person's replaces the
    /// tenant's earlier human segment for that source; an engine's is kept
    /// only when the tenant has no engine segment for it yet.
    async fn segment_put(
        &self,
        tenant: &Tenant,
        source: &str,
        target: &str,
        human: bool,
    ) -> Result<(), StoreError>;

    /// The tenant's human translation of this very source (normalized).
    async fn human_segment(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Up to `k` of the tenant's segments most similar to `source`, at
    /// least `min` similar, human ones first within the margin, found
    /// through an index (never by reading the whole memory); a segment of
    /// the very same source is left out.
    async fn similar_segments(
        &self,
        tenant: &Tenant,
        source: &str,
        k: usize,
        min: f64,
    ) -> Result<Vec<crate::segments::Example>, StoreError>;
}
