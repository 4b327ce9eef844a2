//! Store conformance: FIFO claim, compare-and-set transitions, chunk
//! checkpoints, pagination, batching and query plans of the SQLite store.

use chrono::Utc;
use lotsawa_core::{ChunkStatus, Job, JobConfig, JobId, JobResult, JobStatus, JobType, Transition};
use lotsawa_local::store::{
    ChunkDone, ListFilter, Store, StoreError, decode_cursor, encode_cursor,
};

fn new_job() -> Job {
    Job {
        id: JobId::new(),
        kind: JobType::Translation,
        status: JobStatus::Pending,
        source: "ཀ། ཁ།".into(),
        config: JobConfig::default(),
        result: None,
        error: None,
        chunks_completed: 0,
        chunks_total: 2,
        created_at: Utc::now(),
        started_at: None,
        completed_at: None,
        cancelled_at: None,
        attempts: 0,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("t.db")).expect("open");
    (dir, store)
}

async fn insert(store: &Store) -> JobId {
    let job = new_job();
    let id = job.id;
    store
        .insert_job(job, vec!["ཀ། ".into(), "ཁ།".into()])
        .await
        .expect("insert");
    id
}

#[tokio::test]
async fn claims_in_fifo_order_and_marks_processing() {
    let (_d, store) = open();
    let ids = [
        insert(&store).await,
        insert(&store).await,
        insert(&store).await,
    ];
    for id in ids {
        let claimed = store
            .claim_next(Utc::now())
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(claimed.job.id, id);
        assert_eq!(claimed.job.status, JobStatus::Processing);
        assert_eq!(claimed.job.attempts, 1);
        assert!(claimed.job.started_at.is_some());
    }
    assert!(store.claim_next(Utc::now()).await.expect("claim").is_none());
}

#[tokio::test]
async fn transitions_are_compare_and_set() {
    let (_d, store) = open();
    let id = insert(&store).await;
    // Pending cannot be retried or completed.
    let err = store
        .transition(id, Transition::Retry, None, Utc::now())
        .await;
    assert!(matches!(err, Err(StoreError::Transition(_))), "{err:?}");
    let job = store
        .transition(id, Transition::Cancel, None, Utc::now())
        .await
        .expect("cancel");
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.cancelled_at.is_some());
    // Twice is a conflict, and a cancelled job is never claimed.
    assert!(
        store
            .transition(id, Transition::Cancel, None, Utc::now())
            .await
            .is_err()
    );
    assert!(store.claim_next(Utc::now()).await.expect("claim").is_none());
    let missing = store
        .transition(JobId::new(), Transition::Cancel, None, Utc::now())
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn stale_runs_cannot_write() {
    let (_d, store) = open();
    let id = insert(&store).await;
    let claimed = store
        .claim_next(Utc::now())
        .await
        .expect("claim")
        .expect("job");
    let (seq, run) = (claimed.seq, claimed.job.attempts);
    assert!(
        store
            .complete_chunk(seq, run, done(0, "A"))
            .await
            .expect("write")
    );
    // The same chunk twice (a duplicate delivery) changes nothing.
    assert!(
        !store
            .complete_chunk(seq, run, done(0, "A2"))
            .await
            .expect("write")
    );
    // Cancel, retry, claim again: run 2. Run 1 can no longer write.
    store
        .transition(id, Transition::Cancel, None, Utc::now())
        .await
        .expect("cancel");
    assert!(
        !store
            .complete_chunk(seq, run, done(1, "late"))
            .await
            .expect("write")
    );
    store
        .transition(id, Transition::Retry, None, Utc::now())
        .await
        .expect("retry");
    let again = store
        .claim_next(Utc::now())
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(again.job.attempts, 2);
    assert!(
        !store
            .complete_chunk(seq, run, done(1, "stale"))
            .await
            .expect("write")
    );
    assert!(
        !store
            .complete_job(seq, run, result(), Utc::now())
            .await
            .expect("write")
    );
    let chunks = store.chunks(seq).await.expect("chunks");
    assert_eq!(chunks[0].translation.as_deref(), Some("A"));
    assert_eq!(chunks[1].status, ChunkStatus::Pending);
    // Completing the job before every chunk is done is refused.
    assert!(
        !store
            .complete_job(seq, 2, result(), Utc::now())
            .await
            .expect("write")
    );
    assert!(
        store
            .complete_chunk(seq, 2, done(1, "B"))
            .await
            .expect("write")
    );
    assert!(
        store
            .complete_job(seq, 2, result(), Utc::now())
            .await
            .expect("write")
    );
    let job = store.get(id).await.expect("get").job;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.chunks_completed, 2);
}

fn done(index: u32, text: &str) -> ChunkDone {
    ChunkDone {
        index,
        translation: text.into(),
        duration_ms: Some(5),
        attempts: 1,
        ..Default::default()
    }
}

fn result() -> JobResult {
    JobResult {
        translation: "A B".into(),
        confidence: None,
        processing_time: 10,
        engine: "echo".into(),
        model: None,
        warnings: vec![],
        chunks_from_memory: 0,
    }
}

#[tokio::test]
async fn retry_goes_to_the_end_of_the_queue_and_requeue_to_the_head() {
    let (_d, store) = open();
    let a = insert(&store).await;
    let b = insert(&store).await;
    store
        .transition(a, Transition::Cancel, None, Utc::now())
        .await
        .expect("cancel");
    store
        .transition(a, Transition::Retry, None, Utc::now())
        .await
        .expect("retry");
    let c = insert(&store).await;
    let first = store
        .claim_next(Utc::now())
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(first.job.id, b);
    // b goes back to the head: it is claimed before a and c.
    store
        .transition(b, Transition::Requeue, Some(1), Utc::now())
        .await
        .expect("requeue");
    let order: Vec<JobId> = [
        store.claim_next(Utc::now()).await,
        store.claim_next(Utc::now()).await,
        store.claim_next(Utc::now()).await,
    ]
    .into_iter()
    .map(|r| r.expect("claim").expect("job").job.id)
    .collect();
    assert_eq!(order, vec![b, a, c]);
}

#[tokio::test]
async fn failing_a_chunk_fails_the_job_and_retry_resets_only_failed_chunks() {
    let (_d, store) = open();
    let id = insert(&store).await;
    let claimed = store
        .claim_next(Utc::now())
        .await
        .expect("claim")
        .expect("job");
    let seq = claimed.seq;
    assert!(
        store
            .complete_chunk(seq, 1, done(0, "A"))
            .await
            .expect("write")
    );
    let failure = lotsawa_local::store::ChunkFailure {
        index: 1,
        attempts: 3,
        error: "HTTP 503".into(),
        job_error: "chunk 1 failed after 3 attempts: HTTP 503".into(),
    };
    assert!(
        store
            .fail_chunk(seq, 1, failure, Utc::now())
            .await
            .expect("write")
    );
    let job = store.get(id).await.expect("get").job;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.as_deref().is_some_and(|e| e.contains("503")));
    store
        .transition(id, Transition::Retry, None, Utc::now())
        .await
        .expect("retry");
    let chunks = store.chunks(seq).await.expect("chunks");
    assert_eq!(chunks[0].status, ChunkStatus::Completed);
    assert_eq!(chunks[1].status, ChunkStatus::Pending);
    assert_eq!(chunks[1].attempts, 3);
    let job = store.get(id).await.expect("get").job;
    assert_eq!((job.status, job.error), (JobStatus::Pending, None));
}

#[tokio::test]
async fn pagination_is_stable_while_jobs_arrive() {
    let (_d, store) = open();
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(insert(&store).await);
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (page, more) = store
            .list(ListFilter {
                limit: 3,
                before_seq: before,
                ..Default::default()
            })
            .await
            .expect("list");
        insert(&store).await;
        seen.extend(page.iter().map(|j| j.job.id));
        if !more {
            break;
        }
        before = page.last().map(|j| j.seq);
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let (pending, _) = store
        .list(ListFilter {
            status: Some(JobStatus::Processing),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(pending.is_empty());
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
    for bad in ["", "42", "garbage!", "djE6LTE", "djE6eA"] {
        assert_eq!(decode_cursor(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn a_failing_write_does_not_undo_its_batch() {
    let (_d, store) = open();
    let mut handles = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            if i % 10 == 0 {
                s.write(|conn| {
                    conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                    Ok(())
                })
                .await
                .map(|_| None)
            } else {
                let job = new_job();
                let id = job.id;
                s.insert_job(job, vec!["ཀ།".into()]).await.map(|_| Some(id))
            }
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for h in handles {
        match h.await.expect("join") {
            Ok(Some(_)) => ok += 1,
            Ok(None) => unreachable!(),
            Err(_) => failed += 1,
        }
    }
    assert_eq!((ok, failed), (180, 20));
    let counts = store.counts().await.expect("counts");
    let pending = counts
        .by_status
        .iter()
        .find(|(s, _)| *s == JobStatus::Pending)
        .map(|(_, n)| *n);
    assert_eq!(pending, Some(180));
}

#[tokio::test]
async fn translation_memory_keeps_the_first_entry() {
    let (_d, store) = open();
    assert_eq!(store.memory_get("k".into()).await.expect("get"), None);
    store
        .memory_put("k".into(), "first".into(), Some(0.9), Utc::now())
        .await
        .expect("put");
    store
        .memory_put("k".into(), "second".into(), None, Utc::now())
        .await
        .expect("put");
    assert_eq!(
        store.memory_get("k".into()).await.expect("get"),
        Some(("first".to_owned(), Some(0.9)))
    );
}

#[test]
fn databases_of_the_first_schema_are_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE chunks (job_seq INTEGER NOT NULL, idx INTEGER NOT NULL, source TEXT NOT NULL,
            chars INTEGER NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            translation TEXT, error TEXT, duration_ms INTEGER, run INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (job_seq, idx)) WITHOUT ROWID;",
    )
    .expect("old schema");
    drop(conn);
    Store::open(&path).expect("migrates");
    let conn = rusqlite::Connection::open(&path).expect("open");
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('chunks') WHERE name = 'from_memory'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn hot_statements_use_indexes() {
    let (_d, store) = open();
    insert(&store).await;
    let plan = store
        .query_plan(lotsawa_local::store::CLAIM_NEXT_SQL)
        .await
        .expect("plan");
    assert!(
        plan.contains("jobs_queue") && !plan.contains("TEMP B-TREE"),
        "claim scans: {plan}"
    );
    let plan = store
        .query_plan(lotsawa_local::store::CHECKPOINT_SQL)
        .await
        .expect("plan");
    assert!(
        plan.contains("PRIMARY KEY"),
        "chunk checkpoint scans: {plan}"
    );
    let plan = store
        .query_plan("SELECT seq FROM jobs WHERE status = 'completed' AND seq < 10 ORDER BY seq DESC LIMIT 21")
        .await
        .expect("plan");
    assert!(
        plan.contains("jobs_status_seq") && !plan.contains("TEMP B-TREE"),
        "list by status: {plan}"
    );
    let plan = store
        .query_plan("SELECT seq FROM jobs WHERE seq < 10 ORDER BY seq DESC LIMIT 21")
        .await
        .expect("plan");
    assert!(
        !plan.contains("TEMP B-TREE") && !plan.contains("SCAN jobs\n"),
        "list: {plan}"
    );
    let plan = store
        .query_plan("SELECT COALESCE(MAX(queue_pos), 0) + 1 FROM jobs INDEXED BY jobs_queue WHERE status = 'pending'")
        .await
        .expect("plan");
    assert!(
        plan.contains("jobs_queue"),
        "enqueue position scans: {plan}"
    );
}
