//! DynamoDB (with S3 for large texts) as Lotsawa's job store in the cloud.
//! Every status change is a conditional write on the old status and run
//! number; taking and releasing a concurrency slot happens in the same
//! transaction as the status change it belongs to.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use chrono::{DateTime, Utc};
use lotsawa_core::metrics::ChunkTotals;
use lotsawa_core::progress::ChunkTiming;
use lotsawa_core::retry::Backoff;
use lotsawa_core::store::{
    AdmissionStore, Applied, BatchStore, CallbackStore, Change, Checkpoint, ChunkChange, ChunkDone,
    Field, IdempotencyRecord, JobPatch, JobStore, KeyStore, MemoryStore, PageRequest, Pulse,
    SlotChange, StoreError, StorePage, TransitionOutcome,
};
use lotsawa_core::{ApiKeyRecord, ChunkRecord, Job, JobId, JobStatus};

use crate::config::CloudConfig;
use crate::items::{
    CALLBACK_SK, CALLBACKS_PK, CONFIG_SK, ChunkItem, Item, JobItem, LIST_SHARDS, RESULT_SK,
    TEXT_SK, add_chunk_source, all_pk, chunk_from_item, chunk_sk, chunk_source_sk, counts_pk,
    is_chunk_source, job_from_items, job_pk, key_from_item, key_pk, n, new_chunk_item,
    new_chunk_source_item, new_config_item, new_job_item, new_key_item, new_text_item, s, shard_of,
    status_pk, tenant_counts_pk, tenant_status_pk, ts, type_pk,
};

mod admission;
mod batches;
mod callbacks;
mod counters;
mod glossaries;
mod jobs;
mod keys;
mod memory;
mod reads;
mod review;
mod segments;
mod texts;
mod usage;
mod writes;

pub use counters::{Counted, METRIC_SHARDS, totals_from_items};
use reads::*;
use writes::*;

/// Texts larger than this many bytes go to S3 instead of the item.
pub const INLINE_LIMIT: usize = 100_000;

impl From<crate::items::Corrupt> for StoreError {
    fn from(e: crate::items::Corrupt) -> Self {
        StoreError::Corrupt(e.0)
    }
}

fn build<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Corrupt(format!("request: {e}"))
}

/// Error codes DynamoDB uses for load shedding (as an error's code, and as
/// a transaction's cancellation reason, which has no `Exception` suffix).
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ProvisionedThroughputExceeded",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ThrottlingError",
];

/// A DynamoDB error by kind: throttling and transaction conflicts are told
/// apart from everything else; the SDK error stays the source.
fn ddb<E>(
    what: &'static str,
) -> impl Fn(SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| {
        let code = e.code().map(str::to_owned);
        let server_error = e
            .raw_response()
            .is_some_and(|r| r.status().is_server_error());
        match code.as_deref() {
            _ if server_error => StoreError::ServerError(Box::new(e)),
            Some(c) if THROTTLING.contains(&c) => StoreError::Throttled(Box::new(e)),
            // Another transaction holds the item, or this transaction's
            // earlier try (same request token) is still being applied:
            // both pass if tried again.
            Some("TransactionConflictException" | "TransactionInProgressException") => {
                StoreError::TransactionConflict(Box::new(e))
            }
            Some("ConditionalCheckFailedException") => {
                StoreError::ConditionFailed(DisplayErrorContext(&e).to_string())
            }
            _ => StoreError::backend(what, e),
        }
    }
}

/// Chunk sort keys have six digits: no job has more chunks than this.
const MAX_CHUNKS: u32 = 1_000_000;

/// Days a chunk item outlives its job's TTL, counted from the job's creation.
pub const CHUNK_TTL_MARGIN_DAYS: i64 = 365;

/// Tries of one transaction (conflicts, throttling, server errors).
const TX_ATTEMPTS: u32 = 6;
/// Base and most delay between tries, in milliseconds.
const TX_BACKOFF: Backoff = Backoff::new(
    std::time::Duration::from_millis(25),
    std::time::Duration::from_secs(1),
);
/// Rounds of unprocessed batch items and of reads until a job's items
/// agree: 10, 20, 40 … ms.
const ROUND_BACKOFF: Backoff = Backoff::new(
    std::time::Duration::from_millis(10),
    std::time::Duration::from_secs(30),
);

/// How a write transaction ended.
enum Tx {
    /// Written.
    Done,
    /// A condition did not hold (and nothing else went wrong).
    ConditionFailed,
}

/// Read a transaction's outcome from its cancellation reasons: only
/// `ConditionalCheckFailed` means that a condition did not hold; a conflict
/// with another transaction or throttling is an error of its own kind.
fn tx_outcome(
    r: Result<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput,
        SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    >,
) -> Result<Tx, StoreError> {
    let e = match r {
        Ok(_) => return Ok(Tx::Done),
        Err(e) => e,
    };
    let codes: Vec<String> = match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(t)) => t
            .cancellation_reasons()
            .iter()
            .filter_map(|r| r.code().map(str::to_owned))
            .filter(|c| c != "None")
            .collect(),
        _ => return Err(ddb("DynamoDB TransactWriteItems")(e)),
    };
    if codes.iter().any(|c| c == "TransactionConflict") {
        return Err(StoreError::TransactionConflict(Box::new(e)));
    }
    if codes.iter().any(|c| THROTTLING.contains(&c.as_str())) {
        return Err(StoreError::Throttled(Box::new(e)));
    }
    if e.raw_response()
        .is_some_and(|r| r.status().is_server_error())
    {
        return Err(StoreError::ServerError(Box::new(e)));
    }
    if codes.is_empty() || codes.iter().all(|c| c == "ConditionalCheckFailed") {
        return Ok(Tx::ConditionFailed);
    }
    Err(StoreError::backend("a DynamoDB transaction", e))
}

/// The AWS clients, built once per function instance.
#[derive(Debug, Clone)]
pub struct Clients {
    /// DynamoDB.
    pub ddb: aws_sdk_dynamodb::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// Step Functions.
    pub sfn: aws_sdk_sfn::Client,
    /// S3 (path-style addressing against an emulator endpoint).
    pub s3: aws_sdk_s3::Client,
    /// EventBridge (lifecycle events).
    pub events: aws_sdk_eventbridge::Client,
}

impl Clients {
    /// Clients on the standard AWS configuration chain (AWS_ENDPOINT_URL
    /// points them at an emulator).
    pub async fn from_env() -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk(&sdk)
    }

    /// Clients from an SDK configuration. Path-style S3 addressing only
    /// against an explicit endpoint (an emulator); on AWS the default
    /// virtual-hosted style.
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Self {
            ddb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            sfn: aws_sdk_sfn::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            events: aws_sdk_eventbridge::Client::new(sdk),
        }
    }
}

/// The job store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    /// AWS clients.
    pub clients: Clients,
    /// Settings.
    pub config: CloudConfig,
    /// Queue messages and lifecycle events.
    pub messages: crate::messages::Messages,
}

const SEMAPHORE: &str = "SEMAPHORE";

impl DynamoStore {
    /// A store.
    pub fn new(clients: Clients, config: CloudConfig) -> Self {
        let messages = crate::messages::Messages::new(
            clients.sqs.clone(),
            clients.events.clone(),
            config.clone(),
        );
        Self {
            clients,
            config,
            messages,
        }
    }

    fn key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
    }

    /// When a job that ends `now` expires (epoch seconds).
    fn ttl(&self, now: DateTime<Utc>) -> i64 {
        now.timestamp() + i64::from(self.config.job_ttl_days) * 86_400
    }

    /// When a chunk item expires: its job's time to live after the job ends
    /// is not known when the chunk is written, so a chunk outlives its job's
    /// creation by the job TTL plus [`CHUNK_TTL_MARGIN_DAYS`] (a job running
    /// or retried that long loses chunks it has not translated).
    fn chunk_expiry(&self, created: DateTime<Utc>) -> i64 {
        created.timestamp() + (i64::from(self.config.job_ttl_days) + CHUNK_TTL_MARGIN_DAYS) * 86_400
    }
}
