//! The store port: what every backend's storage must do, by facet, and what
//! each status change writes, declared once.
//!
//! A store (SQLite locally, DynamoDB in the cloud) implements one small
//! trait per facet: [`JobStore`] (lifecycle, chunks, lists),
//! [`AdmissionStore`], [`KeyStore`], [`BatchStore`], [`CallbackStore`] and
//! [`MemoryStore`]. [`Store`] is all of them, what a service holds. A
//! status change is a [`JobPatch`] planned by [`JobPatch::plan`] from the
//! job and the requested [`Change`] (through [`crate::job::JobStatus::apply`]),
//! which the store writes with a compare-and-set on the job's status and
//! run number.

mod facets;
mod jobs;
mod node;
mod patch;

pub use facets::{
    AdmissionStore, BatchStore, CallbackStore, Edited, GlossaryStore, IdempotencyRecord, KeyStore,
    MemoryStore, ReviewStore, SegmentStore, UsageRow, UsageStore,
};
pub use jobs::{
    Checkpoint, ChunkDone, ChunkUsage, Cursor, JobStore, ListFilter, PageRequest, Pulse, StorePage,
    transition, transition_by_id,
};
pub use node::{Finish, Held, QueueStore};
pub use patch::{
    Applied, Change, ChunkChange, Field, JobPatch, QueuePlace, SlotChange, TransitionOutcome,
};

use crate::job::JobId;

/// A whole store: every facet. Services hold an `Arc<dyn Store>`; a type
/// that implements each facet is a `Store` without more code.
pub trait Store:
    JobStore
    + AdmissionStore
    + KeyStore
    + BatchStore
    + CallbackStore
    + MemoryStore
    + UsageStore
    + ReviewStore
    + GlossaryStore
    + SegmentStore
{
}

impl<T> Store for T where
    T: JobStore
        + AdmissionStore
        + KeyStore
        + BatchStore
        + CallbackStore
        + MemoryStore
        + UsageStore
        + ReviewStore
        + GlossaryStore
        + SegmentStore
{
}

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
