//! The job service port: everything the HTTP API needs from a backend. The
//! embedded (SQLite) backend and the cloud (DynamoDB) backend implement it.

use std::time::Duration;

use async_trait::async_trait;

use crate::job::{Job, JobId, JobStatus, JobType, NewJob};
use crate::progress::Progress;

/// A backend failure, classified for the API.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No job with that id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job's status does not allow the request.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed in a way only the backend can tell.
    #[error("{0}")]
    Invalid(String),
    /// The backend is shutting down or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; the source is logged, not shown.
    #[error(transparent)]
    Internal(#[from] Box<dyn std::error::Error + Send + Sync>),
}

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
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub kind: Option<JobType>,
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

/// What the HTTP API needs from a backend.
#[async_trait]
pub trait JobService: Send + Sync {
    /// Store a new job and queue it (FIFO).
    async fn submit(&self, job: NewJob) -> Result<Job, ServiceError>;
    /// A job with its progress.
    async fn get(&self, id: JobId) -> Result<JobView, ServiceError>;
    /// Jobs, newest first, with cursor pagination.
    async fn list(&self, query: ListQuery) -> Result<JobPage, ServiceError>;
    /// Cancel a pending or processing job.
    async fn cancel(&self, id: JobId) -> Result<Job, ServiceError>;
    /// Queue a failed or cancelled job again.
    async fn retry(&self, id: JobId) -> Result<Job, ServiceError>;
    /// Translations of completed chunks with index >= `from`, in order.
    async fn chunks_from(&self, id: JobId, from: u32) -> Result<Vec<ChunkOutput>, ServiceError>;
    /// Return when the job may have changed, or after `max_wait`.
    async fn wait_for_change(&self, id: JobId, max_wait: Duration);
    /// Engines a job may name.
    fn engines(&self) -> Vec<String>;
    /// Prometheus text exposition of the backend's metrics.
    async fn metrics(&self) -> Result<String, ServiceError>;
    /// True while the backend can take work.
    async fn healthy(&self) -> Result<(), ServiceError>;
}
