//! Lotsawa's domain: the job model and its status transitions, the per-chunk
//! ledger, the Tibetan segmenter, progress and ETA, the retry policy, and the
//! ports (small traits) that the embedded and cloud backends implement.
//!
//! This crate performs no I/O: it has no async runtime, database, HTTP or AWS
//! dependency, so everything here is testable as plain functions.

pub mod auth;
pub mod batch;
pub mod digest;
pub mod engine;
pub mod ewts;
pub mod exchange;
pub mod fuzzy;
pub mod glossaries;
pub mod glossary;
pub mod job;
pub mod ledger;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod quality;
pub mod rate;
pub mod retranslate;
pub mod retry;
pub mod review;
pub mod score;
pub mod segment;
pub mod segments;
pub mod service;
pub mod settings;
pub mod step;
pub mod store;
pub mod usage;
pub mod validation;
pub mod webhook;

pub use auth::{ApiKeyRecord, Tenant};
pub use engine::{
    ContextTurn, Engine, EngineError, EngineKind, EngineOutput, ErrorClass, ReviewRequest,
    TranslateRequest,
};
pub use glossary::{Glossary, GlossaryEntry};
pub use job::{
    BatchId, BatchRef, Callback, CallbackStatus, ChunkSize, EngineName, Job, JobConfig, JobId,
    JobResult, JobStatus, JobType, NewJob, SourceText, Transition, TransitionError,
    ValidationError,
};
pub use ledger::{ChunkRecord, ChunkStatus};
pub use pipeline::{ChunkPlan, EngineCatalog};
pub use progress::Progress;
pub use retry::{RetryDecision, RetryPolicy};
pub use service::{
    BatchItemView, BatchPage, BatchView, ChunkOutput, EngineChoice, JobPage, JobService, JobView,
    ListQuery, NewBatch, NewBatchItem, Runner, Service, ServiceError, Submitted,
};
pub use store::{
    AdmissionStore, Applied, BatchStore, CallbackStore, Change, Checkpoint, ChunkDone, JobPatch,
    JobStore, KeyStore, ListFilter, MemoryStore, PageRequest, Store, StoreError, StorePage,
    TransitionOutcome,
};
