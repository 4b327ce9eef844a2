//! What the service answers with: views of jobs and batches, pages, and
//! the requests for batches.

use super::*;

/// A job with its derived progress and, while it runs, its partial output.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The stored job.
    pub job: Job,
    /// Derived progress.
    pub progress: Progress,
    /// Output of the chunks translated so far, while not completed.
    pub partial: Option<String>,
}

/// A list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Whose jobs (the caller's tenant).
    pub tenant: crate::auth::Tenant,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub kind: Option<JobType>,
    /// Only jobs of this queue priority.
    pub priority: Option<i8>,
    /// Page size, already clamped by the caller.
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, with their derived progress.
    pub jobs: Vec<JobView>,
    /// Cursor for the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// A finished chunk, as streamed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOutput {
    /// Position in the job.
    pub index: u32,
    /// Its translation.
    pub translation: String,
}

/// One item of a batch submission.
#[derive(Debug, Clone)]
pub struct NewBatchItem {
    /// The client's name for it.
    pub name: String,
    /// Its job.
    pub job: NewJob,
}

/// A batch submission (every item's job has the batch's tenant).
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Whose batch.
    pub tenant: Tenant,
    /// The items, in order.
    pub items: Vec<NewBatchItem>,
}

/// One item of a batch as clients see it.
#[derive(Debug, Clone)]
pub struct BatchItemView {
    /// The client's name for it.
    pub name: String,
    /// Its job (without source or result texts).
    pub job: Job,
    /// Its progress.
    pub progress: Progress,
}

/// A batch with its derived state.
#[derive(Debug, Clone)]
pub struct BatchView {
    /// The stored batch.
    pub batch: Batch,
    /// Status, counts and aggregate progress.
    pub summary: Summary,
    /// Its items, in order (an item whose job was purged is left out).
    pub items: Vec<BatchItemView>,
}

/// A page of batches, newest first.
#[derive(Debug, Clone)]
pub struct BatchPage {
    /// The batches.
    pub batches: Vec<BatchView>,
    /// Cursor for the next page, when there is one.
    pub next_cursor: Option<String>,
}
