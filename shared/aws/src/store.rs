//! DynamoDB (with S3 for large texts) as Lotsawa's job store in the cloud.
//! Every status change is a conditional write on the old status and run
//! number; taking and releasing a concurrency slot happens in the same
//! transaction as the status change it belongs to.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, Select, TransactWriteItem, Update, WriteRequest,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use lotsawa_core::metrics::ChunkTotals;
use lotsawa_core::{ChunkRecord, JobId, JobResult, JobStatus, JobType, Transition};

use crate::config::CloudConfig;
use crate::items::{
    ChunkItem, Item, JobItem, chunk_from_item, chunk_sk, job_from_item, job_pk, n, new_chunk_item,
    new_job_item, s, ts,
};

/// Texts larger than this many bytes go to S3 instead of the item.
pub const INLINE_LIMIT: usize = 100_000;

/// A cloud backend failure.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An AWS call failed.
    #[error("{service}: {message}")]
    Aws {
        /// Which service.
        service: &'static str,
        /// The SDK's full error context.
        message: String,
    },
    /// A stored item did not parse.
    #[error(transparent)]
    Corrupt(#[from] crate::items::Corrupt),
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job's status does not allow the change.
    #[error("job {id} is {status}; {what}")]
    Conflict {
        /// Job.
        id: JobId,
        /// Its status.
        status: JobStatus,
        /// What was refused.
        what: &'static str,
    },
    /// A request could not be built.
    #[error("invalid request: {0}")]
    Build(String),
}

fn aws<E: std::error::Error + 'static>(service: &'static str) -> impl Fn(E) -> CloudError {
    move |e| CloudError::Aws {
        service,
        message: DisplayErrorContext(&e).to_string(),
    }
}

fn build<E: std::fmt::Display>(e: E) -> CloudError {
    CloudError::Build(e.to_string())
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
    /// S3 (path-style addressing, which works on AWS and on emulators).
    pub s3: aws_sdk_s3::Client,
}

impl Clients {
    /// Clients on the standard AWS configuration chain (AWS_ENDPOINT_URL
    /// points them at an emulator).
    pub async fn from_env() -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk(&sdk)
    }

    /// Clients from an SDK configuration.
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build();
        Self {
            ddb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            sfn: aws_sdk_sfn::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
        }
    }
}

/// A page of jobs.
#[derive(Debug, Clone)]
pub struct ItemPage {
    /// Jobs, newest first.
    pub jobs: Vec<JobItem>,
    /// Cursor of the next page.
    pub next: Option<String>,
}

/// How a job run ends.
#[derive(Debug, Clone)]
pub enum Ending {
    /// With its result.
    Completed(JobResult),
    /// With an error, blaming a chunk when there is one.
    Failed {
        /// The job's error.
        error: String,
        /// The chunk that failed.
        chunk: Option<u32>,
    },
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

    /// Store a text in S3.
    pub async fn put_text(
        &self,
        key: &str,
        text: &str,
        content_type: &str,
    ) -> Result<(), CloudError> {
        self.clients
            .s3
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .body(text.as_bytes().to_vec().into())
            .send()
            .await
            .map_err(aws("s3"))?;
        Ok(())
    }

    /// Read an S3 object as bytes.
    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, CloudError> {
        let out = self
            .clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(aws("s3"))?;
        let bytes = out.body.collect().await.map_err(|e| CloudError::Aws {
            service: "s3",
            message: e.to_string(),
        })?;
        Ok(bytes.into_bytes().to_vec())
    }

    async fn get_text(&self, key: &str) -> Result<String, CloudError> {
        let bytes = self.get_bytes(&self.config.bucket, key).await?;
        String::from_utf8(bytes)
            .map_err(|_| CloudError::Build(format!("s3 object {key} is not UTF-8")))
    }

    /// Store a new pending job and its chunks.
    pub async fn put_new_job(
        &self,
        job: &lotsawa_core::Job,
        chunks: &[String],
    ) -> Result<(), CloudError> {
        let (inline, key) = if job.source.len() > INLINE_LIMIT {
            let key = format!("sources/{}.txt", job.id);
            self.put_text(&key, &job.source, "text/plain; charset=utf-8")
                .await?;
            (None, Some(key))
        } else {
            (Some(job.source.as_str()), None)
        };
        // Chunks first: a job item is only visible once its ledger is whole.
        let mut requests = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let index = i as u32;
            let item = if c.len() > INLINE_LIMIT {
                let key = format!("chunks/{}/{index:06}.txt", job.id);
                self.put_text(&key, c, "text/plain; charset=utf-8").await?;
                new_chunk_item(job.id, index, None, c.chars().count(), Some(&key))
            } else {
                new_chunk_item(job.id, index, Some(c), c.chars().count(), None)
            };
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
                    .map_err(aws("dynamodb"))?;
                match out.unprocessed_items {
                    Some(u) if !u.is_empty() => {
                        pending = u;
                        tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
                    }
                    _ => break,
                }
            }
        }
        let item = new_job_item(job, inline, key.as_deref())?;
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// Store a job that failed before it could start (e.g. an unusable upload).
    pub async fn put_failed_job(&self, job: &lotsawa_core::Job) -> Result<(), CloudError> {
        let mut item = new_job_item(job, Some(""), None)?;
        if let Some(e) = &job.error {
            item.insert("error".into(), s(e.clone()));
        }
        if let Some(t) = job.completed_at {
            item.insert("completedAt".into(), s(ts(t)));
            item.insert("expiresAt".into(), self.ttl(t));
        }
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// Queue a job run for the dispatcher (FIFO, deduplicated per run).
    pub async fn enqueue(&self, id: JobId, run: u32, segment: u32) -> Result<(), CloudError> {
        let body =
            serde_json::json!({"jobId": id.to_string(), "generation": run, "segment": segment});
        self.clients
            .sqs
            .send_message()
            .queue_url(&self.config.job_queue_url)
            .message_body(body.to_string())
            .message_group_id("jobs")
            .message_deduplication_id(format!("{id}-{run}-{segment}"))
            .send()
            .await
            .map_err(aws("sqs"))?;
        Ok(())
    }

    /// A job (strongly consistent), with its large source or result read
    /// from S3 when `with_texts`.
    pub async fn get(&self, id: JobId, with_texts: bool) -> Result<JobItem, CloudError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        let item = out.item.ok_or(CloudError::NotFound(id))?;
        let mut job = job_from_item(&item)?;
        if with_texts && let Some(k) = job.result_key.clone() {
            let text = self.get_text(&k).await?;
            job.job.result =
                Some(serde_json::from_str(&text).map_err(|e| CloudError::Build(e.to_string()))?);
        }
        Ok(job)
    }

    /// One chunk, with its source read from S3 when large.
    pub async fn chunk(&self, id: JobId, index: u32) -> Result<Option<ChunkItem>, CloudError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let mut c = chunk_from_item(&item)?;
        if let Some(k) = c.source_key.clone() {
            c.record.source = self.get_text(&k).await?;
        }
        Ok(Some(c))
    }

    /// Chunks with index in `from..to`, in order.
    pub async fn chunks(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, CloudError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", s(job_pk(id)))
                .expression_attribute_values(":a", s(chunk_sk(from)))
                .expression_attribute_values(":b", s(chunk_sk(to - 1)))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws("dynamodb"))?;
            for item in page.items() {
                let mut c = chunk_from_item(item)?;
                if let Some(k) = c.source_key.clone() {
                    c.record.source = self.get_text(&k).await?;
                }
                out.push(c.record);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Characters left and timings of recent chunks of run `run`.
    pub async fn progress_inputs(
        &self,
        job: &lotsawa_core::Job,
    ) -> Result<(u64, Vec<lotsawa_core::progress::ChunkTiming>), CloudError> {
        let k = job.chunks_completed;
        let from = k.saturating_sub(lotsawa_core::progress::WINDOW as u32);
        let recent = self.chunks(job.id, from, k).await?;
        let timings = recent
            .iter()
            .filter(|c| c.run == job.attempts && !c.from_memory)
            .filter_map(|c| {
                c.duration_ms.map(|d| lotsawa_core::progress::ChunkTiming {
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

    /// Cancel a pending or processing job; a processing job's slot is
    /// released in the same transaction and its execution stopped.
    pub async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<JobItem, CloudError> {
        let current = self.get(id, false).await?;
        let from = current.job.status;
        let to = from
            .apply(Transition::Cancel)
            .map_err(|_| CloudError::Conflict {
                id,
                status: from,
                what: "only pending or processing jobs can be cancelled",
            })?;
        let run = current.job.attempts;
        let mut job_update = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression(
                "SET #st = :to, cancelledAt = :now, gsi1pk = :g1, expiresAt = :ttl REMOVE slot",
            )
            .condition_expression("#st = :from AND attempts = :run")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(from.as_str()))
            .expression_attribute_values(":now", s(ts(now)))
            .expression_attribute_values(":g1", s(format!("STATUS#{}", to.as_str())))
            .expression_attribute_values(":ttl", self.ttl(now))
            .expression_attribute_values(":run", n(run));
        let holds_slot = current.slot == Some(run) && from == JobStatus::Processing;
        if holds_slot {
            job_update =
                job_update.condition_expression("#st = :from AND attempts = :run AND slot = :run");
        }
        let mut items = vec![
            TransactWriteItem::builder()
                .update(job_update.build().map_err(build)?)
                .build(),
        ];
        if holds_slot {
            items.push(self.release_item()?);
        }
        self.transact(items).await.map_err(|e| match e {
            CloudError::Aws { .. } => CloudError::Conflict {
                id,
                status: from,
                what: "it changed while being cancelled; try again",
            },
            other => other,
        })?;
        if let Some(arn) = &current.execution_arn
            && from == JobStatus::Processing
            && let Err(e) = self
                .clients
                .sfn
                .stop_execution()
                .execution_arn(arn)
                .error("Lotsawa.Cancelled")
                .cause("job cancelled")
                .send()
                .await
        {
            tracing::warn!(job_id = %id, error = %DisplayErrorContext(&e), "stopping the execution failed");
        }
        self.get(id, false).await
    }

    fn release_item(&self) -> Result<TransactWriteItem, CloudError> {
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

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), CloudError> {
        self.clients
            .ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// Queue a failed or cancelled job again: only unfinished chunks run.
    pub async fn retry(&self, id: JobId) -> Result<JobItem, CloudError> {
        let current = self.get(id, false).await?;
        let from = current.job.status;
        let to = from
            .apply(Transition::Retry)
            .map_err(|_| CloudError::Conflict {
                id,
                status: from,
                what: "only failed or cancelled jobs can be retried",
            })?;
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression(
                "SET #st = :to, gsi1pk = :g1 REMOVE #err, completedAt, cancelledAt, startedAt, #res, resultKey, expiresAt, executionArn",
            )
            .condition_expression("#st = :from AND attempts = :run")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#err", "error")
            .expression_attribute_names("#res", "result")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(from.as_str()))
            .expression_attribute_values(":g1", s(format!("STATUS#{}", to.as_str())))
            .expression_attribute_values(":run", n(current.job.attempts))
            .send()
            .await
            .map_err(|_| CloudError::Conflict {
                id,
                status: from,
                what: "it changed while being retried; try again",
            })?;
        // The chunk that failed (the first unfinished one) runs again.
        let k = current.job.chunks_completed;
        let _ = self
            .clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(k))))
            .update_expression("SET #st = :p")
            .condition_expression("#st = :f")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":p", s("pending"))
            .expression_attribute_values(":f", s("failed"))
            .send()
            .await;
        self.enqueue(id, current.job.attempts + 1, 0).await?;
        self.get(id, false).await
    }

    /// Take a concurrency slot and start run `run` of a pending job, in one
    /// transaction. `Ok(false)`: no slot free, or the job is not pending.
    pub async fn claim(&self, id: JobId, run: u32, now: DateTime<Utc>) -> Result<bool, CloudError> {
        let take = TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
                    .update_expression("SET #c = if_not_exists(#c, :zero) + :one")
                    .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":limit", n(self.config.concurrency))
                    .build()
                    .map_err(build)?,
            )
            .build();
        let start = TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(job_pk(id), "JOB")))
                    .update_expression(
                        "SET #st = :to, attempts = :run, startedAt = :now, slot = :run, gsi1pk = :g1 REMOVE completedAt, executionArn",
                    )
                    .condition_expression("#st = :pending AND attempts = :prev")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":to", s("processing"))
                    .expression_attribute_values(":pending", s("pending"))
                    .expression_attribute_values(":run", n(run))
                    .expression_attribute_values(":prev", n(run.saturating_sub(1)))
                    .expression_attribute_values(":now", s(ts(now)))
                    .expression_attribute_values(":g1", s("STATUS#processing"))
                    .build()
                    .map_err(build)?,
            )
            .build();
        match self
            .clients
            .ddb
            .transact_write_items()
            .transact_items(take)
            .transact_items(start)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("TransactionCanceledException") => Ok(false),
            Err(e) => Err(aws("dynamodb")(e)),
        }
    }

    /// Jobs holding slots, for reconciliation.
    pub async fn processing(&self) -> Result<Vec<JobItem>, CloudError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .list(Some(JobStatus::Processing), None, 100, cursor)
                .await?;
            out.extend(page.jobs);
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// Remember the S3 object a job was ingested from.
    pub async fn set_ingest_key(&self, id: JobId, key: &str) -> Result<(), CloudError> {
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET ingestKey = :k")
            .expression_attribute_values(":k", s(key))
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// Record the execution of run `run`.
    pub async fn set_execution(&self, id: JobId, run: u32, arn: &str) -> Result<(), CloudError> {
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET executionArn = :arn")
            .condition_expression("attempts = :run")
            .expression_attribute_values(":arn", s(arn))
            .expression_attribute_values(":run", n(run))
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// Commit a chunk's outcome and count it, if the job still runs `run`.
    /// `Ok(false)` when the job moved on or the chunk was already done.
    pub async fn complete_chunk(
        &self,
        id: JobId,
        run: u32,
        done: &lotsawa_core::ChunkRecord,
    ) -> Result<bool, CloudError> {
        let translation = done.translation.clone().unwrap_or_default();
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
        if translation.len() > INLINE_LIMIT {
            let key = format!("chunks/{id}/{:06}.out.txt", done.index);
            self.put_text(&key, &translation, "text/plain; charset=utf-8")
                .await?;
            chunk = chunk
                .expression_attribute_values(":tkey", s(key))
                .expression_attribute_names("#tkey", "translationKey");
            set.push("#tkey = :tkey");
        } else {
            chunk = chunk
                .expression_attribute_values(":tr", s(translation))
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
        match self
            .clients
            .ddb
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(chunk.build().map_err(build)?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(job.build().map_err(build)?)
                    .build(),
            )
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("TransactionCanceledException") => Ok(false),
            Err(e) => Err(aws("dynamodb")(e)),
        }
    }

    /// Note a chunk's failed attempt (Step Functions drops failure causes on
    /// some emulators, so the message is kept here too).
    pub async fn note_chunk_error(
        &self,
        id: JobId,
        index: u32,
        error: &str,
    ) -> Result<(), CloudError> {
        self.clients
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
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// End run `run` of a processing job and release its slot, atomically.
    /// `Ok(false)` when the job was no longer processing that run.
    pub async fn finish(
        &self,
        id: JobId,
        run: u32,
        ending: Ending,
        now: DateTime<Utc>,
    ) -> Result<bool, CloudError> {
        let current = self.get(id, false).await?;
        if current.job.status != JobStatus::Processing || current.job.attempts != run {
            return Ok(false);
        }
        let mut job = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":processing", s("processing"))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":now", s(ts(now)))
            .expression_attribute_values(":ttl", self.ttl(now));
        let mut chunk_update = None;
        match &ending {
            Ending::Completed(result) => {
                let text = serde_json::to_string(result).map_err(build)?;
                let to = JobStatus::Processing
                    .apply(Transition::Complete)
                    .map_err(build)?;
                job = job
                    .expression_attribute_values(":to", s(to.as_str()))
                    .expression_attribute_values(":g1", s(format!("STATUS#{}", to.as_str())));
                if text.len() > INLINE_LIMIT {
                    let key = format!("job-results/{id}.json");
                    self.put_text(&key, &text, "application/json").await?;
                    job = job
                        .expression_attribute_values(":rk", s(key))
                        .update_expression("SET #st = :to, gsi1pk = :g1, completedAt = :now, expiresAt = :ttl, resultKey = :rk REMOVE slot");
                } else {
                    job = job
                        .expression_attribute_values(":res", s(text))
                        .update_expression("SET #st = :to, gsi1pk = :g1, completedAt = :now, expiresAt = :ttl, #res = :res REMOVE slot")
                        .expression_attribute_names("#res", "result");
                }
                job = job.condition_expression(
                    "#st = :processing AND attempts = :run AND chunksCompleted = chunksTotal",
                );
            }
            Ending::Failed { error, chunk } => {
                let to = JobStatus::Processing
                    .apply(Transition::Fail)
                    .map_err(build)?;
                job = job
                    .expression_attribute_values(":to", s(to.as_str()))
                    .expression_attribute_values(":g1", s(format!("STATUS#{}", to.as_str())))
                    .expression_attribute_values(":err", s(error.clone()))
                    .expression_attribute_names("#err", "error")
                    .update_expression("SET #st = :to, gsi1pk = :g1, completedAt = :now, expiresAt = :ttl, #err = :err REMOVE slot")
                    .condition_expression("#st = :processing AND attempts = :run");
                if let Some(index) = chunk {
                    chunk_update = Some(
                        Update::builder()
                            .table_name(&self.config.table)
                            .set_key(Some(Self::key(job_pk(id), &chunk_sk(*index))))
                            .update_expression("SET #st = :failed")
                            .condition_expression("#st = :pending")
                            .expression_attribute_names("#st", "status")
                            .expression_attribute_values(":failed", s("failed"))
                            .expression_attribute_values(":pending", s("pending"))
                            .build()
                            .map_err(build)?,
                    );
                }
            }
        }
        let mut items = vec![
            TransactWriteItem::builder()
                .update(job.build().map_err(build)?)
                .build(),
        ];
        if current.slot == Some(run) {
            items.push(self.release_item()?);
        }
        if let Some(c) = chunk_update {
            items.push(TransactWriteItem::builder().update(c).build());
        }
        match self
            .clients
            .ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("TransactionCanceledException") => Ok(false),
            Err(e) => Err(aws("dynamodb")(e)),
        }
    }

    /// Jobs newest first, by status or type, with an opaque cursor.
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        kind: Option<JobType>,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<ItemPage, CloudError> {
        let (index, pk_name, sk_name, pk) = match (status, kind) {
            (Some(st), _) => (
                "gsi1",
                "gsi1pk",
                "gsi1sk",
                format!("STATUS#{}", st.as_str()),
            ),
            (None, Some(k)) => ("gsi3", "gsi3pk", "gsi3sk", format!("TYPE#{}", k.as_str())),
            (None, None) => ("gsi2", "gsi2pk", "gsi2sk", "ALL".to_owned()),
        };
        let mut start =
            match cursor {
                Some(c) => Some(decode_cursor(&c).ok_or_else(|| {
                    CloudError::Build(format!("cursor '{c}' is not a valid cursor"))
                })?),
                None => None,
            };
        // One more than asked tells whether there is a next page.
        let want = limit as usize + 1;
        let mut jobs = Vec::new();
        loop {
            let page = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .index_name(index)
                .key_condition_expression(format!("{pk_name} = :pk"))
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(false)
                .limit((want - jobs.len()).min(200) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws("dynamodb"))?;
            for item in page.items() {
                let j = job_from_item(item)?;
                if status.is_some() && kind.is_some_and(|k| k != j.job.kind) {
                    continue;
                }
                jobs.push(j);
            }
            match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) if jobs.len() < want => start = Some(k),
                _ => break,
            }
        }
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        let next = if more {
            jobs.last().map(|j| {
                let sk = crate::items::list_sk(&ts(j.job.created_at), j.job.id);
                encode_cursor(&[
                    ("pk", job_pk(j.job.id)),
                    ("sk", "JOB".to_owned()),
                    (pk_name, pk.clone()),
                    (sk_name, sk),
                ])
            })
        } else {
            None
        };
        Ok(ItemPage { jobs, next })
    }

    /// Jobs in each status.
    pub async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, CloudError> {
        let mut out = Vec::new();
        for st in JobStatus::ALL {
            let mut total = 0u64;
            let mut start = None;
            loop {
                let page = self
                    .clients
                    .ddb
                    .query()
                    .table_name(&self.config.table)
                    .index_name("gsi1")
                    .key_condition_expression("gsi1pk = :pk")
                    .expression_attribute_values(":pk", s(format!("STATUS#{}", st.as_str())))
                    .select(Select::Count)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(aws("dynamodb"))?;
                total += page.count.max(0) as u64;
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
            out.push((*st, total));
        }
        Ok(out)
    }

    /// Slots in use.
    pub async fn slots_in_use(&self) -> Result<u32, CloudError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(out
            .item
            .and_then(|i| {
                i.get("count")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0))
    }

    /// A translation memory entry.
    pub async fn memory_get(&self, key: &str) -> Result<Option<(String, Option<f64>)>, CloudError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(format!("MEM#{key}"), "MEM")))
            .send()
            .await
            .map_err(aws("dynamodb"))?;
        Ok(out.item.and_then(|i| {
            let t = i.get("translation")?.as_s().ok()?.clone();
            let c = i
                .get("confidence")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok());
            Some((t, c))
        }))
    }

    /// Remember a translation (the first stays).
    pub async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> Result<(), CloudError> {
        if translation.len() > INLINE_LIMIT {
            return Ok(());
        }
        let mut item: Item = Self::key(format!("MEM#{key}"), "MEM");
        item.insert("translation".into(), s(translation));
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
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(aws("dynamodb")(e)),
        }
    }

    /// Add a chunk attempt (or a translation-memory hit) to the counters
    /// behind `/metrics`. The counters are spread over [`METRIC_SHARDS`]
    /// items so that no one item takes every worker's writes.
    pub async fn count(&self, counted: &Counted<'_>) -> Result<(), CloudError> {
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
            .map_err(aws("dynamodb"))?;
        Ok(())
    }

    /// The counters of every shard, summed.
    pub async fn chunk_totals(&self) -> Result<ChunkTotals, CloudError> {
        let mut keys: Vec<Item> = (0..METRIC_SHARDS)
            .map(|i| Self::key(format!("METRICS#{i}"), "METRICS"))
            .collect();
        let mut items = Vec::new();
        for _ in 0..5 {
            if keys.is_empty() {
                break;
            }
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .build()
                .map_err(build)?;
            let out = self
                .clients
                .ddb
                .batch_get_item()
                .request_items(&self.config.table, request)
                .send()
                .await
                .map_err(aws("dynamodb"))?;
            if let Some(found) = out.responses.and_then(|mut r| r.remove(&self.config.table)) {
                items.extend(found);
            }
            if let Some(rest) = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.config.table))
            {
                keys = rest.keys;
            }
        }
        Ok(totals_from_items(&items))
    }

    /// The job item after an update, for callers that need the new state.
    pub async fn refresh(&self, id: JobId) -> Result<JobItem, CloudError> {
        self.get(id, true).await
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
            }
        }
    }
    t
}

/// Encode a listing position as an opaque cursor.
pub fn encode_cursor(parts: &[(&str, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = parts
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::Value::Object(map).to_string())
}

/// Decode a cursor into DynamoDB's ExclusiveStartKey.
pub fn decode_cursor(cursor: &str) -> Option<HashMap<String, AttributeValue>> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let map = v.as_object()?;
    if !map.contains_key("pk") || map.len() != 4 {
        return None;
    }
    map.iter()
        .map(|(k, v)| Some((k.clone(), s(v.as_str()?))))
        .collect()
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
