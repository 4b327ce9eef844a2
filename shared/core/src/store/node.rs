//! What the scheduler of a server (`lotsawa serve`) asks of its store
//! beyond the port: claims of several jobs in one commit, a last chunk
//! committed with the job's completion, the jobs to resume at start, the
//! leases of a store that several servers share, and housekeeping.
//!
//! SQLite (one server owns the file) and PostgreSQL (any number of servers
//! on one database) implement it; the cloud form runs jobs through its own
//! state machine and does not.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Checkpoint, ChunkDone, Store, StoreError};
use crate::job::{Job, JobId};
use crate::ledger::ChunkRecord;
use crate::pipeline::ResultLabel;

/// What [`QueueStore::finish_last_chunk`] did.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The checkpoint's outcome.
    pub kept: Checkpoint,
    /// Whether the job completed in the same commit.
    pub completed: bool,
    /// The job claimed in the same commit to take the freed slot, with its
    /// chunks as they stood then.
    pub next: Option<(Job, Vec<ChunkRecord>)>,
}

/// A running job as its server holds it: id and run.
pub type Held = (JobId, u32);

/// The scheduler's store.
#[async_trait]
pub trait QueueStore: Store {
    /// Claim up to `max` of the first pending jobs (priority, then queue
    /// order) while fewer than `limit` jobs hold a slot, in one commit;
    /// a store shared by several servers also takes over jobs whose
    /// server's lease expired (their run number moves on, so the old
    /// server can no longer commit into them).
    async fn claim_many(
        &self,
        limit: u32,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, StoreError>;

    /// Record a job's last chunk and complete the job in one commit when
    /// every chunk is done; with `hand_off` (the concurrency limit) a job
    /// that completed hands its slot on to the next pending job, claimed
    /// in the same commit.
    async fn finish_last_chunk(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
        label: ResultLabel,
        hand_off: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Finish, StoreError>;

    /// The processing jobs this server resumes when it starts: every one
    /// for a store it owns alone; none for a shared store, whose jobs of a
    /// dead server are taken over by [`QueueStore::claim_many`] once their
    /// lease expires.
    async fn resumable(&self) -> Result<Vec<Job>, StoreError>;

    /// Renew this server's lease on the jobs it runs; the ones it no
    /// longer holds (taken over, cancelled, finished) are returned, so
    /// their runners stop. A store without leases holds every job.
    async fn renew(&self, held: &[Held], now: DateTime<Utc>) -> Result<Vec<Held>, StoreError> {
        let _ = (held, now);
        Ok(Vec::new())
    }

    /// How long a lease lasts (`None`: no leases, one server).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Tell every server sharing the store that jobs were queued (a
    /// submission, a whole batch); a store one server owns has no one to
    /// tell.
    async fn announce_queue(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Give this server's running jobs back to the queue's head at a
    /// graceful shutdown, so another server goes on with them at once; the
    /// number given back. A store one server owns keeps them processing
    /// for its next start.
    async fn hand_back(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let _ = now;
        Ok(0)
    }

    /// The callbacks this server delivers now: those due at `now`, at most
    /// `limit`. A shared store hands each to one server only, for a while
    /// longer than an attempt takes.
    async fn take_callbacks(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.callbacks_due(now, limit).await
    }

    /// Delete up to `limit` jobs finished before `before`, oldest first,
    /// and idempotency records past their window; the number of jobs.
    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> Result<usize, StoreError>;

    /// Wait until every write queued so far is committed.
    async fn flush(&self) -> Result<(), StoreError>;
}
