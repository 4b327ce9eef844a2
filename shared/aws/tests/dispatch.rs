//! The dispatcher against DynamoDB, SQS, S3 and Step Functions in moto:
//! a claim whose execution could not be started keeps its slot and is
//! started by the sweep, and a pending job whose source cannot be read does
//! not stop the jobs behind it.

use lotsawa_conformance::JobFactory;
use std::time::Duration;

use chrono::Utc;
use lotsawa_aws::dispatch::{Dispatched, dispatch, reap};
use lotsawa_aws::messages::JobMessage;
use lotsawa_aws::{Clients, DynamoStore};
use lotsawa_core::{AdmissionStore, Job, JobId, JobStatus, JobStore};

mod support;

/// A store on a fresh table with a FIFO job queue and a state machine of
/// its own (moto runs no execution in this emulation: one stays RUNNING).
async fn store(concurrency: u32) -> DynamoStore {
    let sdk = support::sdk().await;
    let clients = Clients::from_sdk(&sdk);
    let mut config = support::fresh_config();
    let name = config.table.replace("lotsawa-conformance-", "dispatch-");
    config.job_queue_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    config.state_machine_arn = clients
        .sfn
        .create_state_machine()
        .name(name)
        .definition(
            r#"{"StartAt":"Hold","States":{"Hold":{"Type":"Wait","Seconds":3600,"End":true}}}"#,
        )
        .role_arn("arn:aws:iam::123456789012:role/lotsawa-states")
        .send()
        .await
        .expect("state machine")
        .state_machine_arn;
    config.concurrency = concurrency;
    DynamoStore::new(clients, config)
}

async fn new_job(store: &DynamoStore, texts: Vec<String>) -> Job {
    JobFactory::new().texts(texts).create(store).await
}

fn wake(id: JobId) -> JobMessage {
    JobMessage {
        job_id: id,
        run: 1,
        segment: 0,
    }
}

/// StartExecution fails after the claim committed (processing, slot
/// taken): the dispatcher reports the error, and the sweep starts the run
/// instead of leaving its slot held by a job nothing runs.
#[tokio::test]
async fn a_failed_start_after_a_claim_keeps_the_slot_and_the_sweep_starts_it() {
    let good = store(1).await;
    let mut config = good.config.clone();
    config.state_machine_arn = format!("{}-missing", good.config.state_machine_arn);
    let failing = DynamoStore::new(good.clients.clone(), config);
    let job = new_job(&good, vec!["ཀ་ཁ། ".into()]).await;

    let out = dispatch(&failing, &wake(job.id)).await;
    assert!(
        out.is_err(),
        "the start failed, so must the dispatch: {out:?}"
    );
    let claimed = good.item(job.id, false).await.expect("item");
    assert_eq!(claimed.job.status, JobStatus::Processing);
    assert_eq!(claimed.slot, Some(1));
    assert_eq!(claimed.execution_arn, None, "no execution was started");
    assert_eq!(good.slots_in_use().await.expect("slots"), 1);

    // A sweep while the start still fails reports it and changes nothing.
    assert!(reap(&failing, Duration::ZERO).await.is_err());
    assert_eq!(
        good.item(job.id, false).await.expect("item").execution_arn,
        None
    );

    // The next sweep that can start it does.
    reap(&good, Duration::ZERO).await.expect("sweep");
    let started = good.item(job.id, false).await.expect("item");
    let arn = started.execution_arn.expect("the sweep started the run");
    assert!(arn.ends_with(&format!("{}-1-0", job.id)), "{arn}");
    let status = good
        .clients
        .sfn
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await
        .expect("the execution exists")
        .status;
    assert_eq!(status.as_str(), "RUNNING");
    assert_eq!(started.job.status, JobStatus::Processing);
    assert_eq!(good.slots_in_use().await.expect("slots"), 1);

    // A redelivered wake-up for the run changes nothing now.
    let again = dispatch(&good, &wake(job.id)).await.expect("dispatch");
    assert_eq!(again, Dispatched::Dropped("segment already started"));
}

/// The oldest pending job's source (over 100 KB, kept in S3) is gone: the
/// claim reads no texts, so the jobs behind it start anyway, and so does it
/// (its chunk step is where a missing text fails it).
#[tokio::test]
async fn a_pending_job_whose_source_is_missing_blocks_no_one() {
    let store = store(2).await;
    let big: Vec<String> = (0..40)
        .map(|i| format!("{}{i}། ", "ཀ་ཁ་ག་".repeat(300)))
        .collect();
    assert!(big.concat().len() > 100 * 1024);
    let broken = new_job(&store, big).await;
    let item = store.item(broken.id, true).await.expect("item");
    let key = item.source_key.expect("a large source lives in S3");
    store
        .clients
        .s3
        .delete_object()
        .bucket(&store.config.bucket)
        .key(&key)
        .send()
        .await
        .expect("delete");
    assert!(
        store.get(broken.id).await.is_err(),
        "its source cannot be read"
    );
    let next = new_job(&store, vec!["ཀ་ཁ། ".into()]).await;

    let out = dispatch(&store, &wake(next.id)).await.expect("dispatch");
    assert!(matches!(out, Dispatched::Started(_)), "{out:?}");
    for id in [broken.id, next.id] {
        let now = store.item(id, false).await.expect("item");
        assert_eq!(now.job.status, JobStatus::Processing, "{id}");
        assert!(now.execution_arn.is_some(), "{id} started");
    }
    assert_eq!(store.slots_in_use().await.expect("slots"), 2);
}

/// A claimed run whose start keeps failing (here: its state machine does
/// not exist) is failed by the sweep once it has waited
/// `START_GIVE_UP`, and its slot freed; the sweep before that keeps it.
#[tokio::test]
async fn a_run_that_cannot_start_is_failed_and_frees_its_slot() {
    let good = store(1).await;
    let mut config = good.config.clone();
    config.state_machine_arn = format!("{}-missing", good.config.state_machine_arn);
    let failing = DynamoStore::new(good.clients.clone(), config);
    let fresh = new_job(&good, vec!["ཀ་ཁ། ".into()]).await;
    let claimed = good.claim(&fresh, 1, Utc::now()).await.expect("claim");
    assert!(matches!(
        claimed,
        lotsawa_core::store::TransitionOutcome::Applied(_)
    ));
    assert!(
        reap(&failing, Duration::ZERO).await.is_err(),
        "still trying"
    );
    assert_eq!(
        good.item(fresh.id, false).await.expect("item").job.status,
        JobStatus::Processing
    );
    lotsawa_core::store::transition_by_id(
        &good,
        fresh.id,
        Some(1),
        lotsawa_core::store::Change::Cancel,
        Utc::now(),
    )
    .await
    .expect("cancel");

    let old = new_job(&good, vec!["ཀ་ཁ། ".into()]).await;
    let long_ago = Utc::now()
        - chrono::Duration::seconds(lotsawa_aws::dispatch::START_GIVE_UP.as_secs() as i64 + 60);
    good.claim(&old, 1, long_ago).await.expect("claim");
    assert_eq!(good.slots_in_use().await.expect("slots"), 1);
    let released = reap(&failing, Duration::ZERO).await.expect("sweep");
    assert_eq!(released, 1);
    let now = good.item(old.id, false).await.expect("item");
    assert_eq!(now.job.status, JobStatus::Failed);
    assert!(
        now.job
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("dispatch_failed")),
        "{:?}",
        now.job.error
    );
    assert_eq!(good.slots_in_use().await.expect("slots"), 0);
}

/// Two jobs at concurrency 1: the second waits in the table (its wake-up
/// is done with), and the end of the first sends the wake-up that starts
/// it, through the job queue (the send Dispatch and Worker need
/// `sqs:SendMessage` for).
#[tokio::test]
async fn two_jobs_at_concurrency_one_both_run() {
    let store = store(1).await;
    let first = new_job(&store, vec!["ཀ་ཁ། ".into()]).await;
    let second = new_job(&store, vec!["ག་ང། ".into()]).await;
    let out = dispatch(&store, &wake(first.id)).await.expect("dispatch");
    assert!(matches!(out, Dispatched::Started(_)), "{out:?}");
    let out = dispatch(&store, &wake(second.id)).await.expect("dispatch");
    assert_eq!(out, Dispatched::Waiting);

    // The first run ends (as its completion step ends it) and wakes the queue.
    let result = lotsawa_core::JobResult {
        translation: "done".into(),
        confidence: None,
        processing_time: 1,
        engine: "echo".into(),
        model: None,
        warnings: vec![],
        chunks_from_memory: 0,
        usage: None,
    };
    let done = lotsawa_core::store::ChunkDone {
        index: 0,
        translation: "done".into(),
        duration_ms: Some(1),
        provider_calls: 1,
        ..lotsawa_core::store::ChunkDone::default()
    };
    store
        .checkpoint(first.id, 1, &done)
        .await
        .expect("checkpoint");
    let ended = lotsawa_core::store::transition_by_id(
        &store,
        first.id,
        Some(1),
        lotsawa_core::store::Change::Complete(result),
        Utc::now(),
    )
    .await
    .expect("complete");
    assert!(matches!(
        ended,
        lotsawa_core::store::TransitionOutcome::Applied(_)
    ));
    let sent = lotsawa_aws::dispatch::kick(&store).await.expect("kick");
    assert_eq!(sent, 1, "one free slot, one wake-up");

    // Every message on the queue is delivered, as the event source would.
    let mut started = false;
    for _ in 0..10 {
        let got = store
            .clients
            .sqs
            .receive_message()
            .queue_url(&store.config.job_queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        for m in got.messages() {
            let msg: JobMessage =
                serde_json::from_str(m.body().unwrap_or_default()).expect("a job message");
            if let Dispatched::Started(_) = dispatch(&store, &msg).await.expect("dispatch") {
                started |= msg.job_id == second.id;
            }
        }
        if started {
            break;
        }
    }
    assert!(started, "the wake-up started the waiting job");
    let now = store.item(second.id, false).await.expect("item");
    assert_eq!(now.job.status, JobStatus::Processing);
    assert_eq!(store.slots_in_use().await.expect("slots"), 1);
}
