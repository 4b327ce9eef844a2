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
use lotsawa_core::store::{
    Applied, Change, Checkpoint, ChunkChange, ChunkDone, Field, IdempotencyRecord, JobPatch,
    JobStore, PageRequest, Pulse, SlotChange, StoreError, StorePage, TransitionOutcome,
};
use lotsawa_core::{ApiKeyRecord, ChunkRecord, Job, JobId, JobStatus};

use crate::config::CloudConfig;
use crate::items::{
    CONFIG_SK, ChunkItem, Item, JobItem, LIST_SHARDS, RESULT_SK, TEXT_SK, add_chunk_source, all_pk,
    chunk_from_item, chunk_sk, chunk_source_sk, counts_pk, is_chunk_source, job_from_items, job_pk,
    key_from_item, key_pk, n, new_chunk_item, new_chunk_source_item, new_config_item, new_job_item,
    new_key_item, new_text_item, s, shard_of, status_pk, tenant_counts_pk, tenant_status_pk, ts,
    type_pk,
};

/// Texts larger than this many bytes go to S3 instead of the item.
pub const INLINE_LIMIT: usize = 100_000;

/// A cloud backend failure outside the job store (SQS, Step Functions, S3).
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An AWS call failed; the SDK error is the source.
    #[error("{service} call failed")]
    Aws {
        /// Which service.
        service: &'static str,
        /// The SDK's error.
        #[source]
        source: lotsawa_core::store::BoxError,
    },
    /// The job store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job service refused a request.
    #[error(transparent)]
    Service(#[from] lotsawa_core::ServiceError),
    /// A request could not be built or a stored text did not parse.
    #[error("invalid request: {0}")]
    Build(String),
}

impl From<crate::items::Corrupt> for StoreError {
    fn from(e: crate::items::Corrupt) -> Self {
        StoreError::Corrupt(e.0)
    }
}

impl From<CloudError> for lotsawa_core::ServiceError {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Store(s) => s.into(),
            CloudError::Service(s) => s,
            other => lotsawa_core::ServiceError::Internal(Box::new(other)),
        }
    }
}

/// An AWS error outside the store, kept as the source.
pub fn aws<E: std::error::Error + Send + Sync + 'static>(
    service: &'static str,
) -> impl Fn(E) -> CloudError {
    move |e| CloudError::Aws {
        service,
        source: Box::new(e),
    }
}

/// The sort key of a job's pending-callback marker.
const CALLBACK_SK: &str = "CALLBACK";
/// The `gsi2` partition listing pending callbacks by due time.
const CALLBACKS_PK: &str = "CALLBACKS";

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
const TX_BASE_DELAY_MS: u64 = 25;
const TX_MAX_DELAY_MS: u64 = 1_000;

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
}

const SEMAPHORE: &str = "SEMAPHORE";

impl DynamoStore {
    /// A store.
    pub fn new(clients: Clients, config: CloudConfig) -> Self {
        Self { clients, config }
    }

    fn key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
    }

    fn ttl(&self, now: DateTime<Utc>) -> AttributeValue {
        n(now.timestamp() + i64::from(self.config.job_ttl_days) * 86_400)
    }

    /// When a chunk item expires: its job's time to live after the job ends
    /// is not known when the chunk is written, so a chunk outlives its job's
    /// creation by the job TTL plus [`CHUNK_TTL_MARGIN_DAYS`] (a job running
    /// or retried that long loses chunks it has not translated).
    fn chunk_expiry(&self, created: DateTime<Utc>) -> i64 {
        created.timestamp() + (i64::from(self.config.job_ttl_days) + CHUNK_TTL_MARGIN_DAYS) * 86_400
    }

    /// Store a text in S3.
    pub async fn put_text(
        &self,
        key: &str,
        text: &str,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.clients
            .s3
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .body(text.as_bytes().to_vec().into())
            .send()
            .await
            .map_err(|e| StoreError::backend("S3 PutObject", e))?;
        Ok(())
    }

    /// Read an S3 object as bytes.
    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = self
            .clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::backend("S3 GetObject", e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::backend("reading an S3 object", e))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// The size of an S3 object in bytes.
    pub async fn object_size(&self, bucket: &str, key: &str) -> Result<u64, StoreError> {
        let out = self
            .clients
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::backend("S3 HeadObject", e))?;
        Ok(out.content_length.unwrap_or(0).max(0) as u64)
    }

    async fn get_text(&self, key: &str) -> Result<String, StoreError> {
        let bytes = self.get_bytes(&self.config.bucket, key).await?;
        String::from_utf8(bytes)
            .map_err(|_| StoreError::Corrupt(format!("s3 object {key} is not UTF-8")))
    }

    /// Store a text inline when small, else in S3 under `key`; the value
    /// for the item, or the S3 key.
    async fn place_text<'a>(
        &self,
        text: &'a str,
        key: impl FnOnce() -> String,
    ) -> Result<(Option<&'a str>, Option<String>), StoreError> {
        if text.len() > INLINE_LIMIT {
            let k = key();
            self.put_text(&k, text, "text/plain; charset=utf-8").await?;
            Ok((None, Some(k)))
        } else {
            Ok((Some(text), None))
        }
    }

    /// Queue a job run for the dispatcher. Each call is a message of its
    /// own: a job cancelled while pending and retried asks for the same run
    /// again within the queue's five-minute deduplication window, and a
    /// deduplication id of job and run would drop that message. A repeated
    /// message is harmless: the dispatcher claims a run once and names its
    /// execution after it.
    pub async fn enqueue(&self, id: JobId, run: u32, segment: u32) -> Result<(), CloudError> {
        let dedup = format!("{id}-{run}-{segment}-{}", uuid::Uuid::new_v4().simple());
        let body = crate::dispatch::JobMessage::new(id, run, segment).to_json();
        self.clients
            .sqs
            .send_message()
            .queue_url(&self.config.job_queue_url)
            .message_body(body)
            // A group per job: a message that keeps failing holds up its
            // own job only, never every other wake-up behind it.
            .message_group_id(format!("job-{id}"))
            .message_deduplication_id(dedup)
            .send()
            .await
            .map_err(aws("sqs"))?;
        Ok(())
    }

    /// A job (strongly consistent), with the cloud-only attributes: its job
    /// and settings items in one query; with `with_texts` its source and
    /// result items too, and a large source or result read from S3.
    ///
    /// A query is isolated from a transaction item by item only (read
    /// committed): while a creation or a completion commits, it can see the
    /// job item without its settings or its result. Such a read is made
    /// again, with backoff, until the items agree.
    pub async fn item(&self, id: JobId, with_texts: bool) -> Result<JobItem, StoreError> {
        let last = if with_texts { TEXT_SK } else { CONFIG_SK };
        let mut round = 0u32;
        let mut job = loop {
            let out = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", s(job_pk(id)))
                .expression_attribute_values(":a", s("JOB"))
                .expression_attribute_values(":b", s(last))
                .consistent_read(true)
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            let items = out.items.unwrap_or_default();
            let has = |sk: &str| {
                items.iter().any(|i| {
                    i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(sk)
                })
            };
            // A completed job's result item holds its result (inline or
            // in S3): one without either is from before the completion.
            let has_result = items.iter().any(|i| {
                i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(RESULT_SK)
                    && (i.contains_key("result") || i.contains_key("resultKey"))
            });
            let whole = !has("JOB")
                || (has(CONFIG_SK)
                    && (!with_texts || (has(TEXT_SK) && (has_result || !completed(&items)))));
            if whole {
                let find = |sk: &'static str| {
                    items.iter().find(|i| {
                        i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(sk)
                    })
                };
                let job_item = find("JOB").ok_or(StoreError::NotFound(id))?;
                break job_from_items(job_item, find(CONFIG_SK), find(TEXT_SK), find(RESULT_SK))?;
            }
            round += 1;
            if round >= 8 {
                return Err(StoreError::Corrupt(format!(
                    "job {id}: its items stayed incomplete over 8 reads"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10 << round)).await;
        };
        if with_texts {
            if let Some(k) = job.result_key.clone() {
                let text = self.get_text(&k).await?;
                job.job.result = Some(
                    serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("result {k}: {e}")))?,
                );
            }
            if let Some(k) = job.source_key.clone() {
                job.job.source = self.get_text(&k).await?;
            }
        }
        Ok(job)
    }

    /// Job items by id (no settings, no texts), in the order asked;
    /// strongly consistent, unprocessed keys asked again with backoff.
    async fn job_items(&self, ids: &[JobId]) -> Result<Vec<JobItem>, StoreError> {
        let mut found: HashMap<String, Item> = HashMap::new();
        for part in ids.chunks(100) {
            let mut keys: Vec<Item> = part
                .iter()
                .map(|id| Self::key(job_pk(*id), "JOB"))
                .collect();
            found.extend(
                self.batch_get(&mut keys, true)
                    .await?
                    .into_iter()
                    .filter_map(|i| {
                        let pk = i.get("pk")?.as_s().ok()?.clone();
                        Some((pk, i))
                    }),
            );
        }
        ids.iter()
            .filter_map(|id| found.get(&job_pk(*id)))
            .map(|i| Ok(job_from_items(i, None, None, None)?))
            .collect()
    }

    /// Read `keys` (at most 100) with BatchGetItem until none is left
    /// unprocessed (ten rounds with backoff, then an error).
    async fn batch_get(
        &self,
        keys: &mut Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        for round in 0..10u32 {
            if keys.is_empty() {
                return Ok(items);
            }
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(25 << round)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(keys)))
                .consistent_read(consistent)
                .build()
                .map_err(build)?;
            let out = self
                .clients
                .ddb
                .batch_get_item()
                .request_items(&self.config.table, request)
                .send()
                .await
                .map_err(ddb("DynamoDB BatchGetItem"))?;
            if let Some(got) = out.responses.and_then(|mut r| r.remove(&self.config.table)) {
                items.extend(got);
            }
            if let Some(rest) = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.config.table))
            {
                *keys = rest.keys;
            }
        }
        if keys.is_empty() {
            Ok(items)
        } else {
            Err(StoreError::Throttled(
                "items stayed unprocessed after 10 rounds of BatchGetItem".into(),
            ))
        }
    }

    /// Send a lifecycle event to the bus (`Source` `lotsawa`, `DetailType`
    /// its name), when one is configured. Best effort: a failure is logged
    /// and never fails the change that made the event.
    pub async fn publish(&self, detail_type: &str, detail: &serde_json::Value) {
        let Some(bus) = &self.config.event_bus else {
            return;
        };
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(lotsawa_core::webhook::EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        match self.clients.events.put_events().entries(entry).send().await {
            Ok(out) if out.failed_entry_count() == 0 => {}
            Ok(out) => tracing::warn!(
                event = detail_type,
                error = ?out.entries().first().and_then(|e| e.error_message()),
                "EventBridge refused a lifecycle event"
            ),
            Err(e) => tracing::warn!(
                event = detail_type,
                error = %DisplayErrorContext(&e),
                "sending a lifecycle event failed"
            ),
        }
    }

    /// Have the webhook function try the job's pending callback after
    /// `delay` (at most SQS's 15 minutes; a later one is found by the
    /// sweep). Best effort: the sweep finds a delivery whose message was
    /// lost.
    pub async fn schedule_callback(&self, id: JobId, delay: std::time::Duration) {
        let Some(w) = &self.config.webhooks else {
            return;
        };
        let body = serde_json::json!({ "jobId": id.to_string() }).to_string();
        let delay = delay.as_secs().min(900) as i32;
        if let Err(e) = self
            .clients
            .sqs
            .send_message()
            .queue_url(&w.queue_url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
        {
            tracing::warn!(job_id = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                "queueing a callback delivery failed; the sweep will find it");
        }
    }

    /// The events a written change makes: the job's, and `batch.completed`
    /// when it was the last item of its batch to end.
    async fn publish_change(&self, from: JobStatus, job: &Job) {
        let Some(kind) = lotsawa_core::webhook::EventKind::of_change(from, job.status) else {
            return;
        };
        self.publish(kind.as_str(), &lotsawa_core::webhook::job_event(kind, job))
            .await;
        if let (true, Some(b)) = (job.status.is_terminal(), job.batch) {
            match self.batch_ended(b.id).await {
                Ok(Some(event)) => self.publish("batch.completed", &event).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(batch_id = %b.id, error = %e, "reading a batch for its event failed")
                }
            }
        }
    }

    /// The `batch.completed` event of a batch whose items have all ended.
    async fn batch_ended(
        &self,
        id: lotsawa_core::BatchId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let batch = match JobStore::batch_get(self, id).await {
            Ok(b) => b,
            // Its jobs are stored before it: the last item can end first.
            Err(StoreError::BatchNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        let jobs = JobStore::get_briefs(self, &ids).await?;
        let refs: Vec<&Job> = jobs.iter().collect();
        let summary = lotsawa_core::batch::summarize(&refs, Utc::now());
        Ok(summary
            .status
            .is_terminal()
            .then(|| lotsawa_core::webhook::batch_event(&batch, &summary)))
    }

    /// The queue's current turn: the smallest turn of a pending job (0
    /// when none waits), from the head of each queue shard.
    async fn current_turn(&self) -> Result<u64, StoreError> {
        let mut least: Option<u64> = None;
        for shard in 0..LIST_SHARDS {
            let out = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .index_name("gsi4")
                .key_condition_expression("gsi4pk = :pk")
                .expression_attribute_values(":pk", s(crate::items::queue_pk(shard)))
                .limit(1)
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            if let Some(turn) = out
                .items()
                .first()
                .and_then(|i| i.get("gsi4sk"))
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| crate::items::turn_of(sk))
            {
                least = Some(least.map_or(turn, |l| l.min(turn)));
            }
        }
        Ok(least.unwrap_or(0))
    }

    /// Jobs from one listing index, merged over its shards: newest first
    /// (oldest first with `forward`), strictly after the position `after`,
    /// keeping those `keep` accepts, until `want` are found or the index
    /// ends. Each shard is read a page at a time, keys only; the job items
    /// of each round are then read in one batch.
    async fn read_index(
        &self,
        index: &str,
        pks: Vec<String>,
        after: Option<&str>,
        forward: bool,
        want: usize,
        keep: impl Fn(&JobItem) -> bool,
    ) -> Result<Vec<JobItem>, StoreError> {
        struct Shard {
            pk: String,
            start: Option<Item>,
            buf: std::collections::VecDeque<(String, JobId)>,
            ended: bool,
        }
        let (pk_name, sk_name) = (format!("{index}pk"), format!("{index}sk"));
        let mut shards: Vec<Shard> = pks
            .into_iter()
            .map(|pk| Shard {
                pk,
                start: None,
                buf: Default::default(),
                ended: false,
            })
            .collect();
        let mut out = Vec::new();
        loop {
            let need = want - out.len();
            for sh in shards.iter_mut().filter(|s| s.buf.is_empty() && !s.ended) {
                let mut q = self
                    .clients
                    .ddb
                    .query()
                    .table_name(&self.config.table)
                    .index_name(index)
                    .expression_attribute_values(":pk", s(sh.pk.clone()))
                    .scan_index_forward(forward)
                    .limit(need.clamp(1, 200) as i32)
                    .set_exclusive_start_key(sh.start.take());
                q = match after {
                    Some(pos) => q
                        .key_condition_expression(format!(
                            "{pk_name} = :pk AND {sk_name} {} :after",
                            if forward { ">" } else { "<" }
                        ))
                        .expression_attribute_values(":after", s(pos)),
                    None => q.key_condition_expression(format!("{pk_name} = :pk")),
                };
                let page = q.send().await.map_err(ddb("DynamoDB Query"))?;
                for item in page.items() {
                    let sk = item
                        .get(&sk_name)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default();
                    let id = position_key(&sk)
                        .ok_or_else(|| StoreError::Corrupt(format!("index key {sk}")))?;
                    sh.buf.push_back((sk, id));
                }
                match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                    Some(k) => sh.start = Some(k),
                    None => sh.ended = true,
                }
            }
            // The next `need` positions over every shard, in order; a shard
            // whose read part is used up stops the merge (its next page may
            // hold earlier positions) until it is read again.
            let mut ids = Vec::new();
            while ids.len() < need && !shards.iter().any(|sh| sh.buf.is_empty() && !sh.ended) {
                let best = shards
                    .iter()
                    .enumerate()
                    .filter_map(|(i, sh)| sh.buf.front().map(|(sk, _)| (i, sk)))
                    .reduce(|a, b| if (b.1 < a.1) == forward { b } else { a })
                    .map(|(i, _)| i);
                let Some(i) = best else { break };
                if let Some((_, id)) = shards[i].buf.pop_front() {
                    ids.push(id);
                }
            }
            out.extend(self.job_items(&ids).await?.into_iter().filter(&keep));
            let exhausted = shards.iter().all(|sh| sh.ended && sh.buf.is_empty());
            if out.len() >= want || exhausted {
                out.truncate(want);
                return Ok(out);
            }
        }
    }

    /// One chunk's ledger record (its source left empty), its translation
    /// read from S3 when large.
    pub async fn chunk(&self, id: JobId, index: u32) -> Result<Option<ChunkRecord>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        match out.item {
            Some(item) => Ok(Some(self.chunk_texts(chunk_from_item(&item)?).await?)),
            None => Ok(None),
        }
    }

    async fn chunk_texts(&self, mut c: ChunkItem) -> Result<ChunkRecord, StoreError> {
        if let Some(k) = c.source_key.take() {
            c.record.source = self.get_text(&k).await?;
        }
        if let Some(k) = c.translation_key.take() {
            c.record.translation = Some(self.get_text(&k).await?);
        }
        Ok(c.record)
    }

    /// Run every page of a query.
    async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = query
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Chunks with index in `from..to`, in order (strongly consistent).
    pub async fn chunk_range(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        self.chunk_query(id, from, to, true).await
    }

    async fn chunk_query(
        &self,
        id: JobId,
        from: u32,
        to: u32,
        consistent: bool,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let query = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(job_pk(id)))
            .expression_attribute_values(":a", s(chunk_sk(from)))
            .expression_attribute_values(":b", s(chunk_source_sk(to.min(MAX_CHUNKS) - 1)))
            .consistent_read(consistent);
        // Ledger items, each followed by its source item.
        let mut items: Vec<ChunkItem> = Vec::new();
        for item in self.query_all(query).await? {
            if is_chunk_source(&item) {
                if let Some(last) = items.last_mut() {
                    add_chunk_source(last, &item);
                }
            } else {
                items.push(chunk_from_item(&item)?);
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for c in items {
            out.push(self.chunk_texts(c).await?);
        }
        Ok(out)
    }

    /// The marker that lists a job under `CALLBACKS` in `gsi2` while its
    /// callback is pending, keyed by when it is due; deleted otherwise.
    fn callback_marker(
        &self,
        id: JobId,
        callback: Option<&lotsawa_core::Callback>,
    ) -> Result<TransactWriteItem, StoreError> {
        let due = callback
            .filter(|c| c.status == lotsawa_core::CallbackStatus::Pending)
            .and_then(|c| c.next_attempt_at);
        Ok(match due {
            Some(due) => {
                let mut item = Self::key(job_pk(id), CALLBACK_SK);
                item.insert("gsi2pk".into(), s(CALLBACKS_PK));
                item.insert("gsi2sk".into(), s(format!("{}#{id}", ts(due))));
                // Gone with its (finished) job.
                item.insert("expiresAt".into(), self.ttl(Utc::now()));
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.config.table)
                            .set_item(Some(item))
                            .build()
                            .map_err(build)?,
                    )
                    .build()
            }
            None => TransactWriteItem::builder()
                .delete(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.config.table)
                        .set_key(Some(Self::key(job_pk(id), CALLBACK_SK)))
                        .build()
                        .map_err(build)?,
                )
                .build(),
        })
    }

    fn release_item(&self) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
                    .update_expression("SET #c = #c - :one")
                    .condition_expression("#c > :zero")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":zero", n(0))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    fn take_item(&self, limit: u32) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
                    .update_expression("SET #c = if_not_exists(#c, :zero) + :one")
                    .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":limit", n(limit))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    /// Write items in one transaction. A conflict with another transaction,
    /// throttling and server errors that outlast the SDK's own retries are
    /// tried again with full-jitter exponential backoff, under one client
    /// request token, so a transaction that did commit before its answer
    /// was lost is not applied twice (DynamoDB answers a repeated token with
    /// the first outcome for 10 minutes); what still fails is returned.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Tx, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0u32;
        loop {
            let out = tx_outcome(
                self.clients
                    .ddb
                    .transact_write_items()
                    .set_transact_items(Some(items.clone()))
                    .client_request_token(&token)
                    .send()
                    .await,
            );
            match out {
                Err(e) if e.is_retryable() && attempt + 1 < TX_ATTEMPTS => {
                    attempt += 1;
                    let cap = TX_BASE_DELAY_MS
                        .saturating_mul(1 << attempt)
                        .min(TX_MAX_DELAY_MS);
                    let wait = (rand::random::<f64>() * cap as f64) as u64;
                    tracing::warn!(attempt, wait_ms = wait, error = %e, "transaction not written; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                other => return other,
            }
        }
    }

    /// The job update of a planned patch: what it sets and removes, under
    /// the compare-and-set on status and run.
    async fn patch_update(
        &self,
        id: JobId,
        patch: &JobPatch,
        now: DateTime<Utc>,
    ) -> Result<
        (
            aws_sdk_dynamodb::types::builders::UpdateBuilder,
            Option<aws_sdk_dynamodb::types::builders::UpdateBuilder>,
        ),
        StoreError,
    > {
        let mut sets = vec![
            "#st = :to".to_owned(),
            "attempts = :att".to_owned(),
            "gsi1pk = :g1".to_owned(),
            "gsi5pk = :g5".to_owned(),
            // A job written before the tenant status index existed gets its
            // sort key there from the status index's (the same value).
            "gsi5sk = if_not_exists(gsi5sk, gsi1sk)".to_owned(),
        ];
        let mut removes: Vec<&str> = Vec::new();
        let mut u = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(patch.to.as_str()))
            .expression_attribute_values(":att", n(patch.attempts))
            .expression_attribute_values(":g1", s(status_pk(patch.to, shard_of(id))))
            .expression_attribute_values(
                ":g5",
                s(tenant_status_pk(&patch.tenant, patch.to, shard_of(id))),
            )
            .expression_attribute_values(":from", s(patch.from.as_str()))
            .expression_attribute_values(":run", n(patch.run));
        let mut condition = "#st = :from AND attempts = :run".to_owned();
        if patch.from == JobStatus::Pending && patch.to != JobStatus::Pending {
            removes.extend(["gsi4pk", "gsi4sk"]);
        } else if patch.from != JobStatus::Pending && patch.to == JobStatus::Pending {
            // Back: the end of the current turn; front: before every turn.
            let (turn, at) = match patch.queue {
                lotsawa_core::store::QueuePlace::Front => (0, ts(DateTime::<Utc>::UNIX_EPOCH)),
                _ => (self.current_turn().await?, ts(now)),
            };
            u = u
                .expression_attribute_values(":q4pk", s(crate::items::queue_pk(shard_of(id))))
                .expression_attribute_values(":q4sk", s(crate::items::queue_sk(turn, &at, id)));
            sets.extend(["gsi4pk = :q4pk".to_owned(), "gsi4sk = :q4sk".to_owned()]);
        }
        for (name, field) in [
            ("startedAt", &patch.started_at),
            ("completedAt", &patch.completed_at),
            ("cancelledAt", &patch.cancelled_at),
        ] {
            match field {
                Field::Keep => {}
                Field::Clear => removes.push(name),
                Field::Set(t) => {
                    let v = format!(":{name}");
                    u = u.expression_attribute_values(&v, s(ts(*t)));
                    sets.push(format!("{name} = {v}"));
                }
            }
        }
        match &patch.error {
            Field::Keep => {}
            Field::Clear => removes.push("#err"),
            Field::Set(e) => {
                u = u.expression_attribute_values(":err", s(e.clone()));
                sets.push("#err = :err".into());
            }
        }
        if !matches!(patch.error, Field::Keep) {
            u = u.expression_attribute_names("#err", "error");
        }
        match &patch.callback {
            Field::Keep => {}
            Field::Clear => {
                u = u.expression_attribute_names("#cb", "callback");
                removes.push("#cb");
            }
            Field::Set(c) => {
                let text = serde_json::to_string(c).map_err(build)?;
                u = u
                    .expression_attribute_names("#cb", "callback")
                    .expression_attribute_values(":cb", s(text));
                sets.push("#cb = :cb".into());
            }
        }
        // The result has an item of its own, written in the same
        // transaction: a completion writes the result, not the source.
        let text = match &patch.result {
            Field::Keep => None,
            Field::Clear => Some(
                Update::builder()
                    .update_expression("SET expiresAt = :exp REMOVE #res, resultKey")
                    .expression_attribute_names("#res", "result"),
            ),
            Field::Set(r) => {
                let text = serde_json::to_string(r).map_err(build)?;
                Some(if text.len() > INLINE_LIMIT {
                    let key = format!("job-results/{id}.json");
                    self.put_text(&key, &text, "application/json").await?;
                    Update::builder()
                        .update_expression("SET expiresAt = :exp, resultKey = :rk REMOVE #res")
                        .expression_attribute_values(":rk", s(key))
                        .expression_attribute_names("#res", "result")
                } else {
                    Update::builder()
                        .update_expression("SET expiresAt = :exp, #res = :res REMOVE resultKey")
                        .expression_attribute_values(":res", s(text))
                        .expression_attribute_names("#res", "result")
                })
            }
        }
        .map(|u| {
            // A result outlives its job item by the chunk margin at most.
            u.table_name(&self.config.table)
                .set_key(Some(Self::key(job_pk(id), RESULT_SK)))
                .expression_attribute_values(
                    ":exp",
                    n(now.timestamp()
                        + (i64::from(self.config.job_ttl_days) + CHUNK_TTL_MARGIN_DAYS) * 86_400),
                )
        });
        match patch.slot {
            SlotChange::Take { .. } => sets.push("slot = :att".into()),
            SlotChange::Release => {
                removes.push("slot");
                condition.push_str(" AND slot = :run");
            }
            SlotChange::Keep => {}
        }
        if patch.to.is_terminal() {
            u = u.expression_attribute_values(":ttl", self.ttl(now));
            sets.push("expiresAt = :ttl".into());
        } else {
            removes.push("expiresAt");
        }
        if matches!(patch.to, JobStatus::Pending) || matches!(patch.slot, SlotChange::Take { .. }) {
            // A new run gets a new execution.
            removes.push("executionArn");
        }
        if patch.requires_all_chunks {
            condition.push_str(" AND chunksCompleted = chunksTotal");
        }
        let mut expr = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        Ok((
            u.update_expression(expr).condition_expression(condition),
            text,
        ))
    }

    /// Remember the S3 object a job was ingested from.
    pub async fn set_ingest_key(&self, id: JobId, key: &str) -> Result<(), StoreError> {
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET ingestKey = :k")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":k", s(key))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(())
    }

    /// Start `job` (as just read, texts or not) into a free slot: the
    /// core's transition, with the job read again without its texts when
    /// the write loses (still pending: no slot was free).
    pub async fn claim(
        &self,
        job: &Job,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError> {
        let patch = match JobPatch::plan(job, Change::Start { limit }, now) {
            Ok(p) => p,
            Err(e) => return Ok(TransitionOutcome::NotAllowed(e)),
        };
        match self.apply(job.id, &patch).await? {
            Applied::Done(j) => Ok(TransitionOutcome::Applied(*j)),
            Applied::Lost => Ok(TransitionOutcome::LostRace(
                self.item(job.id, false).await?.job,
            )),
        }
    }

    /// Record the execution of run `run`, segment `segment`. A segment
    /// never replaces a later one of the same run (a sweep starting a
    /// claimed run late must not point the job back at its first segment
    /// after the run moved on); such a write changes nothing.
    pub async fn set_execution(
        &self,
        id: JobId,
        run: u32,
        segment: u32,
        arn: &str,
    ) -> Result<(), StoreError> {
        let out = self
            .clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET executionArn = :arn, executionSegment = :seg")
            .condition_expression(
                "attempts = :run AND (attribute_not_exists(executionSegment) OR executionSegment <= :seg)",
            )
            .expression_attribute_values(":arn", s(arn))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":seg", n(segment))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"));
        match out {
            Ok(_) => Ok(()),
            Err(StoreError::ConditionFailed(_)) => {
                tracing::info!(job_id = %id, run, segment, "a later execution is recorded; this one is not");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Jobs holding slots, for reconciliation.
    pub async fn processing(&self) -> Result<Vec<JobItem>, StoreError> {
        let pks = (0..LIST_SHARDS)
            .map(|i| status_pk(JobStatus::Processing, i))
            .collect();
        self.read_index("gsi1", pks, None, true, usize::MAX, |_| true)
            .await
    }

    /// Add a chunk attempt (or a translation-memory hit) to the counters
    /// behind `/metrics`. The counters are spread over [`METRIC_SHARDS`]
    /// items so that no one item takes every worker's writes.
    pub async fn count(&self, counted: &Counted<'_>) -> Result<(), StoreError> {
        let shard = rand::random::<u32>() % METRIC_SHARDS;
        let (expr, names, values) = counter_update(counted);
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(format!("METRICS#{shard}"), "METRICS")))
            .update_expression(expr)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(())
    }

    /// The counters of every shard, summed.
    pub async fn chunk_totals(&self) -> Result<ChunkTotals, StoreError> {
        let mut keys: Vec<Item> = (0..METRIC_SHARDS)
            .map(|i| Self::key(format!("METRICS#{i}"), "METRICS"))
            .collect();
        let items = self.batch_get(&mut keys, false).await?;
        Ok(totals_from_items(&items))
    }

    /// The `ADD` of one job to (`by` 1) or from (`by` -1) a status count.
    fn count_update(
        &self,
        id: JobId,
        adds: &[(JobStatus, i64)],
    ) -> Result<TransactWriteItem, StoreError> {
        let mut u = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(counts_pk(shard_of(id)), "COUNTS")));
        let mut parts = Vec::new();
        for (i, (st, by)) in adds.iter().enumerate() {
            u = u
                .expression_attribute_names(format!("#s{i}"), st.as_str())
                .expression_attribute_values(format!(":v{i}"), n(by));
            parts.push(format!("#s{i} :v{i}"));
        }
        Ok(TransactWriteItem::builder()
            .update(
                u.update_expression(format!("ADD {}", parts.join(", ")))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    /// The `ADD` of `by` to `tenant`'s count of waiting jobs.
    fn tenant_pending_update(
        &self,
        tenant: &lotsawa_core::Tenant,
        by: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(tenant_counts_pk(tenant), "COUNTS")))
                    .update_expression("ADD pending :v")
                    .expression_attribute_values(":v", n(by))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    /// Write a new job's items, and count it, in one transaction; a job
    /// item already there is `ConditionFailed` (nothing written).
    async fn put_job(&self, job: &Job, job_item: Item, text: Item) -> Result<(), StoreError> {
        let expires = self.chunk_expiry(job.created_at);
        let put = |item: Item, condition: Option<&str>| -> Result<TransactWriteItem, StoreError> {
            Ok(TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.config.table)
                        .set_item(Some(item))
                        .set_condition_expression(condition.map(str::to_owned))
                        .build()
                        .map_err(build)?,
                )
                .build())
        };
        let mut items = vec![
            put(job_item, Some("attribute_not_exists(pk)"))?,
            put(new_config_item(job, expires)?, None)?,
            put(text, None)?,
            self.count_update(job.id, &[(job.status, 1)])?,
        ];
        if job.status == JobStatus::Pending {
            items.push(self.tenant_pending_update(&job.tenant, 1)?);
        }
        match self.transact(items).await? {
            Tx::Done => Ok(()),
            Tx::ConditionFailed => Err(StoreError::ConditionFailed(format!(
                "job {} exists already",
                job.id
            ))),
        }
    }
}

/// Whether the job item among `items` says the job is completed.
fn completed(items: &[Item]) -> bool {
    items.iter().any(|i| {
        i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("JOB")
            && i.get("status")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(JobStatus::Completed.as_str())
    })
}

fn batch_from_item(
    id: lotsawa_core::BatchId,
    item: &Item,
) -> Result<lotsawa_core::batch::Batch, StoreError> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("batch {id}: no {name}")))
    };
    Ok(lotsawa_core::batch::Batch {
        id,
        tenant: lotsawa_core::Tenant::parse(text("tenant")?)
            .map_err(|e| StoreError::Corrupt(e.0))?,
        created_at: DateTime::parse_from_rfc3339(text("createdAt")?)
            .map_err(|e| StoreError::Corrupt(format!("batch {id}: {e}")))?
            .with_timezone(&Utc),
        items: serde_json::from_str(text("items")?)
            .map_err(|e| StoreError::Corrupt(format!("batch {id} items: {e}")))?,
    })
}

/// The list position of a job: its listing sort key (`createdAt#id`).
fn position_key(pos: &str) -> Option<JobId> {
    let (rest, id) = pos.rsplit_once('#')?;
    // A queue key has the turn before the time.
    let created = rest.rsplit_once('#').map_or(rest, |(_, c)| c);
    DateTime::parse_from_rfc3339(created).ok()?;
    id.parse().ok()
}

#[async_trait]
impl JobStore for DynamoStore {
    async fn create(&self, job: &Job, chunks: &[String]) -> Result<(), StoreError> {
        let (inline, key) = self
            .place_text(&job.source, || format!("sources/{}.txt", job.id))
            .await?;
        // Chunks first: a job item is only visible once its ledger is whole.
        let mut requests = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let index = i as u32;
            let (text, key) = self
                .place_text(c, || format!("chunks/{}/{index:06}.txt", job.id))
                .await?;
            let expires = self.chunk_expiry(job.created_at);
            for item in [
                new_chunk_item(job.id, index, c.chars().count(), expires),
                new_chunk_source_item(job.id, index, text, key.as_deref(), expires),
            ] {
                requests.push(
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item))
                                .build()
                                .map_err(build)?,
                        )
                        .build(),
                );
            }
        }
        for batch in requests.chunks(25) {
            let mut pending = HashMap::from([(self.config.table.clone(), batch.to_vec())]);
            for round in 0..10 {
                let out = self
                    .clients
                    .ddb
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(ddb("DynamoDB BatchWriteItem"))?;
                match out.unprocessed_items {
                    Some(u) if !u.is_empty() => {
                        if round == 9 {
                            return Err(StoreError::Throttled(
                                "chunk items stayed unprocessed after 10 rounds".into(),
                            ));
                        }
                        pending = u;
                        tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
                    }
                    _ => break,
                }
            }
        }
        let expires = self.chunk_expiry(job.created_at);
        let text = new_text_item(job.id, inline, key.as_deref(), expires);
        let mut item = new_job_item(job);
        let turn = self.current_turn().await? + u64::from(job.batch.map_or(0, |b| b.index));
        item.insert("gsi4pk".into(), s(crate::items::queue_pk(shard_of(job.id))));
        item.insert(
            "gsi4sk".into(),
            s(crate::items::queue_sk(turn, &ts(job.created_at), job.id)),
        );
        self.put_job(job, item, text).await?;
        self.publish_change(JobStatus::Pending, job).await;
        Ok(())
    }

    async fn create_failed(&self, job: &Job) -> Result<(), StoreError> {
        let mut item = new_job_item(job);
        if let Some(e) = &job.error {
            item.insert("error".into(), s(e.clone()));
        }
        if let Some(t) = job.completed_at {
            item.insert("completedAt".into(), s(ts(t)));
            item.insert("expiresAt".into(), self.ttl(t));
        }
        let text = new_text_item(job.id, Some(""), None, self.chunk_expiry(job.created_at));
        self.put_job(job, item, text).await?;
        self.publish_change(JobStatus::Pending, job).await;
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        Ok(self.item(id, true).await?.job)
    }

    async fn list(&self, page: &PageRequest) -> Result<StorePage, StoreError> {
        // Every list reads the tenant's own index partitions: by status
        // (`gsi5`), by type (`gsi3`), or all (`gsi2`); the cost of a list
        // does not grow with other tenants' jobs.
        let tenant = page.filter.tenant.clone();
        let (index, pks): (&str, Vec<String>) = match (page.filter.status, page.filter.kind) {
            (Some(st), _) => (
                "gsi5",
                (0..LIST_SHARDS)
                    .map(|i| tenant_status_pk(&tenant, st, i))
                    .collect(),
            ),
            (None, Some(k)) => (
                "gsi3",
                (0..LIST_SHARDS).map(|i| type_pk(&tenant, k, i)).collect(),
            ),
            (None, None) => (
                "gsi2",
                (0..LIST_SHARDS).map(|i| all_pk(&tenant, i)).collect(),
            ),
        };
        if let Some(pos) = &page.after
            && position_key(pos).is_none()
        {
            return Err(StoreError::InvalidCursor(pos.clone()));
        }
        // One more than asked tells whether there is a next page.
        let want = page.limit as usize + 1;
        let kind = page.filter.kind;
        let mut jobs: Vec<Job> = self
            .read_index(index, pks, page.after.as_deref(), false, want, |j| {
                j.job.tenant == tenant && kind.is_none_or(|k| j.job.kind == k)
            })
            .await?
            .into_iter()
            .map(|j| j.job)
            .collect();
        let more = jobs.len() > page.limit as usize;
        jobs.truncate(page.limit as usize);
        let next = if more {
            jobs.last()
                .map(|j| crate::items::list_sk(&ts(j.created_at), j.id))
        } else {
            None
        };
        Ok(StorePage { jobs, next })
    }

    async fn apply(&self, id: JobId, patch: &JobPatch) -> Result<Applied, StoreError> {
        let now = Utc::now();
        let (job, text) = self.patch_update(id, patch, now).await?;
        let mut items = vec![
            TransactWriteItem::builder()
                .update(job.build().map_err(build)?)
                .build(),
        ];
        if let Some(t) = text {
            items.push(
                TransactWriteItem::builder()
                    .update(t.build().map_err(build)?)
                    .build(),
            );
        }
        if patch.from != patch.to {
            items.push(self.count_update(id, &[(patch.from, -1), (patch.to, 1)])?);
            if patch.from == JobStatus::Pending {
                items.push(self.tenant_pending_update(&patch.tenant, -1)?);
            } else if patch.to == JobStatus::Pending {
                items.push(self.tenant_pending_update(&patch.tenant, 1)?);
            }
        }
        match patch.slot {
            SlotChange::Take { limit } => items.push(self.take_item(limit)?),
            SlotChange::Release => items.push(self.release_item()?),
            SlotChange::Keep => {}
        }
        let chunk = match &patch.chunks {
            ChunkChange::None => None,
            ChunkChange::Fail { index } => Some(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(job_pk(id), &chunk_sk(*index))))
                    .update_expression("SET #st = :failed")
                    .condition_expression("#st = :pending")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":failed", s("failed"))
                    .expression_attribute_values(":pending", s("pending")),
            ),
            // Chunks complete in order: the failed chunk, if any, is the
            // first unfinished one.
            ChunkChange::ResetFailed { first_unfinished } => first_unfinished.map(|index| {
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
                    .update_expression("SET #st = :pending REMOVE #err")
                    .condition_expression("attribute_exists(pk) AND #st <> :done")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#err", "error")
                    .expression_attribute_values(":pending", s("pending"))
                    .expression_attribute_values(":done", s("completed"))
            }),
        };
        if let Some(c) = chunk {
            items.push(
                TransactWriteItem::builder()
                    .update(c.build().map_err(build)?)
                    .build(),
            );
        }
        match &patch.callback {
            Field::Keep => {}
            Field::Clear => items.push(self.callback_marker(id, None)?),
            Field::Set(c) => items.push(self.callback_marker(id, Some(c))?),
        }
        match self.transact(items).await? {
            Tx::Done => {
                // A claim reads no texts: a dispatcher needs the run, not
                // the source (a large one lives in S3, and one missing
                // object must not stop every claim behind it).
                let claim = patch.from == JobStatus::Pending && patch.to == JobStatus::Processing;
                let job = self.item(id, !claim).await?.job;
                if patch.from != patch.to {
                    self.publish_change(patch.from, &job).await;
                }
                if let Field::Set(c) = &patch.callback
                    && c.status == lotsawa_core::CallbackStatus::Pending
                {
                    self.schedule_callback(id, std::time::Duration::ZERO).await;
                }
                Ok(Applied::Done(Box::new(job)))
            }
            Tx::ConditionFailed => Ok(Applied::Lost),
        }
    }

    /// Pending jobs in queue order: by turn, then creation.
    /// The core's claim, reading each candidate without its texts (status,
    /// run and settings are all a claim needs): claims cost no S3 reads,
    /// and a job whose large source cannot be read does not stop the jobs
    /// behind it (its own chunk step fails it).
    async fn claim_next(&self, limit: u32, now: DateTime<Utc>) -> Result<Option<Job>, StoreError> {
        for id in self.next_pending(8).await? {
            let job = match self.item(id, false).await {
                Ok(j) => j.job,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            match self.claim(&job, limit, now).await? {
                TransitionOutcome::Applied(j) => return Ok(Some(j)),
                TransitionOutcome::LostRace(j) if j.status == JobStatus::Pending => {
                    return Ok(None);
                }
                TransitionOutcome::LostRace(_) | TransitionOutcome::NotAllowed(_) => continue,
            }
        }
        Ok(None)
    }

    async fn next_pending(&self, n: u32) -> Result<Vec<JobId>, StoreError> {
        let pks = (0..LIST_SHARDS).map(crate::items::queue_pk).collect();
        Ok(self
            .read_index("gsi4", pks, None, true, n.max(1) as usize, |_| true)
            .await?
            .into_iter()
            .map(|j| j.job.id)
            .collect())
    }

    async fn checkpoint(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
    ) -> Result<Checkpoint, StoreError> {
        let mut chunk = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(done.index))))
            .condition_expression("#st = :pending")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":done", s("completed"))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":att", n(done.attempts))
            .expression_attribute_values(":mem", AttributeValue::Bool(done.from_memory));
        let mut set = vec![
            "#st = :done",
            "#run = :run",
            "#att = #att + :att",
            "#mem = :mem",
        ];
        chunk = chunk
            .expression_attribute_names("#run", "run")
            .expression_attribute_names("#att", "attempts")
            .expression_attribute_names("#mem", "fromMemory");
        let (inline, key) = self
            .place_text(&done.translation, || {
                format!("chunks/{id}/{:06}.out.txt", done.index)
            })
            .await?;
        if let Some(key) = key {
            chunk = chunk
                .expression_attribute_values(":tkey", s(key))
                .expression_attribute_names("#tkey", "translationKey");
            set.push("#tkey = :tkey");
        }
        if let Some(text) = inline {
            chunk = chunk
                .expression_attribute_values(":tr", s(text))
                .expression_attribute_names("#tr", "translation");
            set.push("#tr = :tr");
        }
        if let Some(d) = done.duration_ms {
            chunk = chunk
                .expression_attribute_values(":d", n(d))
                .expression_attribute_names("#dur", "durationMs");
            set.push("#dur = :d");
        }
        if let Some(c) = done.confidence {
            chunk = chunk
                .expression_attribute_values(":c", n(c))
                .expression_attribute_names("#conf", "confidence");
            set.push("#conf = :c");
        }
        if let Some(ctx) = &done.context {
            chunk = chunk
                .expression_attribute_values(":ctx", s(ctx.clone()))
                .expression_attribute_names("#ctx", "context");
            set.push("#ctx = :ctx");
        }
        if let Some(w) = &done.warning {
            chunk = chunk
                .expression_attribute_values(":w", s(w.clone()))
                .expression_attribute_names("#w", "warning");
            set.push("#w = :w");
        }
        let chunk = chunk
            .update_expression(format!("SET {} REMOVE #err", set.join(", ")))
            .expression_attribute_names("#err", "error");
        let job = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("ADD chunksCompleted :one")
            .condition_expression("#st = :processing AND attempts = :run")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":processing", s("processing"))
            .expression_attribute_values(":run", n(run));
        let items = vec![
            TransactWriteItem::builder()
                .update(chunk.build().map_err(build)?)
                .build(),
            TransactWriteItem::builder()
                .update(job.build().map_err(build)?)
                .build(),
        ];
        match self.transact(items).await? {
            Tx::Done => Ok(Checkpoint::Recorded),
            Tx::ConditionFailed => {
                let now = self.item(id, false).await?.job;
                if now.status == JobStatus::Processing && now.attempts == run {
                    Ok(Checkpoint::AlreadyDone)
                } else {
                    Ok(Checkpoint::RunEnded)
                }
            }
        }
    }

    /// Step Functions drops failure causes on some emulators, so the message
    /// is kept here too.
    async fn note_chunk_error(&self, id: JobId, index: u32, error: &str) -> Result<(), StoreError> {
        let r = self
            .clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
            .update_expression("SET #err = :e, #att = #att + :one")
            .condition_expression("#st = :pending")
            .expression_attribute_names("#err", "error")
            .expression_attribute_names("#att", "attempts")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":pending", s("pending"))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"));
        match r {
            Ok(_) => Ok(()),
            // The chunk is no longer pending: nothing to note.
            Err(StoreError::ConditionFailed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One query from `from` to the last possible chunk key; the job item
    /// is read only when that finds nothing (to tell an unknown job).
    async fn chunks(&self, id: JobId, from: u32) -> Result<Vec<ChunkRecord>, StoreError> {
        self.chunks_between(id, from, MAX_CHUNKS).await
    }

    async fn chunks_between(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let chunks = self.chunk_range(id, from, to).await?;
        if chunks.is_empty() {
            self.item(id, false).await?;
        }
        Ok(chunks)
    }

    async fn get_brief(&self, id: JobId) -> Result<Job, StoreError> {
        Ok(self.item(id, false).await?.job)
    }

    /// The job item alone, eventually consistent: half a read unit.
    async fn pulse(&self, id: JobId) -> Result<Pulse, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out.item.ok_or(StoreError::NotFound(id))?;
        Ok(Pulse::of(&job_from_items(&item, None, None, None)?.job))
    }

    async fn progress_inputs(&self, job: &Job) -> Result<(u64, Vec<ChunkTiming>), StoreError> {
        let k = job.chunks_completed;
        let from = k.saturating_sub(lotsawa_core::progress::WINDOW as u32);
        // Statistics: an eventually consistent read is enough.
        let recent = self.chunk_query(job.id, from, k, false).await?;
        let timings = recent
            .iter()
            .filter(|c| c.run == job.attempts && !c.from_memory)
            .filter_map(|c| {
                c.duration_ms.map(|d| ChunkTiming {
                    chars: c.source.chars().count() as u64,
                    duration_ms: d,
                })
            })
            .collect::<Vec<_>>();
        // Remaining characters: estimated from the average chunk size so far.
        let left = u64::from(job.chunks_total.saturating_sub(k));
        let avg = if timings.is_empty() {
            0
        } else {
            timings.iter().map(|t| t.chars).sum::<u64>() / timings.len() as u64
        };
        Ok((left * avg, timings))
    }

    async fn memory_get(&self, key: &str) -> Result<Option<(String, Option<f64>)>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(format!("MEM#{key}"), "MEM")))
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.and_then(|i| {
            let t = i.get("translation")?.as_s().ok()?.clone();
            let c = i
                .get("confidence")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok());
            Some((t, c))
        }))
    }

    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> Result<(), StoreError> {
        if translation.len() > INLINE_LIMIT {
            // Too large for an item; the memory is a cache, not a record.
            return Ok(());
        }
        let mut item: Item = Self::key(format!("MEM#{key}"), "MEM");
        item.insert("translation".into(), s(translation));
        item.insert(
            "expiresAt".into(),
            n(Utc::now().timestamp() + i64::from(self.config.memory_ttl_days) * 86_400),
        );
        if let Some(c) = confidence {
            item.insert("confidence".into(), n(c));
        }
        let r = self
            .clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"));
        match r {
            Ok(_) | Err(StoreError::ConditionFailed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The status counters, kept in the transactions that create jobs and
    /// change their status, summed over their shards.
    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let mut keys: Vec<Item> = (0..LIST_SHARDS)
            .map(|i| Self::key(counts_pk(i), "COUNTS"))
            .collect();
        let items = self.batch_get(&mut keys, true).await?;
        Ok(JobStatus::ALL
            .iter()
            .map(|st| {
                let total: i64 = items
                    .iter()
                    .filter_map(|i| i.get(st.as_str())?.as_n().ok()?.parse::<i64>().ok())
                    .sum();
                (*st, total.max(0) as u64)
            })
            .collect())
    }

    /// The tenant's counter item, kept in the same transactions as the
    /// status counters; read consistently (one read unit).
    async fn pending_count(&self, tenant: &lotsawa_core::Tenant) -> Result<u64, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(tenant_counts_pk(tenant), "COUNTS")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let n = out
            .item
            .as_ref()
            .and_then(|i| i.get("pending")?.as_n().ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    }

    /// `IDEM#<tenant>#<sha256 of the key>`: a conditional put (none there,
    /// or one older than the window), else the one there. Expires by TTL
    /// two days after it is made.
    async fn idempotency_put(
        &self,
        record: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> Result<IdempotencyRecord, StoreError> {
        let pk = format!(
            "IDEM#{}#{}",
            record.tenant,
            lotsawa_core::auth::key_hash(&record.key)
        );
        let mut item = Self::key(pk.clone(), "IDEM");
        item.insert("fingerprint".into(), s(record.fingerprint.clone()));
        item.insert("jobId".into(), s(record.job_id.to_string()));
        item.insert("createdAt".into(), s(ts(record.created_at)));
        item.insert(
            "expiresAt".into(),
            n(record.created_at.timestamp() + 2 * 86_400),
        );
        let put = self
            .clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR createdAt < :cutoff")
            .expression_attribute_values(":cutoff", s(ts(expired_before)))
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"));
        match put {
            Ok(_) => return Ok(record.clone()),
            Err(StoreError::ConditionFailed(_)) => {}
            Err(e) => return Err(e),
        }
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(pk, "IDEM")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out
            .item
            .ok_or_else(|| StoreError::Corrupt("idempotency record vanished".into()))?;
        let get = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("idempotency record: no {k}")))
        };
        Ok(IdempotencyRecord {
            tenant: record.tenant.clone(),
            key: record.key.clone(),
            fingerprint: get("fingerprint")?,
            job_id: get("jobId")?
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| StoreError::Corrupt(e.0))?,
            created_at: DateTime::parse_from_rfc3339(&get("createdAt")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .with_timezone(&Utc),
        })
    }

    /// `RATE#<tenant>`: read, refill, and write back on the condition that
    /// nobody wrote it meanwhile (optimistic; tried again on a race).
    async fn take_token(
        &self,
        tenant: &lotsawa_core::Tenant,
        limit: lotsawa_core::rate::RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let key = Self::key(format!("RATE#{tenant}"), "RATE");
        for _ in 0..8 {
            let out = self
                .clients
                .ddb
                .get_item()
                .table_name(&self.config.table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(ddb("DynamoDB GetItem"))?;
            let prev_at = out
                .item
                .as_ref()
                .and_then(|i| i.get("at"))
                .and_then(|v| v.as_s().ok())
                .cloned();
            let tokens = out
                .item
                .as_ref()
                .and_then(|i| i.get("tokens"))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<f64>().ok());
            let at = prev_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let (left, wait) = lotsawa_core::rate::take(limit, tokens, at, now);
            let mut item = key.clone();
            item.insert("tokens".into(), n(left));
            item.insert("at".into(), s(ts(now)));
            // Unique per write, so the condition tells any other writer apart.
            item.insert("writer".into(), s(uuid::Uuid::new_v4().to_string()));
            item.insert("expiresAt".into(), n(now.timestamp() + 86_400));
            let mut put = self
                .clients
                .ddb
                .put_item()
                .table_name(&self.config.table)
                .set_item(Some(item));
            put = match out.item.as_ref().and_then(|i| i.get("writer")) {
                Some(w) => put
                    .condition_expression("writer = :w")
                    .expression_attribute_values(":w", w.clone()),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            match put.send().await.map_err(ddb("DynamoDB PutItem")) {
                Ok(_) => return Ok(wait),
                Err(StoreError::ConditionFailed(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Throttled(
            "the tenant's rate bucket kept changing".into(),
        ))
    }

    async fn batch_put(&self, batch: &lotsawa_core::batch::Batch) -> Result<(), StoreError> {
        let created = ts(batch.created_at);
        let items = serde_json::to_string(&batch.items).map_err(build)?;
        let mut item = Item::new();
        item.insert("pk".into(), s(crate::items::batch_pk(batch.id)));
        item.insert("sk".into(), s("BATCH"));
        item.insert("tenant".into(), s(batch.tenant.as_str()));
        item.insert("createdAt".into(), s(created.clone()));
        item.insert("items".into(), s(items));
        item.insert("gsi2pk".into(), s(crate::items::batches_pk(&batch.tenant)));
        item.insert("gsi2sk".into(), s(format!("{created}#{}", batch.id)));
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"))?;
        Ok(())
    }

    async fn batch_get(
        &self,
        id: lotsawa_core::BatchId,
    ) -> Result<lotsawa_core::batch::Batch, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(crate::items::batch_pk(id), "BATCH")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out.item.ok_or(StoreError::BatchNotFound(id))?;
        batch_from_item(id, &item)
    }

    async fn batch_list(
        &self,
        tenant: &lotsawa_core::Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<lotsawa_core::batch::Batch>, Option<String>), StoreError> {
        let start = match after {
            Some(pos) => {
                let id: lotsawa_core::BatchId = pos
                    .rsplit_once('#')
                    .and_then(|(_, id)| id.parse().ok())
                    .ok_or_else(|| StoreError::InvalidCursor(pos.to_owned()))?;
                let mut key = Self::key(crate::items::batch_pk(id), "BATCH");
                key.insert("gsi2pk".into(), s(crate::items::batches_pk(tenant)));
                key.insert("gsi2sk".into(), s(pos));
                Some(key)
            }
            None => None,
        };
        let out = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s(crate::items::batches_pk(tenant)))
            .scan_index_forward(false)
            .limit(limit.max(1) as i32 + 1)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(ddb("DynamoDB Query"))?;
        let mut positions: Vec<String> = out
            .items()
            .iter()
            .filter_map(|i| i.get("gsi2sk").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        let more = positions.len() > limit as usize;
        positions.truncate(limit as usize);
        let mut batches = Vec::with_capacity(positions.len());
        for pos in &positions {
            let id = pos
                .rsplit_once('#')
                .and_then(|(_, id)| id.parse().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("batch index key {pos}")))?;
            match JobStore::batch_get(self, id).await {
                Ok(b) => batches.push(b),
                Err(StoreError::BatchNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let next = if more {
            positions.last().cloned()
        } else {
            None
        };
        Ok((batches, next))
    }

    /// The job and settings items of 50 jobs per BatchGetItem.
    async fn get_briefs(&self, ids: &[JobId]) -> Result<Vec<Job>, StoreError> {
        let mut by_id: HashMap<JobId, Job> = HashMap::with_capacity(ids.len());
        for part in ids.chunks(50) {
            let mut keys: Vec<Item> = part
                .iter()
                .flat_map(|id| {
                    [
                        Self::key(job_pk(*id), "JOB"),
                        Self::key(job_pk(*id), CONFIG_SK),
                    ]
                })
                .collect();
            let items = self.batch_get(&mut keys, true).await?;
            let mut grouped: HashMap<String, (Option<&Item>, Option<&Item>)> = HashMap::new();
            for item in &items {
                let (Some(pk), Some(sk)) = (
                    item.get("pk").and_then(|v| v.as_s().ok()),
                    item.get("sk").and_then(|v| v.as_s().ok()),
                ) else {
                    continue;
                };
                let slot = grouped.entry(pk.clone()).or_default();
                if sk == "JOB" {
                    slot.0 = Some(item);
                } else if sk == CONFIG_SK {
                    slot.1 = Some(item);
                }
            }
            for (job_item, config) in grouped.into_values() {
                if let Some(job_item) = job_item {
                    let j = job_from_items(job_item, config, None, None)?.job;
                    by_id.insert(j.id, j);
                }
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn key_put(&self, record: &ApiKeyRecord, hash: &str) -> Result<(), StoreError> {
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(new_key_item(record, hash)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"))?;
        Ok(())
    }

    async fn key_find(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(key_pk(hash), "KEY")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.map(|i| key_from_item(&i)).transpose()?)
    }

    /// The `KEYS` partition of `gsi2`, then the key items.
    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        let resp = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk AND gsi2sk <= :now")
            .expression_attribute_values(":pk", s(CALLBACKS_PK))
            .expression_attribute_values(":now", s(format!("{}#~", ts(now))))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(ddb("DynamoDB Query"))?;
        let mut out = Vec::new();
        for item in resp.items() {
            let Some(id) = item
                .get("gsi2sk")
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| sk.rsplit('#').next())
                .and_then(|id| id.parse::<JobId>().ok())
            else {
                continue;
            };
            match self.get(id).await {
                Ok(job)
                    if job
                        .callback
                        .as_ref()
                        .is_some_and(|c| c.status == lotsawa_core::CallbackStatus::Pending) =>
                {
                    out.push(job);
                }
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn callback_update(
        &self,
        id: JobId,
        before: &lotsawa_core::Callback,
        after: &lotsawa_core::Callback,
    ) -> Result<bool, StoreError> {
        let update = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET #cb = :after")
            .condition_expression("#cb = :before")
            .expression_attribute_names("#cb", "callback")
            .expression_attribute_values(":after", s(serde_json::to_string(after).map_err(build)?))
            .expression_attribute_values(
                ":before",
                s(serde_json::to_string(before).map_err(build)?),
            )
            .build()
            .map_err(build)?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            self.callback_marker(id, Some(after))?,
        ];
        match self.transact(items).await? {
            Tx::Done => Ok(true),
            Tx::ConditionFailed => Ok(false),
        }
    }

    async fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let query = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s("KEYS"));
        let keys: Vec<Item> = self
            .query_all(query)
            .await?
            .into_iter()
            .filter_map(|i| {
                Some(Self::key(
                    i.get("pk")?.as_s().ok()?.clone(),
                    i.get("sk")?.as_s().ok()?,
                ))
            })
            .collect();
        let mut out = Vec::new();
        for part in keys.chunks(100) {
            for item in self.batch_get(&mut part.to_vec(), true).await? {
                out.push(key_from_item(&item)?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let query = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s("KEYS"));
        let suffix = format!("#{id}");
        let Some(pk) = self.query_all(query).await?.into_iter().find_map(|i| {
            i.get("gsi2sk")?
                .as_s()
                .ok()?
                .ends_with(&suffix)
                .then(|| i.get("pk")?.as_s().ok().cloned())?
        }) else {
            return Ok(false);
        };
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(pk, "KEY")))
            .update_expression("SET revokedAt = if_not_exists(revokedAt, :at)")
            .expression_attribute_values(":at", s(ts(at)))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(true)
    }

    async fn slots_in_use(&self) -> Result<u32, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out
            .item
            .and_then(|i| {
                i.get("count")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0))
    }
}

/// Counter items behind the cloud's `/metrics`.
pub const METRIC_SHARDS: u32 = 8;

/// What one step of a worker adds to the counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Counted<'a> {
    /// A provider call and its outcome (one of
    /// [`lotsawa_core::metrics::ATTEMPT_OUTCOMES`]); `seconds` for successes.
    Attempt {
        /// Outcome label.
        outcome: &'static str,
        /// Engine that answered.
        engine: &'a str,
        /// How long a successful call took.
        seconds: Option<f64>,
        /// Whether the answer was asked for again after the quality checks.
        quality_retried: bool,
    },
    /// A chunk served from the translation memory.
    MemoryHit,
    /// An answer to the state machine that Step Functions refused for a
    /// reason other than the execution having ended.
    AnswerFailed,
}

/// The `ADD` update of a counter item. Attribute names: `attempts#<outcome>`,
/// `dur#<engine>#<bucket>` (non-cumulative counts), `dur#<engine>#sum`,
/// `memory_hits`, `quality_retries`.
fn counter_update(
    counted: &Counted<'_>,
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut adds: Vec<(String, AttributeValue)> = Vec::new();
    match counted {
        Counted::Attempt {
            outcome,
            engine,
            seconds,
            quality_retried,
        } => {
            adds.push((format!("attempts#{outcome}"), n(1)));
            if let Some(secs) = seconds {
                let bucket = lotsawa_core::metrics::bucket_index(*secs);
                adds.push((format!("dur#{engine}#{bucket}"), n(1)));
                adds.push((format!("dur#{engine}#sum"), n(secs)));
            }
            if *quality_retried {
                adds.push(("quality_retries".to_owned(), n(1)));
            }
        }
        Counted::MemoryHit => adds.push(("memory_hits".to_owned(), n(1))),
        Counted::AnswerFailed => adds.push(("answer_failures".to_owned(), n(1))),
    }
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut parts = Vec::new();
    for (i, (name, value)) in adds.into_iter().enumerate() {
        names.insert(format!("#a{i}"), name);
        values.insert(format!(":v{i}"), value);
        parts.push(format!("#a{i} :v{i}"));
    }
    (format!("ADD {}", parts.join(", ")), names, values)
}

/// Sum counter items into totals (unknown attributes are ignored).
pub fn totals_from_items(items: &[Item]) -> ChunkTotals {
    let mut t = ChunkTotals::default();
    for item in items {
        for (k, v) in item {
            let Some(num) = v.as_n().ok().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let count = num.max(0.0) as u64;
            if let Some(outcome) = k.strip_prefix("attempts#") {
                *t.attempts.entry(outcome.to_owned()).or_default() += count;
            } else if let Some(rest) = k.strip_prefix("dur#") {
                let Some((engine, what)) = rest.rsplit_once('#') else {
                    continue;
                };
                let d = t.durations.entry(engine.to_owned()).or_default();
                if what == "sum" {
                    d.sum += num;
                } else if let Some(slot) = what
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| d.buckets.get_mut(i))
                {
                    *slot += count;
                }
            } else if k == "memory_hits" {
                t.memory_hits += count;
            } else if k == "quality_retries" {
                t.quality_retries += count;
            } else if k == "answer_failures" {
                t.answer_failures += count;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(item: &mut Item, counted: &Counted<'_>) {
        // What DynamoDB does with the ADD update, for the test.
        let (expr, names, values) = counter_update(counted);
        for part in expr.trim_start_matches("ADD ").split(", ") {
            let (name, value) = part.split_once(' ').expect("ADD #a :v");
            let attr = names[name].clone();
            let add: f64 = values[value].as_n().expect("number").parse().expect("f64");
            let old: f64 = item
                .get(&attr)
                .and_then(|v| v.as_n().ok())
                .map_or(0.0, |v| v.parse().expect("f64"));
            item.insert(attr, n(old + add));
        }
    }

    #[test]
    fn counters_over_shards_sum_to_the_totals() {
        let mut shards = vec![Item::new(), Item::new(), Item::new()];
        let steps = [
            Counted::Attempt {
                outcome: "success",
                engine: "openai",
                seconds: Some(0.2),
                quality_retried: false,
            },
            Counted::Attempt {
                outcome: "transient_error",
                engine: "openai",
                seconds: None,
                quality_retried: false,
            },
            Counted::Attempt {
                outcome: "success",
                engine: "openai",
                seconds: Some(3.0),
                quality_retried: true,
            },
            Counted::Attempt {
                outcome: "success",
                engine: "bedrock",
                seconds: Some(0.2),
                quality_retried: false,
            },
            Counted::MemoryHit,
        ];
        for (i, step) in steps.iter().enumerate() {
            apply(&mut shards[i % 3], step);
        }
        shards[0].insert("pk".into(), s("METRICS#0"));
        let t = totals_from_items(&shards);
        assert_eq!(t.attempts["success"], 3);
        assert_eq!(t.attempts["transient_error"], 1);
        assert_eq!(t.memory_hits, 1);
        assert_eq!(t.quality_retries, 1);
        let openai = &t.durations["openai"];
        assert_eq!(openai.count(), 2);
        assert_eq!(openai.buckets[lotsawa_core::metrics::bucket_index(0.2)], 1);
        assert_eq!(openai.buckets[lotsawa_core::metrics::bucket_index(3.0)], 1);
        assert!((openai.sum - 3.2).abs() < 1e-9);
        assert_eq!(t.durations["bedrock"].count(), 1);
    }
}
