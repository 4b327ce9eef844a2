//! What moto never does but DynamoDB does: cancel a transaction for a
//! conflict with another one, throttle, answer 500. An interceptor on the
//! SDK client makes chosen calls fail that way (the request is turned into
//! one moto refuses, so nothing is written, and its answer replaced); after
//! every scenario each job must be terminal and no concurrency slot held.

use lotsawa_conformance::JobFactory;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use chrono::Utc;
use lotsawa_aws::{Clients, DynamoStore};
use lotsawa_core::store::{Change, Checkpoint, ChunkDone, TransitionOutcome, transition};
use lotsawa_core::{
    AdmissionStore, Job, JobId, JobResult, JobStatus, JobStore, MemoryStore, StoreError,
};

mod support;

/// A failure DynamoDB can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `TransactionCanceledException`, reason `TransactionConflict`.
    Conflict,
    /// `ProvisionedThroughputExceededException`.
    Throttled,
    /// HTTP 500 `InternalServerError`.
    ServerError,
    /// `TransactionInProgressException`: a transaction with the same
    /// client request token is still being applied.
    InProgress,
    /// `TransactionCanceledException`, reason `ProvisionedThroughputExceeded`
    /// (a cancellation reason's code has no `Exception` suffix).
    CancelledThrottled,
}

impl Fault {
    fn answer(self) -> (u16, String) {
        let ty = |t: &str| format!("com.amazonaws.dynamodb.v20120810#{t}");
        match self {
            Fault::Conflict => (
                400,
                serde_json::json!({
                    "__type": ty("TransactionCanceledException"),
                    "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict, None]",
                    "CancellationReasons": [
                        {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
                        {"Code": "None"}
                    ]
                })
                .to_string(),
            ),
            Fault::Throttled => (
                400,
                serde_json::json!({
                    "__type": ty("ProvisionedThroughputExceededException"),
                    "message": "The level of configured provisioned throughput for the table was exceeded"
                })
                .to_string(),
            ),
            Fault::InProgress => (
                400,
                serde_json::json!({
                    "__type": ty("TransactionInProgressException"),
                    "Message": "The transaction with the given request token is already in progress."
                })
                .to_string(),
            ),
            Fault::CancelledThrottled => (
                400,
                serde_json::json!({
                    "__type": ty("TransactionCanceledException"),
                    "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [ProvisionedThroughputExceeded, None]",
                    "CancellationReasons": [
                        {"Code": "ProvisionedThroughputExceeded", "Message": "Throughput exceeds the current capacity of your table or index."},
                        {"Code": "None"}
                    ]
                })
                .to_string(),
            ),
            Fault::ServerError => (
                500,
                serde_json::json!({"__type": ty("InternalServerError"), "message": "injected"})
                    .to_string(),
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Injected(Fault);

impl Storable for Injected {
    type Storer = StoreReplace<Self>;
}

/// Fails the next queued calls of one operation.
#[derive(Debug, Clone, Default)]
struct Faults {
    queue: Arc<Mutex<VecDeque<Fault>>>,
    operation: &'static str,
    injected: Arc<Mutex<Vec<Fault>>>,
}

impl Faults {
    fn push(&self, fault: Fault, times: usize) {
        let mut q = self.queue.lock().expect("lock");
        q.extend(std::iter::repeat_n(fault, times));
    }
    fn clear(&self) {
        self.queue.lock().expect("lock").clear();
    }
    fn injected(&self) -> usize {
        self.injected.lock().expect("lock").len()
    }
}

impl Intercept for Faults {
    fn name(&self) -> &'static str {
        "lotsawa-test-faults"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = ctx
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let fault = if target.ends_with(self.operation) {
            self.queue.lock().expect("lock").pop_front()
        } else {
            None
        };
        match fault {
            Some(f) => {
                // An operation moto does not know: it writes nothing.
                ctx.request_mut()
                    .headers_mut()
                    .insert("x-amz-target", "DynamoDB_20120810.LotsawaInjectedFault");
                self.injected.lock().expect("lock").push(f);
                cfg.interceptor_state().store_put(Injected(f));
            }
            None => {
                cfg.interceptor_state().unset::<Injected>();
            }
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Injected(f)) = cfg.load::<Injected>().cloned() {
            let (status, body) = f.answer();
            let res = ctx.response_mut();
            *res.status_mut() = status.try_into()?;
            res.headers_mut()
                .insert("content-type", "application/x-amz-json-1.0");
            res.headers_mut().remove("content-length");
            *res.body_mut() = SdkBody::from(body);
        }
        Ok(())
    }
}

async fn store_with_faults() -> (DynamoStore, Faults) {
    faulty_store("TransactWriteItems").await
}

async fn faulty_store(operation: &'static str) -> (DynamoStore, Faults) {
    let sdk = support::sdk().await;
    let faults = Faults {
        operation,
        ..Faults::default()
    };
    let ddb = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(faults.clone())
        .build();
    let mut clients = Clients::from_sdk(&sdk);
    clients.ddb = aws_sdk_dynamodb::Client::from_conf(ddb);
    (DynamoStore::new(clients, support::fresh_config()), faults)
}

async fn new_job(store: &DynamoStore, chunks: usize) -> Job {
    JobFactory::new().chunks(chunks).create(store).await
}

async fn change(
    store: &DynamoStore,
    id: JobId,
    c: Change,
) -> Result<TransitionOutcome, StoreError> {
    let job = store.get(id).await?;
    transition(store, &job, c, Utc::now()).await
}

fn done(index: u32) -> ChunkDone {
    ChunkDone {
        index,
        translation: format!("out {index}"),
        duration_ms: Some(1),
        provider_calls: 1,
        ..ChunkDone::default()
    }
}

/// A whole run with `fault` injected twice before each transactional write
/// (claim, every checkpoint, completion): each is retried and the job
/// completes with its slot released.
async fn a_run_survives(fault: Fault) {
    let (store, faults) = store_with_faults().await;
    let job = new_job(&store, 2).await;
    faults.push(fault, 2);
    let started = change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("claim despite the faults");
    assert!(
        matches!(started, TransitionOutcome::Applied(_)),
        "{started:?}"
    );
    assert_eq!(store.slots_in_use().await.expect("slots"), 1);
    for i in 0..2 {
        faults.push(fault, 2);
        let c = store
            .checkpoint(job.id, 1, &done(i))
            .await
            .expect("checkpoint");
        assert_eq!(c, Checkpoint::Recorded);
    }
    faults.push(fault, 2);
    let result = JobResult {
        translation: "out 0 out 1".into(),
        confidence: Some(1.0),
        processing_time: 2,
        engine: "echo".into(),
        model: None,
        warnings: vec![],
        chunks_from_memory: 0,
        usage: None,
    };
    let end = change(&store, job.id, Change::Complete(result))
        .await
        .expect("complete despite the faults");
    assert!(
        matches!(end, TransitionOutcome::Applied(ref j) if j.status == JobStatus::Completed),
        "{end:?}"
    );
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
    assert!(
        faults.injected() >= 8,
        "faults injected: {}",
        faults.injected()
    );
}

#[tokio::test]
async fn transaction_conflicts_are_retried() {
    a_run_survives(Fault::Conflict).await;
}

#[tokio::test]
async fn throttled_transactions_are_retried() {
    a_run_survives(Fault::Throttled).await;
}

#[tokio::test]
async fn server_errors_are_retried() {
    a_run_survives(Fault::ServerError).await;
}

#[tokio::test]
async fn transactions_in_progress_are_retried() {
    a_run_survives(Fault::InProgress).await;
}

#[tokio::test]
async fn transactions_cancelled_for_throughput_are_retried() {
    a_run_survives(Fault::CancelledThrottled).await;
}

/// A conflict that does not go away is an error of its own kind, not "the
/// job moved on": nothing was written, and once the conflicts stop the job
/// can still be started, cancelled, and leaves no slot held.
#[tokio::test]
async fn a_lasting_conflict_is_an_error_and_writes_nothing() {
    let (store, faults) = store_with_faults().await;
    let job = new_job(&store, 1).await;
    faults.push(Fault::Conflict, 100);
    let out = change(&store, job.id, Change::Start { limit: 3 }).await;
    assert!(
        matches!(out, Err(StoreError::TransactionConflict(_))),
        "{out:?}"
    );
    faults.clear();
    let now = store.get(job.id).await.expect("get");
    assert_eq!((now.status, now.run), (JobStatus::Pending, 0));
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
    let started = change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("start");
    assert!(matches!(started, TransitionOutcome::Applied(_)));
    faults.push(Fault::Throttled, 2);
    let cancelled = change(&store, job.id, Change::Cancel)
        .await
        .expect("cancel");
    assert!(
        matches!(cancelled, TransitionOutcome::Applied(ref j) if j.status == JobStatus::Cancelled)
    );
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
}

/// A worker step that fails on the store is answered `Lotsawa.Transient`
/// (the state machine backs off and asks again with a fresh token); it is
/// not left to SQS to deliver again with a dead token.
#[tokio::test]
async fn a_failed_worker_step_is_answered_as_transient() {
    let (store, faults) = faulty_store("Query").await;
    let job = new_job(&store, 1).await;
    change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("start");
    faults.push(Fault::ServerError, 1000);
    let worker = lotsawa_aws::worker::Worker {
        store: store.clone(),
        engines: lotsawa_engines::EngineSet::from_engines(
            vec![std::sync::Arc::new(lotsawa_engines::EchoEngine)],
            "echo",
        ),
        budgets: Default::default(),
    };
    let body = format!(
        r#"{{"action":"chunk","taskToken":"dead-token","jobId":"{}","run":1,"attempt":0}}"#,
        job.id
    );
    let task = lotsawa_aws::worker::Task::parse(&body).expect("task");
    let answer = worker.handle(&task).await;
    match answer {
        lotsawa_aws::worker::Answer::Failure(name, _) => assert_eq!(name, "Lotsawa.Transient"),
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert!(faults.injected() >= 1);
    faults.clear();
    let now = store.get(job.id).await.expect("get");
    assert_eq!(
        (now.status, now.chunks_completed),
        (JobStatus::Processing, 0)
    );
}

/// Chunk and memory items expire like job items (DynamoDB TTL), so nothing
/// is kept forever by accident.
#[tokio::test]
async fn chunk_and_memory_items_carry_a_time_to_live() {
    let (store, _faults) = store_with_faults().await;
    let job = new_job(&store, 1).await;
    store
        .memory_put("ttl-key", "kept a while", None)
        .await
        .expect("memory");
    let expires = |pk: String, sk: &str| {
        let store = store.clone();
        let sk = sk.to_owned();
        async move {
            let out = store
                .clients
                .ddb
                .get_item()
                .table_name(&store.config.table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk))
                .send()
                .await
                .expect("get item");
            out.item
                .and_then(|i| i.get("expiresAt").cloned())
                .and_then(|v| v.as_n().ok().and_then(|n| n.parse::<i64>().ok()))
        }
    };
    let now = Utc::now().timestamp();
    let chunk = expires(format!("JOB#{}", job.id), "CHUNK#000000")
        .await
        .expect("a chunk TTL");
    let memory = expires("MEM#ttl-key".into(), "MEM")
        .await
        .expect("a memory TTL");
    let days = |t: i64| (t - now) / 86_400;
    assert!(
        (390..=396).contains(&days(chunk)),
        "chunk TTL in {} days",
        days(chunk)
    );
    assert!(
        (89..=90).contains(&days(memory)),
        "memory TTL in {} days",
        days(memory)
    );
}

/// A completion step that failed (its `Catch` sends the run to the fail
/// step with the caught error) fails the job with that reason and frees its
/// slot; the job can then be retried.
#[tokio::test]
async fn a_failed_completion_fails_the_run_and_frees_its_slot() {
    let (store, _faults) = store_with_faults().await;
    let job = new_job(&store, 2).await;
    change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("start");
    for i in 0..2 {
        store
            .checkpoint(job.id, 1, &done(i))
            .await
            .expect("checkpoint");
    }
    let worker = lotsawa_aws::worker::Worker {
        store: store.clone(),
        engines: lotsawa_engines::EngineSet::from_engines(
            vec![std::sync::Arc::new(lotsawa_engines::EchoEngine)],
            "echo",
        ),
        budgets: Default::default(),
    };
    let body = format!(
        r#"{{"action":"fail","taskToken":"t","jobId":"{}","run":1,"reason":"transient","caught":{{"Error":"States.Timeout","Cause":null}}}}"#,
        job.id
    );
    let task = lotsawa_aws::worker::Task::parse(&body).expect("task");
    let answer = worker.answer(&task).await.expect("answer");
    assert_eq!(
        answer,
        lotsawa_aws::worker::Answer::Success(serde_json::json!({"state": "failed"}))
    );
    let now = store.get(job.id).await.expect("get");
    assert_eq!(now.status, JobStatus::Failed);
    assert_eq!(
        now.error.as_deref(),
        Some("completion_failed: assembling the result failed: States.Timeout")
    );
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
    let retried = change(&store, job.id, Change::Retry).await.expect("retry");
    assert!(
        matches!(retried, TransitionOutcome::Applied(ref j) if j.status == JobStatus::Pending),
        "{retried:?}"
    );
}

/// The provider limits every worker shares live in one table item: two
/// gates (two workers) never hold more calls than allowed, a rate's share
/// is spent once, and a 429 pauses both.
#[tokio::test]
async fn workers_share_provider_limits_through_the_table() {
    use lotsawa_core::limits::{LimitSpec, ProviderGate, Settle, Wait};
    let (store, _faults) = store_with_faults().await;
    let a = lotsawa_aws::gate::TableGate::new(store.clone(), Duration::from_secs(60));
    let b = lotsawa_aws::gate::TableGate::new(store.clone(), Duration::from_secs(60));
    let spec = LimitSpec {
        rpm: Some(600),
        tpm: None,
        concurrent: Some(1),
    };
    let held = a.admit("echo", &spec, 10).await.expect("the one slot");
    assert!(
        matches!(b.admit("echo", &spec, 10).await, Err(Wait::Busy(_))),
        "a second worker got a slot that was taken"
    );
    a.settle("echo", &spec, &held, Settle::Answered { tokens: Some(12) })
        .await;
    let next = b.admit("echo", &spec, 10).await.expect("the slot again");
    // A 429 pauses the engine for every worker.
    b.settle(
        "echo",
        &spec,
        &next,
        Settle::Throttled {
            retry_after: Some(Duration::from_secs(30)),
        },
    )
    .await;
    match a.admit("echo", &spec, 10).await {
        Err(Wait::Paused(d)) => assert!(d > Duration::from_secs(25), "{d:?}"),
        other => panic!("expected a pause, got {other:?}"),
    }
    // Twenty workers at once on a fresh limiter of 10 calls a second (a
    // bucket of 10): no more than 10 shares are given.
    let spec = LimitSpec {
        rpm: Some(600),
        tpm: None,
        concurrent: None,
    };
    let gates: Vec<_> = (0..20)
        .map(|_| lotsawa_aws::gate::TableGate::new(store.clone(), Duration::from_secs(60)))
        .collect();
    let started = std::time::Instant::now();
    let admitted = futures::future::join_all(gates.iter().map(|g| g.admit("burst", &spec, 1)))
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    // The bucket, and what refilled while the twenty contended.
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        (1..=10 + refilled).contains(&admitted),
        "{admitted} admitted in {:?}",
        started.elapsed()
    );
}

/// A worker whose limiter has no share free answers `throttled` with a
/// wait (the state machine waits; nothing is sent, no attempt noted), and
/// with `parallelChunks` it translates a window of chunks in one step.
#[tokio::test]
async fn a_worker_waits_out_the_limiter_and_translates_a_window_of_chunks() {
    use lotsawa_core::limits::{LimitSpec, ProviderGate, ProviderLimits};
    let (store, _faults) = store_with_faults().await;
    let job = JobFactory::new()
        .chunks(6)
        .with(|j| j.config.parallel_chunks = 4)
        .create(&store)
        .await;
    change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("start");
    let gate = Arc::new(lotsawa_aws::gate::TableGate::new(
        store.clone(),
        Duration::from_secs(60),
    ));
    let worker = lotsawa_aws::worker::Worker {
        store: store.clone(),
        engines: lotsawa_engines::EngineSet::from_engines(
            vec![Arc::new(lotsawa_engines::EchoEngine)],
            "echo",
        )
        .with_limits(
            ProviderLimits::parse("echo concurrent=4").expect("limits"),
            gate.clone(),
        ),
        budgets: Default::default(),
    };
    let task = |attempt: u32| {
        lotsawa_aws::worker::Task::parse(&format!(
            r#"{{"action":"chunk","taskToken":"t","jobId":"{}","run":1,"attempt":{attempt}}}"#,
            job.id
        ))
        .expect("task")
    };
    // Another worker holds every slot.
    let spec = LimitSpec {
        concurrent: Some(4),
        ..LimitSpec::default()
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(gate.admit("echo", &spec, 1).await.expect("slot"));
    }
    let answer = worker.answer(&task(2)).await.expect("answer");
    match &answer {
        lotsawa_aws::worker::Answer::Success(v) => {
            assert_eq!(v["state"], "throttled", "{v}");
            assert!(v["wait"].as_u64() >= Some(1), "{v}");
        }
        other => panic!("expected a throttled answer, got {other:?}"),
    }
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert!(
        chunks
            .iter()
            .all(|c| c.provider_calls == 0 && c.error.is_none()),
        "a limiter wait is no attempt: {chunks:?}"
    );
    for lease in &held {
        gate.abandon("echo", lease);
        gate.settle(
            "echo",
            &spec,
            lease,
            lotsawa_core::limits::Settle::Answered { tokens: None },
        )
        .await;
    }
    // A window of four chunks in one step, then the last two.
    let answer = worker.answer(&task(0)).await.expect("answer");
    assert_eq!(
        answer,
        lotsawa_aws::worker::Answer::Success(serde_json::json!({"state": "more"}))
    );
    assert_eq!(store.get(job.id).await.expect("get").chunks_completed, 4);
    let answer = worker.answer(&task(0)).await.expect("answer");
    assert_eq!(
        answer,
        lotsawa_aws::worker::Answer::Success(serde_json::json!({"state": "done"}))
    );
}

/// A tenant whose monthly token budget is spent: the worker fails the run
/// itself with `budget_exhausted` (the execution ends as stopped, nothing
/// to retry) and keeps the chunks already committed; raised, the budget
/// lets a retry go on from the first unfinished chunk.
#[tokio::test]
async fn a_spent_budget_fails_the_run_in_the_cloud() {
    use lotsawa_core::store::{ChunkUsage, UsageStore};
    let (store, _faults) = store_with_faults().await;
    let acme = lotsawa_core::Tenant::parse("acme").expect("tenant");
    let job = JobFactory::new()
        .chunks(3)
        .tenant(&acme)
        .create(&store)
        .await;
    change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("start");
    store.set_budget(&acme, Some(10)).await.expect("budget");
    // Chunk 0 spent 15 tokens.
    let spent = ChunkDone {
        usage: Some(ChunkUsage {
            tenant: acme.clone(),
            engine: "openai".into(),
            model: Some("m".into()),
            usage: lotsawa_core::usage::Usage::call(10, 5),
        }),
        ..done(0)
    };
    store
        .checkpoint(job.id, 1, &spent)
        .await
        .expect("checkpoint");
    let worker = lotsawa_aws::worker::Worker {
        store: store.clone(),
        engines: lotsawa_engines::EngineSet::from_engines(
            vec![Arc::new(lotsawa_engines::EchoEngine)],
            "echo",
        ),
        budgets: Default::default(),
    };
    let task = lotsawa_aws::worker::Task::parse(&format!(
        r#"{{"action":"chunk","taskToken":"t","jobId":"{}","run":1,"attempt":0}}"#,
        job.id
    ))
    .expect("task");
    let answer = worker.answer(&task).await.expect("answer");
    assert_eq!(
        answer,
        lotsawa_aws::worker::Answer::Success(serde_json::json!({"state": "stopped"}))
    );
    let now = store.get(job.id).await.expect("get");
    assert_eq!(now.status, JobStatus::Failed);
    assert!(
        now.error
            .as_deref()
            .is_some_and(|e| e.starts_with("budget_exhausted: ")),
        "{:?}",
        now.error
    );
    assert_eq!(now.chunks_completed, 1);
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
    // Raised: a retry translates the two chunks left (once the worker's
    // budget read has aged out).
    store
        .set_budget(&acme, Some(1_000_000))
        .await
        .expect("budget");
    tokio::time::sleep(lotsawa_core::usage::BUDGET_TTL).await;
    change(&store, job.id, Change::Retry).await.expect("retry");
    change(&store, job.id, Change::Start { limit: 3 })
        .await
        .expect("start again");
    let task = lotsawa_aws::worker::Task::parse(&format!(
        r#"{{"action":"chunk","taskToken":"t","jobId":"{}","run":2,"attempt":0}}"#,
        job.id
    ))
    .expect("task");
    worker.answer(&task).await.expect("chunk 1");
    let last = worker.answer(&task).await.expect("chunk 2");
    assert_eq!(
        last,
        lotsawa_aws::worker::Answer::Success(serde_json::json!({"state": "done"}))
    );
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert_eq!(chunks[0].translation.as_deref(), Some("out 0"), "kept");
}
