//! The job facet of the store port: lifecycle, chunks and lists. Every
//! status change goes through [`JobStore::apply`] with a patch planned by
//! [`JobPatch::plan`].

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Applied, Change, JobPatch, StoreError, TransitionOutcome};
use crate::job::{Job, JobId, JobStatus, JobType};
use crate::ledger::ChunkRecord;
use crate::progress::ChunkTiming;

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
    pub provider_calls: u32,
    /// Confidence in 0..=1.
    pub confidence: Option<f64>,
    /// Served from the translation memory.
    pub from_memory: bool,
    /// Context given to the engine (JSON).
    pub context: Option<String>,
    /// Quality warning.
    pub warning: Option<String>,
    /// The provider calls of the attempt and their tokens (none when
    /// served from memory).
    pub usage: Option<ChunkUsage>,
    /// The examples the engine was given (JSON, see
    /// [`crate::segments::encode_examples`]).
    pub examples: Option<String>,
}

/// A chunk's provider usage, with what it was spent on (the usage report
/// groups by engine and model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkUsage {
    /// Whose job.
    pub tenant: crate::auth::Tenant,
    /// The engine.
    pub engine: String,
    /// The model asked for.
    pub model: Option<String>,
    /// Calls and tokens.
    pub usage: crate::usage::Usage,
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
    /// Only jobs of this queue priority.
    pub priority: Option<i8>,
}

impl ListFilter {
    fn tag(&self) -> String {
        let mut tag = format!(
            "{}/{}/{}",
            self.tenant.as_str(),
            self.status.map_or("*", JobStatus::as_str),
            self.kind.map_or("*", JobType::as_str)
        );
        // Cursors of lists without a priority filter read as before.
        if let Some(p) = self.priority {
            tag.push_str(&format!("/p{p}"));
        }
        tag
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
    pub run: u32,
    /// Chunks completed.
    pub chunks_completed: u32,
}

impl Pulse {
    /// The pulse of a job.
    pub fn of(job: &Job) -> Self {
        Self {
            tenant: job.tenant.clone(),
            status: job.status,
            run: job.run,
            chunks_completed: job.chunks_completed,
        }
    }
}

/// The job facet: lifecycle, chunks and lists. Every status change goes
/// through [`JobStore::apply`] with a patch planned by [`JobPatch::plan`].
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
    if run.is_some_and(|r| r != job.run) {
        return Ok(TransitionOutcome::LostRace(job));
    }
    transition(store, &job, change, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_their_filter() {
        let all = ListFilter::default();
        let pending = ListFilter {
            tenant: crate::auth::Tenant::default(),
            status: Some(JobStatus::Pending),
            kind: None,
            priority: None,
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
