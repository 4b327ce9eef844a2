//! What only the SQLite store has, beside the shared conformance suite
//! (`tests/conformance.rs`): queue positions of retried and requeued jobs,
//! batched writes, schema migration and the query plans of hot statements.

use chrono::Utc;
use lotsawa_conformance::JobFactory;
use lotsawa_core::store::{Change, TransitionOutcome, transition};
use lotsawa_core::{AdmissionStore, Job, JobId, JobStatus, JobStore};
use lotsawa_local::store::SqliteStore;

fn new_job() -> Job {
    JobFactory::new()
        .texts(vec!["ཀ། ".into(), "ཁ།".into()])
        .job()
}

/// Chunk `index` done with `text`, first attempt.
fn done(index: u32, text: &str) -> lotsawa_core::store::ChunkDone {
    lotsawa_core::store::ChunkDone {
        index,
        translation: text.to_owned(),
        duration_ms: Some(1),
        provider_calls: 1,
        confidence: None,
        from_memory: false,
        context: None,
        warning: None,
        usage: None,
        examples: None,
    }
}

/// The result label of an echo job.
fn label() -> lotsawa_core::pipeline::ResultLabel {
    lotsawa_core::pipeline::ResultLabel {
        engine: "echo".into(),
        ..Default::default()
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
    (dir, store)
}

async fn insert(store: &SqliteStore) -> JobId {
    let job = new_job();
    let id = job.id;
    store
        .create(&job, &["ཀ། ".into(), "ཁ།".into()])
        .await
        .expect("insert");
    id
}

async fn change(store: &SqliteStore, id: JobId, c: Change) {
    let job = store.get(id).await.expect("get");
    match transition(store, &job, c, Utc::now()).await.expect("store") {
        TransitionOutcome::Applied(_) => {}
        other => panic!("expected the change to apply: {other:?}"),
    }
}

async fn claim(store: &SqliteStore) -> JobId {
    store
        .claim_next(10, Utc::now())
        .await
        .expect("claim")
        .expect("a job")
        .id
}

#[tokio::test]
async fn retry_goes_to_the_end_of_the_queue_and_requeue_to_the_head() {
    let (_d, store) = open();
    let a = insert(&store).await;
    let b = insert(&store).await;
    change(&store, a, Change::Cancel).await;
    change(&store, a, Change::Retry).await;
    let c = insert(&store).await;
    assert_eq!(claim(&store).await, b);
    // b goes back to the head: it is claimed before a and c.
    change(&store, b, Change::Requeue).await;
    let order = [
        claim(&store).await,
        claim(&store).await,
        claim(&store).await,
    ];
    assert_eq!(order, [b, a, c]);
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
                .is_ok()
            } else {
                let job = new_job();
                s.create(&job, &["ཀ།".into()]).await.is_ok()
            }
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for h in handles {
        if h.await.expect("join") {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    assert_eq!((ok, failed), (180, 20));
    let counts = store.counts().await.expect("counts");
    let pending = counts
        .iter()
        .find(|(s, _)| *s == JobStatus::Pending)
        .map(|(_, n)| *n);
    assert_eq!(pending, Some(180));
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
    SqliteStore::open(&path).expect("migrates");
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
        plan.contains("jobs_claim") && !plan.contains("TEMP B-TREE"),
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

#[tokio::test]
async fn retention_purges_only_finished_jobs_past_the_cutoff() {
    let (_dir, store) = open();
    let pending = insert(&store).await;
    let processing = insert(&store).await;
    let cancelled = insert(&store).await;
    claim(&store).await; // the oldest pending one
    change(&store, cancelled, Change::Cancel).await;
    let failed = insert(&store).await;
    let started = claim(&store).await;
    assert_eq!(started, processing);
    let f = claim(&store).await;
    change(
        &store,
        f,
        Change::Fail {
            error: "engine_failed: no".into(),
            chunk: None,
        },
    )
    .await;
    assert_eq!(
        store
            .purge_finished(Utc::now() - chrono::Duration::hours(1), 100)
            .await
            .expect("purge"),
        0,
        "nothing finished before the cutoff"
    );
    let purged = store
        .purge_finished(Utc::now() + chrono::Duration::seconds(1), 100)
        .await
        .expect("purge");
    assert_eq!(purged, 2, "the cancelled and the failed job");
    for gone in [cancelled, failed] {
        assert!(matches!(
            store.get(gone).await,
            Err(lotsawa_core::StoreError::NotFound(_))
        ));
        assert!(store.chunks(gone, 0).await.is_err(), "its chunks too");
    }
    for kept in [pending, processing] {
        assert!(store.get(kept).await.is_ok(), "unfinished jobs stay");
    }
    let _ = f;
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    insert(&store).await;
    store.flush().await.expect("flush");
    for name in ["t.db", "t.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .expect(name)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
}

#[tokio::test]
async fn claim_many_takes_the_oldest_in_one_write_up_to_the_limit() {
    let (_dir, store) = open();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(insert(&store).await);
    }
    let first = store.claim_many(4, 3, Utc::now()).await.expect("claim");
    assert_eq!(
        first.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[..3].to_vec(),
        "FIFO"
    );
    assert!(
        first
            .iter()
            .all(|j| j.status == JobStatus::Processing && j.run == 1)
    );
    // One slot left under the limit of 4, though 3 are asked for.
    let second = store.claim_many(4, 3, Utc::now()).await.expect("claim");
    assert_eq!(
        second.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[3]]
    );
    assert_eq!(store.slots_in_use().await.expect("slots"), 4);
    assert!(
        store
            .claim_many(4, 3, Utc::now())
            .await
            .expect("claim")
            .is_empty()
    );
    for j in first.iter().chain(&second) {
        assert_eq!(
            store.get(j.id).await.expect("get").status,
            JobStatus::Processing
        );
    }
}

#[tokio::test]
async fn the_last_chunk_and_the_completion_commit_together() {
    let (_dir, store) = open();
    let id = insert(&store).await;
    claim(&store).await;
    // With a chunk unfinished, it is only a checkpoint.
    let f = store
        .finish_last_chunk(id, 1, &done(1, "two"), label(), None, Utc::now())
        .await
        .expect("finish");
    let (kept, completed) = (f.kept, f.completed);
    assert_eq!(kept, lotsawa_core::store::Checkpoint::Recorded);
    assert!(!completed);
    assert_eq!(
        store.get(id).await.expect("get").status,
        JobStatus::Processing
    );
    // A stale run writes nothing.
    let f = store
        .finish_last_chunk(id, 7, &done(0, "one"), label(), None, Utc::now())
        .await
        .expect("finish");
    let (kept, completed) = (f.kept, f.completed);
    assert_eq!(
        (kept, completed),
        (lotsawa_core::store::Checkpoint::RunEnded, false)
    );
    let f = store
        .finish_last_chunk(id, 1, &done(0, "one"), label(), None, Utc::now())
        .await
        .expect("finish");
    let (kept, completed) = (f.kept, f.completed);
    assert_eq!(kept, lotsawa_core::store::Checkpoint::Recorded);
    assert!(completed, "every chunk done: completed in the same commit");
    let job = store.get(id).await.expect("get");
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.chunks_completed, 2);
    let result = job.result.expect("a result");
    assert!(result.translation.contains("one") && result.translation.contains("two"));
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
}

#[tokio::test]
async fn a_completed_job_hands_its_slot_to_the_oldest_pending_one_in_the_same_commit() {
    let (_dir, store) = open();
    let a = insert(&store).await;
    let b = insert(&store).await;
    let c = insert(&store).await;
    let claimed = store.claim_many(1, 1, Utc::now()).await.expect("claim");
    assert_eq!(claimed[0].id, a);
    // Not the last chunk: nothing is handed on.
    let f = store
        .finish_last_chunk(a, 1, &done(1, "two"), label(), Some(1), Utc::now())
        .await
        .expect("finish");
    assert!(!f.completed && f.next.is_none());
    let f = store
        .finish_last_chunk(a, 1, &done(0, "one"), label(), Some(1), Utc::now())
        .await
        .expect("finish");
    assert!(f.completed);
    let (next, chunks) = f.next.expect("the slot is handed on");
    assert_eq!(next.id, b, "FIFO");
    assert_eq!(chunks.len(), 2, "with its chunks");
    assert_eq!((next.status, next.run), (JobStatus::Processing, 1));
    assert_eq!(store.get(a).await.expect("a").status, JobStatus::Completed);
    assert_eq!(store.get(b).await.expect("b").status, JobStatus::Processing);
    assert_eq!(store.get(c).await.expect("c").status, JobStatus::Pending);
    assert_eq!(
        store.slots_in_use().await.expect("slots"),
        1,
        "the limit holds"
    );
}
