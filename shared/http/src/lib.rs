//! The one axum [`Router`] of Lotsawa's HTTP API (jobs, batches, SSE
//! progress, the dashboard, health, metrics, OpenAPI), used by the local
//! server, the Lambda functions and the tests alike. It talks to a backend
//! only through [`lotsawa_core::JobService`].
//!
//! The crate by concern: `router.rs` assembles the routes ([`router()`],
//! [`stream_router()`], [`metrics_router()`]); every request first passes
//! the guards (`guards.rs`: deadline, `Host` check, authentication); the
//! handlers are in `jobs.rs`, `batches.rs`, `sse.rs`, `documents.rs` (PDF
//! and form bodies) and `dashboard.rs`; `submission.rs` checks a
//! submission's JSON and `query.rs` a list's query; [`ApiDoc`]
//! (`openapi.rs`) describes it all. Every error is an [`ApiError`],
//! answered as a [`Problem`].

mod batches;
mod config;
mod dashboard;
mod desk;
mod documents;
pub mod dto;
pub mod error;
mod extract;
mod glossaries;
mod guards;
mod jobs;
mod openapi;
mod probes;
mod query;
mod router;
mod sse;
mod submission;
pub mod trace;
mod usage;

pub use axum::Router;
pub use config::{
    ApiConfig, AppState, DEFAULT_BODY_LIMIT, DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_TENANT,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use documents::{DEFAULT_PDF_BUDGET, DEFAULT_PDF_LIMIT};
pub use dto::*;
pub use error::{ApiError, Problem};
pub use extract::{BatchIdPath, JobIdPath};
pub use guards::host_allowed;
pub use jobs::{ChunkParams, ResultParams};
pub use openapi::ApiDoc;
pub use query::{ListParams, MAX_PAGE, PageLimit};
pub use router::{metrics_router, router, stream_router};
