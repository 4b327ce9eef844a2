//! Lotsawa on AWS: the same job system on DynamoDB (jobs, chunks, the
//! concurrency semaphore, the translation memory), SQS (the FIFO job queue
//! and the worker task queue), Step Functions (one execution per job, which
//! owns per-chunk retry and backoff) and S3 (large texts and ingest).
//!
//! - [`service::cloud_service`] makes the [`lotsawa_core::JobService`] behind the
//!   one HTTP Router (`api` and `stream` functions);
//! - [`dispatch`] turns job-queue messages into executions under the global
//!   concurrency limit (`dispatch` function);
//! - [`worker`] answers the state machine's task tokens (`worker` function);
//! - [`ingest`] creates jobs from S3 uploads and writes results back.

pub mod authorizer;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod gate;
pub mod ingest;
pub mod items;
pub mod messages;
pub mod retranslate;
pub mod runtime;
pub mod service;
pub mod store;
pub mod worker;

pub use config::CloudConfig;
pub use error::CloudError;
pub use store::{Clients, DynamoStore};
