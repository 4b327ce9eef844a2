//! The job store port: what every backend's storage must do, and what each
//! status change writes, declared once.
//!
//! A store (SQLite locally, DynamoDB in the cloud) persists a [`JobPatch`]
//! with a compare-and-set on the job's status and run number. The patch is
//! planned here, from the job and the requested [`Change`], by
//! [`JobPatch::plan`], which goes through [`JobStatus::apply`]: no store
//! decides on its own what a transition sets or clears.

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobId, JobResult, JobStatus, JobType, Transition, TransitionError};
use crate::ledger::ChunkRecord;
use crate::progress::ChunkTiming;

/// Any error a backend keeps as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure, by kind. Backends keep their own error as the source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No job with that id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// No batch with that id.
    #[error("batch {0} not found")]
    BatchNotFound(crate::job::BatchId),
    /// A list cursor that this store did not issue for this filter.
    #[error("'{0}' is not a valid cursor for this list")]
    InvalidCursor(String),
    /// A conditional write whose condition did not hold, where the caller
    /// expected it to (a duplicate id, say).
    #[error("the stored item changed: {0}")]
    ConditionFailed(String),
    /// A concurrent transaction touched the same item; retrying may succeed.
    #[error("a concurrent transaction touched the same item")]
    TransactionConflict(#[source] BoxError),
    /// The store refused the request for load; retrying later may succeed.
    #[error("the store is throttling requests")]
    Throttled(#[source] BoxError),
    /// The store answered with a server error (5xx); retrying may succeed.
    #[error("the store answered with a server error")]
    ServerError(#[source] BoxError),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// The storage cannot take writes now (a full disk, a read-only file
    /// system); nothing was written, and retrying once it is fixed succeeds.
    #[error("{0}")]
    Storage(String),
    /// A stored value did not parse.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Any other failure of the backend, with its own error.
    #[error("{what} failed")]
    Backend {
        /// What the store was doing.
        what: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wrap a backend error.
    pub fn backend(what: &'static str, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            what,
            source: source.into(),
        }
    }

    /// True for failures that a later attempt may not meet.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::TransactionConflict(_)
                | StoreError::Throttled(_)
                | StoreError::ServerError(_)
        )
    }
}

/// A field a transition sets, clears or leaves alone.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    /// Leave the stored value.
    Keep,
    /// Write this value.
    Set(T),
    /// Remove the stored value.
    Clear,
}

impl<T> Field<T> {
    /// Apply to a value in memory.
    pub fn apply_to(&self, slot: &mut Option<T>)
    where
        T: Clone,
    {
        match self {
            Field::Keep => {}
            Field::Set(v) => *slot = Some(v.clone()),
            Field::Clear => *slot = None,
        }
    }
}

/// What a transition does with the job's concurrency slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotChange {
    /// Take one, only while fewer than `limit` jobs hold one.
    Take {
        /// The concurrency limit.
        limit: u32,
    },
    /// Give it back (the job held one: it was processing).
    Release,
    /// Neither.
    Keep,
}

/// Where a transition puts the job in the FIFO queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuePlace {
    /// At the end (retry).
    Back,
    /// At the head (a requeued job resumes first).
    Front,
    /// Out of the queue or where it was.
    Keep,
}

/// What a transition does to the chunk ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkChange {
    /// Nothing.
    None,
    /// The failed chunk becomes pending again, its error cleared (retry).
    /// Chunks complete in order, so a failed chunk is the first unfinished
    /// one, named here for stores that address chunks by key.
    ResetFailed {
        /// The first chunk not completed, if any.
        first_unfinished: Option<u32>,
    },
    /// This pending chunk failed for good.
    Fail {
        /// Its index.
        index: u32,
    },
}

/// A status change with what it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A worker claims the job.
    Start {
        /// The concurrency limit the claim must respect.
        limit: u32,
    },
    /// Every chunk is done: the job completes with its result.
    Complete(JobResult),
    /// The run failed, blaming a chunk when there is one.
    Fail {
        /// The job's error.
        error: String,
        /// The chunk that failed.
        chunk: Option<u32>,
    },
    /// A client cancelled the job.
    Cancel,
    /// A client queued a failed or cancelled job again.
    Retry,
    /// A processing job goes back to the queue head (restart with lower
    /// concurrency).
    Requeue,
}

impl Change {
    /// The bare transition.
    pub fn transition(&self) -> Transition {
        match self {
            Change::Start { .. } => Transition::Start,
            Change::Complete(_) => Transition::Complete,
            Change::Fail { .. } => Transition::Fail,
            Change::Cancel => Transition::Cancel,
            Change::Retry => Transition::Retry,
            Change::Requeue => Transition::Requeue,
        }
    }
}

/// Everything one status change writes, and the condition it is written
/// under: the job is still `from` in run `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPatch {
    /// The transition.
    pub transition: Transition,
    /// The job's owner (stores that count per tenant need it).
    pub tenant: crate::auth::Tenant,
    /// Status the job must still be in.
    pub from: JobStatus,
    /// Run number (`attempts`) the job must still have.
    pub run: u32,
    /// New status.
    pub to: JobStatus,
    /// New run number.
    pub attempts: u32,
    /// When the current run started.
    pub started_at: Field<DateTime<Utc>>,
    /// When the job completed or failed.
    pub completed_at: Field<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Field<DateTime<Utc>>,
    /// Why it failed.
    pub error: Field<String>,
    /// Its result.
    pub result: Field<JobResult>,
    /// The concurrency slot.
    pub slot: SlotChange,
    /// The queue position.
    pub queue: QueuePlace,
    /// The chunk ledger.
    pub chunks: ChunkChange,
    /// Written only if every chunk is completed (the completion).
    pub requires_all_chunks: bool,
    /// The delivery of the event this transition makes, for a job with a
    /// callback URL: written in the same commit.
    pub callback: Field<crate::job::Callback>,
}

impl JobPatch {
    /// Plan `change` on `job` at `now`: the one place where what each
    /// transition sets and clears is decided.
    pub fn plan(job: &Job, change: Change, now: DateTime<Utc>) -> Result<Self, TransitionError> {
        let transition = change.transition();
        let to = job.status.apply(transition)?;
        let mut p = JobPatch {
            transition,
            tenant: job.tenant.clone(),
            from: job.status,
            run: job.attempts,
            to,
            attempts: job.attempts,
            started_at: Field::Keep,
            completed_at: Field::Keep,
            cancelled_at: Field::Keep,
            error: Field::Keep,
            result: Field::Keep,
            slot: SlotChange::Keep,
            queue: QueuePlace::Keep,
            chunks: ChunkChange::None,
            requires_all_chunks: false,
            callback: Field::Keep,
        };
        match change {
            Change::Start { limit } => {
                p.attempts = job.attempts + 1;
                p.started_at = Field::Set(now);
                p.completed_at = Field::Clear;
                p.slot = SlotChange::Take { limit };
            }
            Change::Complete(result) => {
                p.completed_at = Field::Set(now);
                p.result = Field::Set(result);
                p.error = Field::Clear;
                p.slot = SlotChange::Release;
                p.requires_all_chunks = true;
            }
            Change::Fail { error, chunk } => {
                p.completed_at = Field::Set(now);
                p.error = Field::Set(error);
                p.slot = SlotChange::Release;
                if let Some(index) = chunk {
                    p.chunks = ChunkChange::Fail { index };
                }
            }
            Change::Cancel => {
                p.cancelled_at = Field::Set(now);
                if job.status == JobStatus::Processing {
                    p.slot = SlotChange::Release;
                }
            }
            Change::Retry => {
                p.error = Field::Clear;
                p.result = Field::Clear;
                p.started_at = Field::Clear;
                p.completed_at = Field::Clear;
                p.cancelled_at = Field::Clear;
                p.queue = QueuePlace::Back;
                p.chunks = ChunkChange::ResetFailed {
                    first_unfinished: (job.chunks_completed < job.chunks_total)
                        .then_some(job.chunks_completed),
                };
            }
            Change::Requeue => {
                p.slot = SlotChange::Release;
                p.queue = QueuePlace::Front;
            }
        }
        if job.config.callback_url.is_some()
            && let Some(kind) = crate::webhook::EventKind::terminal(to)
        {
            let event = crate::webhook::job_event(kind, &p.applied_to(job)).to_string();
            p.callback = Field::Set(crate::job::Callback::pending(event, now));
        }
        Ok(p)
    }

    /// The job as it is once the patch is written.
    pub fn applied_to(&self, job: &Job) -> Job {
        let mut j = job.clone();
        j.status = self.to;
        j.attempts = self.attempts;
        self.started_at.apply_to(&mut j.started_at);
        self.completed_at.apply_to(&mut j.completed_at);
        self.cancelled_at.apply_to(&mut j.cancelled_at);
        self.error.apply_to(&mut j.error);
        self.result.apply_to(&mut j.result);
        self.callback.apply_to(&mut j.callback);
        j
    }
}

/// What became of a compare-and-set write.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Written; the job as it is now.
    Done(Box<Job>),
    /// The job was no longer in the patch's status and run (or, for a
    /// start, no slot was free; for a completion, a chunk was unfinished).
    Lost,
}

/// What became of a requested transition.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// Written; the job as it is now.
    Applied(Job),
    /// Another writer moved the job first (or the run changed).
    LostRace(Job),
    /// The job's status does not allow it.
    NotAllowed(TransitionError),
}

/// A chunk's outcome, checkpointed as it completes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkDone {
    /// Chunk index.
    pub index: u32,
    /// Its output.
    pub translation: String,
    /// Time the successful call took; `None` when served from memory.
    pub duration_ms: Option<u64>,
    /// Successful provider calls this checkpoint adds (1, or 0 from memory);
    /// failed calls were counted by [`JobStore::note_chunk_error`].
    pub attempts: u32,
    /// Confidence in 0..=1.
    pub confidence: Option<f64>,
    /// Served from the translation memory.
    pub from_memory: bool,
    /// Context given to the engine (JSON).
    pub context: Option<String>,
    /// Quality warning.
    pub warning: Option<String>,
}

/// What became of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Written and counted.
    Recorded,
    /// The chunk was already completed: nothing written, nothing counted.
    AlreadyDone,
    /// The job is no longer processing that run: the output is discarded.
    RunEnded,
}

/// A list filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Whose jobs: a list never mixes tenants.
    pub tenant: crate::auth::Tenant,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub kind: Option<JobType>,
}

impl ListFilter {
    fn tag(&self) -> String {
        format!(
            "{}/{}/{}",
            self.tenant.as_str(),
            self.status.map_or("*", JobStatus::as_str),
            self.kind.map_or("*", JobType::as_str)
        )
    }
}

/// A page request in store terms: `after` is a store position taken from a
/// cursor that [`Cursor::decode`] already checked against the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The filter.
    pub filter: ListFilter,
    /// Most jobs to return.
    pub limit: u32,
    /// Continue after this store position.
    pub after: Option<String>,
}

/// A page in store terms.
#[derive(Debug, Clone)]
pub struct StorePage {
    /// Jobs, newest first, without source or result text.
    pub jobs: Vec<Job>,
    /// The store position of the last job, when there are more.
    pub next: Option<String>,
}

/// A list cursor: a store position bound to the filter it was issued for,
/// encoded once for every store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "v")]
    version: u8,
    #[serde(rename = "f")]
    filter: String,
    #[serde(rename = "p")]
    position: String,
}

impl Cursor {
    /// The opaque text of a position under `filter`.
    pub fn encode(filter: &ListFilter, position: &str) -> String {
        Self::encode_tagged(&filter.tag(), position)
    }

    /// The position in `text`, if it is a cursor issued for `filter`.
    pub fn decode(filter: &ListFilter, text: &str) -> Result<String, StoreError> {
        Self::decode_tagged(&filter.tag(), text)
    }

    /// The cursor of a batch list page.
    pub fn batches_tag(tenant: &crate::auth::Tenant) -> String {
        format!("batches/{}", tenant.as_str())
    }

    /// The opaque text of a position in the list named by `tag`.
    pub fn encode_tagged(tag: &str, position: &str) -> String {
        let c = Cursor {
            version: 1,
            filter: tag.to_owned(),
            position: position.to_owned(),
        };
        let json = serde_json::to_vec(&c).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// The position in `text`, if it is a cursor issued for the list
    /// named by `tag`.
    pub fn decode_tagged(tag: &str, text: &str) -> Result<String, StoreError> {
        let invalid = || StoreError::InvalidCursor(text.chars().take(200).collect());
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if c.version != 1 || c.filter != tag || c.position.is_empty() {
            return Err(invalid());
        }
        Ok(c.position)
    }
}

/// What changes while a job runs: a watcher reads the whole job again only
/// when this does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulse {
    /// Whose job it is.
    pub tenant: crate::auth::Tenant,
    /// Status.
    pub status: JobStatus,
    /// Run number.
    pub attempts: u32,
    /// Chunks completed.
    pub chunks_completed: u32,
}

impl Pulse {
    /// The pulse of a job.
    pub fn of(job: &Job) -> Self {
        Self {
            tenant: job.tenant.clone(),
            status: job.status,
            attempts: job.attempts,
            chunks_completed: job.chunks_completed,
        }
    }
}

/// A remembered submission under an `Idempotency-Key`: the job it made and
/// the request's fingerprint ([`crate::job::NewJob::fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Whose key.
    pub tenant: crate::auth::Tenant,
    /// The client's key.
    pub key: String,
    /// The request it was first used with.
    pub fingerprint: String,
    /// The job that request made.
    pub job_id: JobId,
    /// When it was first used.
    pub created_at: DateTime<Utc>,
}

/// The job store port. Every status change goes through [`JobStore::apply`]
/// with a patch planned by [`JobPatch::plan`].
#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug {
    /// Store a new pending job at the end of the queue, with its chunks.
    async fn create(&self, job: &Job, chunks: &[String]) -> Result<(), StoreError>;

    /// Store a job that failed before it could start (an unusable upload).
    async fn create_failed(&self, job: &Job) -> Result<(), StoreError>;

    /// A job, with its source and result.
    async fn get(&self, id: JobId) -> Result<Job, StoreError>;

    /// A job without its source and result texts (both left empty): what
    /// a progress view needs.
    async fn get_brief(&self, id: JobId) -> Result<Job, StoreError> {
        let mut job = self.get(id).await?;
        job.source.clear();
        job.result = None;
        Ok(job)
    }

    /// What a watcher polls: status, run and completed chunks. It may lag a
    /// write by a moment (a store may read it eventually consistent).
    async fn pulse(&self, id: JobId) -> Result<Pulse, StoreError> {
        Ok(Pulse::of(&self.get_brief(id).await?))
    }

    /// A page of jobs, newest first.
    async fn list(&self, page: &PageRequest) -> Result<StorePage, StoreError>;

    /// Write `patch` if the job is still in `patch.from` and run `patch.run`
    /// (and, for a start, a slot is free; for a completion, every chunk is
    /// done).
    async fn apply(&self, id: JobId, patch: &JobPatch) -> Result<Applied, StoreError>;

    /// Pending jobs, oldest in the queue first, at most `n`.
    async fn next_pending(&self, n: u32) -> Result<Vec<JobId>, StoreError>;

    /// Commit a chunk's output if the job still processes run `run` and the
    /// chunk is still pending; the job's completed count goes up with it.
    async fn checkpoint(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
    ) -> Result<Checkpoint, StoreError>;

    /// Count a failed provider call on a pending chunk and keep its error.
    async fn note_chunk_error(&self, id: JobId, index: u32, error: &str) -> Result<(), StoreError>;

    /// Chunks with index `from` and later, in order, with their sources.
    async fn chunks(&self, id: JobId, from: u32) -> Result<Vec<ChunkRecord>, StoreError>;

    /// Chunks with index in `from..to`, in order, with their sources.
    async fn chunks_between(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let mut chunks = self.chunks(id, from).await?;
        chunks.retain(|c| c.index < to);
        Ok(chunks)
    }

    /// What progress needs for a processing job: characters left, and the
    /// timings of recent chunks of its current run (oldest first).
    async fn progress_inputs(&self, job: &Job) -> Result<(u64, Vec<ChunkTiming>), StoreError>;

    /// A translation memory entry.
    async fn memory_get(&self, key: &str) -> Result<Option<(String, Option<f64>)>, StoreError>;

    /// Remember a translation; the first one stored for a key stays.
    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> Result<(), StoreError>;

    /// Jobs in each status.
    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, StoreError>;

    /// `tenant`'s jobs waiting to start (exact once writes settle).
    async fn pending_count(&self, tenant: &crate::auth::Tenant) -> Result<u64, StoreError>;

    /// Jobs whose callback delivery is pending and due at `now`, the
    /// earliest due first.
    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError>;

    /// Replace the job's callback state `before` (as read) by `after`; false
    /// when it changed meanwhile (another deliverer, or a newer event).
    async fn callback_update(
        &self,
        id: JobId,
        before: &crate::job::Callback,
        after: &crate::job::Callback,
    ) -> Result<bool, StoreError>;

    /// Store a batch (its jobs are stored first, each with its
    /// [`crate::job::BatchRef`]); `ConditionFailed` if the id is taken.
    async fn batch_put(&self, batch: &crate::batch::Batch) -> Result<(), StoreError>;

    /// A batch; `BatchNotFound` when there is none.
    async fn batch_get(&self, id: crate::job::BatchId) -> Result<crate::batch::Batch, StoreError>;

    /// `tenant`'s batches, newest first, at most `limit`, after the store
    /// position `after`; the position of the last when there are more.
    async fn batch_list(
        &self,
        tenant: &crate::auth::Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<crate::batch::Batch>, Option<String>), StoreError>;

    /// The jobs with these ids that exist, without source and result
    /// texts, in the order asked.
    async fn get_briefs(&self, ids: &[JobId]) -> Result<Vec<Job>, StoreError> {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get_brief(*id).await {
                Ok(j) => jobs.push(j),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(jobs)
    }

    /// Concurrency slots held now.
    async fn slots_in_use(&self) -> Result<u32, StoreError>;

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
        tenant: &crate::auth::Tenant,
        limit: crate::rate::RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError>;

    /// Store a new API key by the hash of the key.
    async fn key_put(
        &self,
        record: &crate::auth::ApiKeyRecord,
        hash: &str,
    ) -> Result<(), StoreError>;

    /// The key with this hash, revoked or not.
    async fn key_find(&self, hash: &str) -> Result<Option<crate::auth::ApiKeyRecord>, StoreError>;

    /// Every key, oldest first.
    async fn keys(&self) -> Result<Vec<crate::auth::ApiKeyRecord>, StoreError>;

    /// Revoke the key named `id`; false when there is no such key.
    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Claim the oldest pending job under the concurrency limit: pending →
    /// processing with a slot. `None` when nothing is pending or no slot is
    /// free.
    async fn claim_next(&self, limit: u32, now: DateTime<Utc>) -> Result<Option<Job>, StoreError> {
        for id in self.next_pending(8).await? {
            let job = match self.get(id).await {
                Ok(j) => j,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            match transition(self, &job, Change::Start { limit }, now).await? {
                TransitionOutcome::Applied(j) => return Ok(Some(j)),
                TransitionOutcome::NotAllowed(_) => continue,
                TransitionOutcome::LostRace(now) if now.status == JobStatus::Pending => {
                    // Still pending: no slot was free.
                    return Ok(None);
                }
                TransitionOutcome::LostRace(_) => continue,
            }
        }
        Ok(None)
    }
}

/// Apply `change` to `job` (as just read) with a compare-and-set; when the
/// write loses, the job is read again and returned as it is now.
pub async fn transition<S: JobStore + ?Sized>(
    store: &S,
    job: &Job,
    change: Change,
    now: DateTime<Utc>,
) -> Result<TransitionOutcome, StoreError> {
    let patch = match JobPatch::plan(job, change, now) {
        Ok(p) => p,
        Err(e) => return Ok(TransitionOutcome::NotAllowed(e)),
    };
    match store.apply(job.id, &patch).await? {
        Applied::Done(j) => Ok(TransitionOutcome::Applied(*j)),
        Applied::Lost => Ok(TransitionOutcome::LostRace(store.get(job.id).await?)),
    }
}

/// Apply `change` to the job with `id` as it is now, for run `run` when
/// given (a worker's change), or whatever run it is in (a client's).
pub async fn transition_by_id<S: JobStore + ?Sized>(
    store: &S,
    id: JobId,
    run: Option<u32>,
    change: Change,
    now: DateTime<Utc>,
) -> Result<TransitionOutcome, StoreError> {
    let job = store.get(id).await?;
    if run.is_some_and(|r| r != job.attempts) {
        return Ok(TransitionOutcome::LostRace(job));
    }
    transition(store, &job, change, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobConfig, JobStatus::*};
    use rstest::rstest;

    fn job(status: JobStatus, attempts: u32) -> Job {
        Job {
            tenant: crate::auth::Tenant::default(),
            id: JobId::new(),
            kind: JobType::Translation,
            status,
            source: "ཀ།".into(),
            config: JobConfig::default(),
            result: None,
            error: Some("old".into()),
            chunks_completed: 0,
            chunks_total: 1,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            completed_at: Some(Utc::now()),
            cancelled_at: None,
            attempts,
            callback: None,
            batch: None,
        }
    }

    #[test]
    fn start_takes_a_slot_and_opens_a_new_run() {
        let now = Utc::now();
        let p = JobPatch::plan(&job(Pending, 2), Change::Start { limit: 3 }, now).expect("plan");
        assert_eq!(
            (p.from, p.run, p.to, p.attempts),
            (Pending, 2, Processing, 3)
        );
        assert_eq!(p.slot, SlotChange::Take { limit: 3 });
        assert_eq!(p.started_at, Field::Set(now));
        assert_eq!(p.completed_at, Field::Clear);
    }

    #[test]
    fn retry_clears_the_run_and_goes_to_the_back() {
        let p = JobPatch::plan(&job(Failed, 1), Change::Retry, Utc::now()).expect("plan");
        let after = p.applied_to(&job(Failed, 1));
        assert_eq!(after.status, Pending);
        assert_eq!(after.error, None);
        assert_eq!(after.started_at, None);
        assert_eq!(after.completed_at, None);
        assert_eq!(p.queue, QueuePlace::Back);
        assert_eq!(
            p.chunks,
            ChunkChange::ResetFailed {
                first_unfinished: Some(0)
            }
        );
        assert_eq!(p.slot, SlotChange::Keep);
    }

    #[rstest]
    #[case(Pending, SlotChange::Keep)]
    #[case(Processing, SlotChange::Release)]
    fn cancel_releases_a_slot_only_when_one_is_held(
        #[case] from: JobStatus,
        #[case] slot: SlotChange,
    ) {
        let p = JobPatch::plan(&job(from, 1), Change::Cancel, Utc::now()).expect("plan");
        assert_eq!(p.slot, slot);
        assert!(matches!(p.cancelled_at, Field::Set(_)));
    }

    #[test]
    fn endings_release_the_slot_and_say_why() {
        let fail = Change::Fail {
            error: "chunk 0 failed".into(),
            chunk: Some(0),
        };
        let p = JobPatch::plan(&job(Processing, 1), fail, Utc::now()).expect("plan");
        assert_eq!(p.slot, SlotChange::Release);
        assert_eq!(p.chunks, ChunkChange::Fail { index: 0 });
        assert_eq!(p.error, Field::Set("chunk 0 failed".into()));
        let result = JobResult {
            translation: "x".into(),
            confidence: Some(1.0),
            processing_time: 1,
            engine: "echo".into(),
            model: None,
            warnings: vec![],
            chunks_from_memory: 0,
        };
        let p = JobPatch::plan(&job(Processing, 1), Change::Complete(result), Utc::now())
            .expect("plan");
        assert!(p.requires_all_chunks);
        assert_eq!(p.error, Field::Clear);
    }

    #[test]
    fn illegal_changes_are_refused_before_any_write() {
        assert!(JobPatch::plan(&job(Completed, 1), Change::Cancel, Utc::now()).is_err());
        assert!(JobPatch::plan(&job(Pending, 0), Change::Retry, Utc::now()).is_err());
    }

    #[test]
    fn cursors_are_bound_to_their_filter() {
        let all = ListFilter::default();
        let pending = ListFilter {
            tenant: crate::auth::Tenant::default(),
            status: Some(Pending),
            kind: None,
        };
        let c = Cursor::encode(&all, "42");
        assert_eq!(Cursor::decode(&all, &c).expect("valid"), "42");
        assert!(matches!(
            Cursor::decode(&pending, &c),
            Err(StoreError::InvalidCursor(_))
        ));
        assert!(Cursor::decode(&all, "bm9wZQ").is_err());
        assert!(Cursor::decode(&all, "!!").is_err());
    }
}
