//! The cases. Each takes an empty store and panics with a message on the
//! first behaviour that differs from the port's contract.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use lotsawa_core::store::{
    Change, Checkpoint, ChunkDone, JobPatch, TransitionOutcome, transition, transition_by_id,
};
use lotsawa_core::{
    Applied, ChunkStatus, EngineChoice, Job, JobConfig, JobId, JobResult, JobService, JobStatus,
    JobStore, JobType, ListQuery, Runner, Service, ServiceError, StoreError, Tenant,
};

type Store = Arc<dyn JobStore>;

/// Creation times strictly increase, so "newest first" is well defined on
/// every store (DynamoDB sorts by `createdAt`, in milliseconds).
fn created_at() -> DateTime<Utc> {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_millis();
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {
                return Utc
                    .timestamp_millis_opt(next)
                    .single()
                    .unwrap_or_else(Utc::now);
            }
            Err(p) => prev = p,
        }
    }
}

fn job_of(chunks: &[String]) -> Job {
    Job {
        tenant: Tenant::default(),
        id: JobId::new(),
        kind: JobType::Translation,
        status: JobStatus::Pending,
        source: chunks.concat(),
        config: JobConfig::default(),
        result: None,
        error: None,
        chunks_completed: 0,
        chunks_total: chunks.len() as u32,
        created_at: created_at(),
        started_at: None,
        completed_at: None,
        cancelled_at: None,
        attempts: 0,
        callback: None,
        batch: None,
    }
}

async fn create_with(store: &Store, chunks: &[String]) -> Job {
    let job = job_of(chunks);
    store.create(&job, chunks).await.expect("create a job");
    job
}

async fn create(store: &Store, n: usize) -> Job {
    let chunks: Vec<String> = (0..n).map(|i| format!("ཀ་ཁ་{i}། ")).collect();
    create_with(store, &chunks).await
}

fn applied(outcome: TransitionOutcome, what: &str) -> Job {
    match outcome {
        TransitionOutcome::Applied(j) => j,
        other => panic!("{what}: expected the change to apply, got {other:?}"),
    }
}

async fn change(store: &Store, job: &Job, c: Change) -> TransitionOutcome {
    transition(&**store, job, c, Utc::now())
        .await
        .expect("store call")
}

async fn start(store: &Store, job: &Job) -> Job {
    applied(
        change(store, job, Change::Start { limit: 100 }).await,
        "start",
    )
}

fn done(index: u32, text: &str) -> ChunkDone {
    ChunkDone {
        index,
        translation: text.to_owned(),
        duration_ms: Some(5),
        attempts: 1,
        confidence: Some(0.5),
        from_memory: false,
        context: None,
        warning: None,
    }
}

fn result(text: &str) -> JobResult {
    JobResult {
        translation: text.to_owned(),
        confidence: Some(0.5),
        processing_time: 5,
        engine: "echo".into(),
        model: None,
        warnings: vec![],
        chunks_from_memory: 0,
    }
}

async fn checkpoint_all(store: &Store, job: &Job) {
    for i in 0..job.chunks_total {
        let c = store
            .checkpoint(job.id, job.attempts, &done(i, &format!("out {i}")))
            .await
            .expect("checkpoint");
        assert_eq!(c, Checkpoint::Recorded, "checkpoint of chunk {i}");
    }
}

/// A fresh one-chunk job brought to `status` by legal changes only.
async fn job_in(store: &Store, status: JobStatus) -> Job {
    let job = create(store, 1).await;
    match status {
        JobStatus::Pending => job,
        JobStatus::Processing => start(store, &job).await,
        JobStatus::Completed => {
            let j = start(store, &job).await;
            checkpoint_all(store, &j).await;
            let j = store.get(j.id).await.expect("get");
            applied(
                change(store, &j, Change::Complete(result("out 0"))).await,
                "complete",
            )
        }
        JobStatus::Failed => {
            let j = start(store, &job).await;
            let fail = Change::Fail {
                error: "chunk 0 failed: no".into(),
                chunk: Some(0),
            };
            applied(change(store, &j, fail).await, "fail")
        }
        JobStatus::Cancelled => applied(change(store, &job, Change::Cancel).await, "cancel"),
    }
}

fn every_change() -> Vec<Change> {
    vec![
        Change::Start { limit: 100 },
        Change::Complete(result("x")),
        Change::Fail {
            error: "failed".into(),
            chunk: None,
        },
        Change::Cancel,
        Change::Retry,
        Change::Requeue,
    ]
}

/// Every status × every change: allowed ones apply and give the status
/// `JobStatus::apply` names; refused ones write nothing.
pub async fn every_transition_is_checked_and_compare_and_set(store: Store) {
    for from in JobStatus::ALL {
        for c in every_change() {
            let job = job_in(&store, *from).await;
            let mut job = store.get(job.id).await.expect("get");
            let t = c.transition();
            if matches!(c, Change::Complete(_)) && *from == JobStatus::Processing {
                // A completion needs every chunk done.
                checkpoint_all(&store, &job).await;
                job = store.get(job.id).await.expect("get");
            }
            let expected = from.apply(t);
            let out = change(&store, &job, c.clone()).await;
            let after = store.get(job.id).await.expect("get");
            match (expected, out) {
                (Ok(to), TransitionOutcome::Applied(j)) => {
                    assert_eq!(j.status, to, "{from} --{t:?}--> returned status");
                    assert_eq!(after.status, to, "{from} --{t:?}--> stored status");
                }
                (Err(_), TransitionOutcome::NotAllowed(e)) => {
                    assert_eq!(e.from, *from);
                    assert_eq!(after, job, "{from} --{t:?}--> refused but wrote");
                }
                (e, o) => panic!("{from} --{t:?}-->: expected {e:?}, got {o:?}"),
            }
            // Leave nothing holding a slot for the next case.
            if after.status == JobStatus::Processing {
                let fail = Change::Fail {
                    error: "cleanup".into(),
                    chunk: None,
                };
                applied(change(&store, &after, fail).await, "cleanup");
            }
        }
    }
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
}

/// A worker of an old run can neither end, checkpoint nor patch the new run.
pub async fn a_stale_run_cannot_write(store: Store) {
    let job = create(&store, 2).await;
    let run1 = start(&store, &job).await;
    assert_eq!(run1.attempts, 1);
    let cancelled = applied(change(&store, &run1, Change::Cancel).await, "cancel");
    let pending = applied(change(&store, &cancelled, Change::Retry).await, "retry");
    let run2 = start(&store, &pending).await;
    assert_eq!(run2.attempts, 2);

    let c = store
        .checkpoint(job.id, 1, &done(0, "stale"))
        .await
        .expect("checkpoint");
    assert_eq!(c, Checkpoint::RunEnded);
    let fail = Change::Fail {
        error: "stale".into(),
        chunk: Some(0),
    };
    let out = transition_by_id(&*store, job.id, Some(1), fail.clone(), Utc::now())
        .await
        .expect("store call");
    assert!(
        matches!(out, TransitionOutcome::LostRace(ref j) if j.status == JobStatus::Processing),
        "run 1 ended run 2: {out:?}"
    );
    // A patch planned on the run-1 snapshot loses the compare-and-set.
    let stale = JobPatch::plan(&run1, fail, Utc::now()).expect("plan");
    assert_eq!(
        store.apply(job.id, &stale).await.expect("apply"),
        Applied::Lost
    );
    let now = store.get(job.id).await.expect("get");
    assert_eq!(
        (now.status, now.attempts, now.chunks_completed),
        (JobStatus::Processing, 2, 0)
    );
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert!(chunks.iter().all(|c| c.translation.is_none()));
}

/// Jobs are claimed oldest first, each once.
pub async fn claims_are_fifo(store: Store) {
    let ids = [
        create(&store, 1).await.id,
        create(&store, 1).await.id,
        create(&store, 1).await.id,
    ];
    for id in ids {
        let got = store
            .claim_next(10, Utc::now())
            .await
            .expect("claim")
            .expect("a pending job");
        assert_eq!(got.id, id);
        assert_eq!(got.status, JobStatus::Processing);
        assert_eq!(got.attempts, 1);
        assert!(got.started_at.is_some());
    }
    assert!(
        store
            .claim_next(10, Utc::now())
            .await
            .expect("claim")
            .is_none()
    );
    assert_eq!(store.slots_in_use().await.expect("slots"), 3);
}

/// With one slot and two claimers at once, exactly one wins; the slot comes
/// back when its job ends.
pub async fn two_claimers_respect_the_concurrency_limit(store: Store) {
    let a = create(&store, 1).await;
    let b = create(&store, 1).await;
    let (s1, s2) = (store.clone(), store.clone());
    let (r1, r2) = tokio::join!(
        async move { s1.claim_next(1, Utc::now()).await },
        async move { s2.claim_next(1, Utc::now()).await },
    );
    let won: Vec<Job> = [r1.expect("claim"), r2.expect("claim")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "both claimers won: {won:?}");
    assert_eq!(won[0].id, a.id);
    assert_eq!(store.slots_in_use().await.expect("slots"), 1);
    assert!(
        store
            .claim_next(1, Utc::now())
            .await
            .expect("claim")
            .is_none(),
        "a second job started beyond the limit"
    );
    let fail = Change::Fail {
        error: "done".into(),
        chunk: None,
    };
    applied(change(&store, &won[0], fail).await, "fail");
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
    let next = store
        .claim_next(1, Utc::now())
        .await
        .expect("claim")
        .expect("the second job");
    assert_eq!(next.id, b.id);
}

/// The same chunk completed twice is written and counted once.
pub async fn checkpoints_are_idempotent(store: Store) {
    let job = start(&store, &create(&store, 2).await).await;
    let first = store
        .checkpoint(job.id, 1, &done(0, "first"))
        .await
        .expect("checkpoint");
    let again = store
        .checkpoint(job.id, 1, &done(0, "second"))
        .await
        .expect("checkpoint");
    assert_eq!(
        (first, again),
        (Checkpoint::Recorded, Checkpoint::AlreadyDone)
    );
    let now = store.get(job.id).await.expect("get");
    assert_eq!(now.chunks_completed, 1);
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert_eq!(chunks[0].translation.as_deref(), Some("first"));
    assert_eq!(chunks[0].status, ChunkStatus::Completed);
    assert_eq!(chunks[0].run, 1);
    assert_eq!(chunks[1].status, ChunkStatus::Pending);
    // From index 1 on: only the second chunk.
    let from1 = store.chunks(job.id, 1).await.expect("chunks");
    assert_eq!(from1.len(), 1);
    assert_eq!(from1[0].index, 1);
}

/// Cancelling a pending job holds no slot; cancelling a processing job
/// gives its slot back; neither can be cancelled twice.
pub async fn cancel_of_pending_and_processing(store: Store) {
    let pending = create(&store, 1).await;
    let running = start(&store, &create(&store, 1).await).await;
    assert_eq!(store.slots_in_use().await.expect("slots"), 1);
    let c1 = applied(change(&store, &pending, Change::Cancel).await, "cancel");
    assert_eq!(c1.status, JobStatus::Cancelled);
    assert!(c1.cancelled_at.is_some());
    assert_eq!(store.slots_in_use().await.expect("slots"), 1);
    let c2 = applied(change(&store, &running, Change::Cancel).await, "cancel");
    assert_eq!(c2.status, JobStatus::Cancelled);
    assert_eq!(store.slots_in_use().await.expect("slots"), 0);
    assert!(matches!(
        change(&store, &c2, Change::Cancel).await,
        TransitionOutcome::NotAllowed(_)
    ));
    // Nothing is left to claim.
    assert!(
        store
            .claim_next(5, Utc::now())
            .await
            .expect("claim")
            .is_none()
    );
}

/// Retry keeps completed chunks and makes the failed one pending again.
pub async fn retry_resets_only_unfinished_chunks(store: Store) {
    let job = start(&store, &create(&store, 3).await).await;
    store
        .checkpoint(job.id, 1, &done(0, "kept"))
        .await
        .expect("checkpoint");
    store
        .note_chunk_error(job.id, 1, "503 from the provider")
        .await
        .expect("note");
    store
        .note_chunk_error(job.id, 1, "503 again")
        .await
        .expect("note");
    let job = store.get(job.id).await.expect("get");
    let fail = Change::Fail {
        error: "chunk 1 failed after 2 attempts: 503 again".into(),
        chunk: Some(1),
    };
    let failed = applied(change(&store, &job, fail).await, "fail");
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.completed_at.is_some());
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    let st: Vec<ChunkStatus> = chunks.iter().map(|c| c.status).collect();
    assert_eq!(
        st,
        [
            ChunkStatus::Completed,
            ChunkStatus::Failed,
            ChunkStatus::Pending
        ]
    );
    assert_eq!(chunks[1].attempts, 2);
    assert_eq!(chunks[1].error.as_deref(), Some("503 again"));

    let retried = applied(change(&store, &failed, Change::Retry).await, "retry");
    assert_eq!(retried.status, JobStatus::Pending);
    assert_eq!(retried.error, None);
    assert_eq!(retried.completed_at, None);
    assert_eq!(retried.started_at, None);
    assert_eq!(retried.chunks_completed, 1);
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert_eq!(chunks[0].status, ChunkStatus::Completed);
    assert_eq!(chunks[0].translation.as_deref(), Some("kept"));
    assert_eq!(chunks[1].status, ChunkStatus::Pending);
    assert_eq!(chunks[1].error, None);
    assert_eq!(chunks[2].status, ChunkStatus::Pending);
    let run2 = start(&store, &retried).await;
    assert_eq!(run2.attempts, 2);
}

/// A service over the store, with a runner that starts nothing.
fn service(store: &Store) -> Service {
    struct Idle;
    #[async_trait::async_trait]
    impl Runner for Idle {
        async fn queued(&self, _: &Job) -> Result<(), ServiceError> {
            Ok(())
        }
        async fn cancelled(&self, _: &Job, _: JobStatus) {}
        async fn wait_for_change(&self, _: JobId, _: &mut u64, max_wait: Duration) {
            tokio::time::sleep(max_wait).await;
        }
        async fn extra_metrics(&self) -> Result<String, ServiceError> {
            Ok(String::new())
        }
        fn ready(&self) -> Result<(), ServiceError> {
            Ok(())
        }
    }
    Service::new(
        store.clone(),
        Arc::new(Idle),
        EngineChoice {
            names: vec!["echo".into()],
            default: "echo".into(),
            place: "test",
            models: Vec::new(),
        },
    )
}

async fn page(svc: &Service, q: ListQuery) -> (Vec<JobId>, Option<String>) {
    let p = svc.list(q).await.expect("list");
    (p.jobs.iter().map(|v| v.job.id).collect(), p.next_cursor)
}

/// Newest first; a cursor keeps its place while newer jobs arrive; filters
/// by status and type.
pub async fn lists_are_newest_first_with_stable_cursors(store: Store) {
    let svc = service(&store);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&store, 1).await.id);
    }
    let q = |cursor: Option<String>| ListQuery {
        tenant: Tenant::default(),
        status: None,
        kind: None,
        limit: 2,
        cursor,
    };
    let (p1, c1) = page(&svc, q(None)).await;
    assert_eq!(p1, [ids[4], ids[3]]);
    // Newer jobs arrive between pages.
    create(&store, 1).await;
    create(&store, 1).await;
    let (p2, c2) = page(&svc, q(c1)).await;
    assert_eq!(p2, [ids[2], ids[1]]);
    let (p3, c3) = page(&svc, q(c2)).await;
    assert_eq!(p3, [ids[0]]);
    assert_eq!(c3, None);

    // By status: the two cancelled ones, newest first, over two pages.
    let a = store.get(ids[1]).await.expect("get");
    let b = store.get(ids[3]).await.expect("get");
    applied(change(&store, &a, Change::Cancel).await, "cancel");
    applied(change(&store, &b, Change::Cancel).await, "cancel");
    let cancelled = |cursor| ListQuery {
        tenant: Tenant::default(),
        status: Some(JobStatus::Cancelled),
        kind: None,
        limit: 1,
        cursor,
    };
    let (s1, sc) = page(&svc, cancelled(None)).await;
    assert_eq!(s1, [ids[3]]);
    let (s2, sc2) = page(&svc, cancelled(sc)).await;
    assert_eq!(s2, [ids[1]]);
    assert_eq!(sc2, None);
    let translit = ListQuery {
        tenant: Tenant::default(),
        status: None,
        kind: Some(JobType::Transliteration),
        limit: 10,
        cursor: None,
    };
    assert!(page(&svc, translit).await.0.is_empty());
    let listed = svc.list(q(None)).await.expect("list");
    assert!(
        listed.jobs.iter().all(|v| v.job.source.is_empty()),
        "list items carry no source text"
    );
}

/// A cursor issued for another filter, or one we never issued, is invalid
/// input, not a server error.
pub async fn foreign_and_forged_cursors_are_invalid_input(store: Store) {
    let svc = service(&store);
    for _ in 0..3 {
        create(&store, 1).await;
    }
    let (_, cursor) = page(
        &svc,
        ListQuery {
            tenant: Tenant::default(),
            status: Some(JobStatus::Pending),
            kind: None,
            limit: 1,
            cursor: None,
        },
    )
    .await;
    let cursor = cursor.expect("a next page");
    let forged_position =
        lotsawa_core::store::Cursor::encode(&lotsawa_core::ListFilter::default(), "not-a-position");
    for bad in [cursor, "garbage!".to_owned(), forged_position] {
        let r = svc
            .list(ListQuery {
                tenant: Tenant::default(),
                status: None,
                kind: None,
                limit: 1,
                cursor: Some(bad.clone()),
            })
            .await;
        assert!(
            matches!(r, Err(ServiceError::Invalid(_))),
            "cursor {bad}: {r:?}"
        );
    }
}

/// The memory answers what was put, and keeps the first entry of a key.
pub async fn translation_memory_keeps_the_first_entry(store: Store) {
    let key = format!("{}-key", JobId::new());
    assert_eq!(store.memory_get(&key).await.expect("get"), None);
    store
        .memory_put(&key, "first", Some(0.9))
        .await
        .expect("put");
    store.memory_put(&key, "second", None).await.expect("put");
    assert_eq!(
        store.memory_get(&key).await.expect("get"),
        Some(("first".to_owned(), Some(0.9)))
    );
}

/// Source, chunk translation and result over 100 KB come back exactly.
pub async fn large_texts_round_trip_byte_for_byte(store: Store) {
    let big = |seed: &str| -> String {
        let mut s = String::new();
        let mut i = 0u32;
        while s.len() < 130_000 {
            s.push_str(&format!("{seed}་ཀ་ཁ་ག་{i}། "));
            i += 1;
        }
        s
    };
    let chunks = vec![big("བོད"), "ཁ།".to_owned()];
    let job = create_with(&store, &chunks).await;
    let stored = store.get(job.id).await.expect("get");
    assert_eq!(stored.source, chunks.concat(), "source");
    let run = start(&store, &stored).await;
    let out0 = big("tr");
    store
        .checkpoint(job.id, run.attempts, &done(0, &out0))
        .await
        .expect("checkpoint");
    store
        .checkpoint(job.id, run.attempts, &done(1, "small"))
        .await
        .expect("checkpoint");
    let ledger = store.chunks(job.id, 0).await.expect("chunks");
    assert_eq!(ledger[0].source, chunks[0], "chunk source");
    assert_eq!(ledger[0].translation.as_deref(), Some(out0.as_str()));
    let whole = big("result");
    let run = store.get(job.id).await.expect("get");
    let done_job = applied(
        change(&store, &run, Change::Complete(result(&whole))).await,
        "complete",
    );
    assert_eq!(done_job.status, JobStatus::Completed);
    let back = store.get(job.id).await.expect("get");
    assert_eq!(back.result.map(|r| r.translation), Some(whole));
    assert_eq!(back.source, chunks.concat());
}

/// Counts follow the jobs through their changes.
pub async fn counts_by_status(store: Store) {
    job_in(&store, JobStatus::Pending).await;
    job_in(&store, JobStatus::Pending).await;
    job_in(&store, JobStatus::Processing).await;
    job_in(&store, JobStatus::Completed).await;
    job_in(&store, JobStatus::Failed).await;
    job_in(&store, JobStatus::Cancelled).await;
    let counts = store.counts().await.expect("counts");
    let of = |s: JobStatus| {
        counts
            .iter()
            .find(|(st, _)| *st == s)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(of(JobStatus::Pending), 2);
    assert_eq!(of(JobStatus::Processing), 1);
    assert_eq!(of(JobStatus::Completed), 1);
    assert_eq!(of(JobStatus::Failed), 1);
    assert_eq!(of(JobStatus::Cancelled), 1);
    assert_eq!(store.slots_in_use().await.expect("slots"), 1);
}

/// An unknown id is `NotFound` everywhere a job is read.
pub async fn unknown_jobs_are_not_found(store: Store) {
    let id = JobId::new();
    assert!(matches!(store.get(id).await, Err(StoreError::NotFound(x)) if x == id));
    assert!(matches!(
        store.chunks(id, 0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.pulse(id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.get_brief(id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.chunks_between(id, 0, 5).await,
        Err(StoreError::NotFound(_))
    ));
    let r = service(&store).get(&Tenant::default(), id).await;
    assert!(matches!(r, Err(ServiceError::NotFound(_))), "{r:?}");
}

/// What a watcher reads: a pulse that follows status, run and completed
/// chunks; a brief job without texts (the whole job keeps them); chunks of
/// a range only; and, through the service, a watch view that carries the
/// result once the job is completed.
pub async fn watchers_read_pulses_briefs_and_chunk_ranges(store: Store) {
    let job = create(&store, 3).await;
    let pulse = |status, attempts, chunks_completed| lotsawa_core::store::Pulse {
        tenant: Tenant::default(),
        status,
        attempts,
        chunks_completed,
    };
    assert_eq!(
        store.pulse(job.id).await.expect("pulse"),
        pulse(JobStatus::Pending, 0, 0)
    );
    let brief = store.get_brief(job.id).await.expect("brief");
    assert_eq!((brief.status, brief.chunks_total), (JobStatus::Pending, 3));
    assert_eq!(brief.source, "", "a brief job carries no source");
    assert!(!store.get(job.id).await.expect("get").source.is_empty());

    let job = start(&store, &job).await;
    store
        .checkpoint(job.id, 1, &done(0, "first"))
        .await
        .expect("checkpoint");
    assert_eq!(
        store.pulse(job.id).await.expect("pulse"),
        pulse(JobStatus::Processing, 1, 1)
    );
    let first = store.chunks_between(job.id, 0, 1).await.expect("range");
    assert_eq!(first.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0]);
    assert_eq!(first[0].translation.as_deref(), Some("first"));
    let rest = store.chunks_between(job.id, 1, 3).await.expect("range");
    assert_eq!(rest.iter().map(|c| c.index).collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        store
            .chunks_between(job.id, 3, 9)
            .await
            .expect("range")
            .is_empty()
    );

    for i in 1..3 {
        store
            .checkpoint(job.id, 1, &done(i, &format!("out {i}")))
            .await
            .expect("checkpoint");
    }
    let now = store.get(job.id).await.expect("get");
    applied(
        change(&store, &now, Change::Complete(result("first out 1 out 2"))).await,
        "complete",
    );
    let brief = store.get_brief(job.id).await.expect("brief");
    assert_eq!(brief.status, JobStatus::Completed);
    assert!(brief.result.is_none(), "a brief job carries no result");
    let svc = service(&store);
    let view = svc.watch(&Tenant::default(), job.id).await.expect("watch");
    assert_eq!(
        view.job.result.map(|r| r.translation).as_deref(),
        Some("first out 1 out 2")
    );
    assert!(view.partial.is_none());
    let out = svc
        .chunks_from(&Tenant::default(), job.id, 1, 2)
        .await
        .expect("chunks");
    assert_eq!(out.iter().map(|c| c.index).collect::<Vec<_>>(), vec![1]);
}

async fn create_for(store: &Store, tenant: &Tenant, kind: JobType) -> Job {
    let chunks = vec!["ཀ་ཁ། ".to_owned()];
    let mut job = job_of(&chunks);
    job.tenant = tenant.clone();
    job.kind = kind;
    store.create(&job, &chunks).await.expect("create a job");
    job
}

/// Every job belongs to a tenant: another tenant's job does not exist for a
/// caller (get, watch, pulse, chunks, cancel, retry all answer NotFound and
/// change nothing), lists and their filters hold only the caller's jobs,
/// and a cursor from one tenant's list is refused in another's.
pub async fn tenants_see_only_their_own_jobs(store: Store) {
    let a = Tenant::parse("tenant-a").expect("tenant");
    let b = Tenant::parse("tenant-b").expect("tenant");
    let a1 = create_for(&store, &a, JobType::Translation).await;
    let a2 = create_for(&store, &a, JobType::Transliteration).await;
    let a3 = create_for(&store, &a, JobType::Translation).await;
    let b1 = create_for(&store, &b, JobType::Translation).await;
    assert_eq!(store.get(a1.id).await.expect("get").tenant, a);
    let svc = service(&store);
    let not_found = |r: Result<(), ServiceError>, what: &str| {
        assert!(matches!(r, Err(ServiceError::NotFound(_))), "{what}: {r:?}");
    };
    not_found(svc.get(&b, a1.id).await.map(drop), "get");
    not_found(svc.watch(&b, a1.id).await.map(drop), "watch");
    not_found(svc.pulse(&b, a1.id).await.map(drop), "pulse");
    not_found(svc.chunks_from(&b, a1.id, 0, 1).await.map(drop), "chunks");
    not_found(svc.cancel(&b, a1.id).await.map(drop), "cancel");
    assert_eq!(
        store.get(a1.id).await.expect("get").status,
        JobStatus::Pending,
        "another tenant's cancel changed nothing"
    );
    let cancelled = svc.cancel(&a, a1.id).await.expect("own cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    not_found(svc.retry(&b, a1.id).await.map(drop), "retry");
    assert_eq!(
        store.get(a1.id).await.expect("get").status,
        JobStatus::Cancelled
    );
    assert!(svc.get(&a, a1.id).await.is_ok());

    let ids = |page: lotsawa_core::JobPage| page.jobs.iter().map(|v| v.job.id).collect::<Vec<_>>();
    let q = |tenant: &Tenant, status, kind, limit, cursor| ListQuery {
        tenant: tenant.clone(),
        status,
        kind,
        limit,
        cursor,
    };
    let all_a = ids(svc.list(q(&a, None, None, 10, None)).await.expect("list"));
    assert_eq!(all_a, vec![a3.id, a2.id, a1.id]);
    let all_b = ids(svc.list(q(&b, None, None, 10, None)).await.expect("list"));
    assert_eq!(all_b, vec![b1.id]);
    let pending_b = ids(svc
        .list(q(&b, Some(JobStatus::Pending), None, 10, None))
        .await
        .expect("list"));
    assert_eq!(pending_b, vec![b1.id]);
    let pending_a = ids(svc
        .list(q(&a, Some(JobStatus::Pending), None, 10, None))
        .await
        .expect("list"));
    assert_eq!(pending_a, vec![a3.id, a2.id]);
    let translit_b = ids(svc
        .list(q(&b, None, Some(JobType::Transliteration), 10, None))
        .await
        .expect("list"));
    assert!(translit_b.is_empty());
    let first = svc.list(q(&a, None, None, 1, None)).await.expect("list");
    let cursor = first.next_cursor.clone().expect("a next page");
    let r = svc.list(q(&b, None, None, 1, Some(cursor))).await;
    assert!(matches!(r, Err(ServiceError::Invalid(_))), "{r:?}");
}

/// API keys: stored by hash, found by hash, listed oldest first, revoked
/// by id; the service authenticates a key to its tenant and refuses an
/// unknown, malformed or revoked one.
pub async fn api_keys_are_found_by_hash_and_revoked(store: Store) {
    use lotsawa_core::auth::{key_hash, new_key};
    let acme = Tenant::parse("acme").expect("tenant");
    let (k1, r1) = new_key(acme.clone(), created_at());
    let (k2, r2) = new_key(Tenant::parse("other").expect("tenant"), created_at());
    store.key_put(&r1, &key_hash(&k1)).await.expect("put");
    store.key_put(&r2, &key_hash(&k2)).await.expect("put");
    assert_eq!(
        store.key_find(&key_hash(&k1)).await.expect("find"),
        Some(r1.clone())
    );
    assert_eq!(store.key_find(&key_hash("nope")).await.expect("find"), None);
    let listed = store.keys().await.expect("keys");
    assert_eq!(
        listed.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        vec![r1.id.clone(), r2.id.clone()]
    );
    let svc = service(&store);
    assert_eq!(svc.authenticate(&k1).await.expect("auth"), acme);
    // The same shape, one digit different.
    let last = if k1.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &k1[..k1.len() - 1]);
    for bad in ["", "lts_x", &wrong, &format!("{k1}0")] {
        let r = svc.authenticate(bad).await;
        assert!(
            matches!(r, Err(ServiceError::Unauthorized(_))),
            "{bad}: {r:?}"
        );
    }
    assert!(
        store
            .key_revoke(&r1.id, created_at())
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .key_revoke("000000000000", created_at())
            .await
            .expect("revoke")
    );
    let revoked = store
        .key_find(&key_hash(&k1))
        .await
        .expect("find")
        .expect("kept");
    assert!(revoked.revoked_at.is_some());
    let r = svc.authenticate(&k1).await;
    assert!(matches!(r, Err(ServiceError::Unauthorized(_))), "{r:?}");
    assert_eq!(
        svc.authenticate(&k2)
            .await
            .expect("the other key still works")
            .as_str(),
        "other"
    );
}

/// Idempotency keys: the first record for a (tenant, key) holds within the
/// window, an expired one is replaced, tenants are independent; through
/// the service, the same request again makes no second job, a different
/// one is refused.
pub async fn idempotency_keys_hold_their_first_request(store: Store) {
    use lotsawa_core::store::IdempotencyRecord;
    let t0 = created_at();
    let rec = |tenant: &Tenant, fp: &str, at| IdempotencyRecord {
        tenant: tenant.clone(),
        key: "order-17".into(),
        fingerprint: fp.into(),
        job_id: JobId::new(),
        created_at: at,
    };
    let a = Tenant::parse("idem-a").expect("tenant");
    let b = Tenant::parse("idem-b").expect("tenant");
    let first = rec(&a, "fp1", t0);
    let window_start = t0 - chrono::Duration::hours(1);
    assert_eq!(
        store
            .idempotency_put(&first, window_start)
            .await
            .expect("put"),
        first
    );
    let again = rec(&a, "fp2", t0 + chrono::Duration::seconds(5));
    assert_eq!(
        store
            .idempotency_put(&again, window_start)
            .await
            .expect("put"),
        first,
        "the first record holds"
    );
    let other = rec(&b, "fp1", t0);
    assert_eq!(
        store
            .idempotency_put(&other, window_start)
            .await
            .expect("put"),
        other,
        "another tenant's key is its own"
    );
    let later = rec(&a, "fp3", t0 + chrono::Duration::days(2));
    assert_eq!(
        store
            .idempotency_put(&later, t0 + chrono::Duration::days(1))
            .await
            .expect("put"),
        later,
        "an expired record is replaced"
    );

    let svc = service(&store);
    let new = |tenant: &Tenant, text: &str| lotsawa_core::NewJob {
        tenant: tenant.clone(),
        kind: JobType::Translation,
        source: lotsawa_core::SourceText::parse(text.into()).expect("text"),
        config: JobConfig::default(),
    };
    let s1 = svc
        .submit_once(new(&a, "ཀ་ཁ། "), "req-1")
        .await
        .expect("first");
    assert!(!s1.replayed);
    let s2 = svc
        .submit_once(new(&a, "ཀ་ཁ། "), "req-1")
        .await
        .expect("again");
    assert_eq!((s2.job_id, s2.replayed), (s1.job_id, true));
    let r = svc.submit_once(new(&a, "ག་ང། "), "req-1").await;
    assert!(
        matches!(r, Err(ServiceError::IdempotencyMismatch(_))),
        "{r:?}"
    );
    let s3 = svc
        .submit_once(new(&b, "ཀ་ཁ། "), "req-1")
        .await
        .expect("other tenant");
    assert!(!s3.replayed && s3.job_id != s1.job_id);
    let page = svc
        .list(ListQuery {
            tenant: a.clone(),
            status: None,
            kind: None,
            limit: 10,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), 1, "one job for two submissions");
    assert_eq!(store.get(s1.job_id).await.expect("job").tenant, a);
}

/// Job-creation buckets: a burst, then empty with the wait until the next
/// token; refilled by time; one bucket per tenant; concurrent takes never
/// spend a token twice.
pub async fn rate_buckets_per_tenant(store: Store) {
    use lotsawa_core::rate::RateLimit;
    let limit = RateLimit {
        per_minute: 60,
        burst: 3,
    };
    let a = Tenant::parse("rate-a").expect("tenant");
    let b = Tenant::parse("rate-b").expect("tenant");
    let t0 = created_at();
    for i in 0..3 {
        assert_eq!(
            store.take_token(&a, limit, t0).await.expect("take"),
            None,
            "token {i} of the burst"
        );
    }
    assert_eq!(
        store.take_token(&a, limit, t0).await.expect("take"),
        Some(Duration::from_secs(1)),
        "empty: one token a second"
    );
    assert_eq!(store.take_token(&b, limit, t0).await.expect("take"), None);
    let later = t0 + chrono::Duration::seconds(2);
    assert_eq!(
        store.take_token(&a, limit, later).await.expect("take"),
        None
    );
    // Eight concurrent takes on a fresh bucket of three: exactly three win.
    let c = Tenant::parse("rate-c").expect("tenant");
    let takes = (0..8).map(|_| {
        let store = store.clone();
        let c = c.clone();
        tokio::spawn(async move { store.take_token(&c, limit, t0).await })
    });
    let mut granted = 0;
    for t in takes {
        if t.await.expect("join").expect("take").is_none() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3, "concurrent takes spent the burst exactly once");
}

/// Each tenant's waiting jobs are counted through creation, start, cancel
/// and retry; a service with a pending cap refuses a tenant at its cap
/// (and only that tenant) until one of its jobs starts.
pub async fn pending_jobs_are_counted_and_capped_per_tenant(store: Store) {
    let a = Tenant::parse("pending-a").expect("tenant");
    let b = Tenant::parse("pending-b").expect("tenant");
    let count = |t: &Tenant| {
        let store = store.clone();
        let t = t.clone();
        async move { store.pending_count(&t).await.expect("pending count") }
    };
    assert_eq!(count(&a).await, 0, "a tenant without jobs");
    let a1 = create_for(&store, &a, JobType::Translation).await;
    let a2 = create_for(&store, &a, JobType::Translation).await;
    create_for(&store, &b, JobType::Translation).await;
    assert_eq!((count(&a).await, count(&b).await), (2, 1));
    let started = start(&store, &a1).await;
    assert_eq!(count(&a).await, 1, "a started job no longer waits");
    applied(change(&store, &a2, Change::Cancel).await, "cancel");
    assert_eq!(count(&a).await, 0, "a cancelled job no longer waits");
    let a2 = store.get(a2.id).await.expect("get");
    applied(change(&store, &a2, Change::Retry).await, "retry");
    assert_eq!(count(&a).await, 1, "a retried job waits again");
    applied(change(&store, &started, Change::Requeue).await, "requeue");
    assert_eq!(count(&a).await, 2, "a requeued job waits again");

    let svc = service(&store).with_max_pending(Some(2));
    let new = |tenant: &Tenant| lotsawa_core::NewJob {
        tenant: tenant.clone(),
        kind: JobType::Translation,
        source: lotsawa_core::SourceText::parse("ཀ་ཁ། ".into()).expect("text"),
        config: JobConfig::default(),
    };
    let r = svc.submit(new(&a)).await;
    assert!(
        matches!(r, Err(ServiceError::QuotaExceeded(_))),
        "a tenant at its cap: {r:?}"
    );
    let r = svc.submit_once(new(&a), "capped").await;
    assert!(
        matches!(r, Err(ServiceError::QuotaExceeded(_))),
        "also with an idempotency key: {r:?}"
    );
    assert_eq!(count(&a).await, 2, "a refused submission stores nothing");
    svc.submit(new(&b))
        .await
        .expect("another tenant under its cap");
    let waiting = store.get(a2.id).await.expect("get");
    start(&store, &waiting).await;
    svc.submit(new(&a))
        .await
        .expect("room again once a job started");
    assert_eq!(count(&a).await, 2);
}

/// The ids of the jobs whose callbacks are due at `at`, as listed.
async fn due_ids(store: &Store, at: DateTime<Utc>) -> Vec<JobId> {
    store
        .callbacks_due(at, 10)
        .await
        .expect("due")
        .iter()
        .map(|j| j.id)
        .collect()
}

/// A job with a callback URL gets its event's delivery in the same commit
/// as the transition that ends it; due deliveries are listed earliest
/// first, and a delivery's state is replaced only as read (one deliverer
/// wins, and a newer event is never overwritten by an older delivery).
pub async fn callbacks_are_written_with_the_terminal_transition(store: Store) {
    use lotsawa_core::{Callback, CallbackStatus};
    let with_url = |chunks: &[String]| {
        let mut job = job_of(chunks);
        job.config.callback_url = Some("https://hooks.example.org/lotsawa".into());
        job
    };
    let chunks = vec!["ཀ་ཁ། ".to_owned()];
    let a = with_url(&chunks);
    store.create(&a, &chunks).await.expect("create");
    let b = with_url(&chunks);
    store.create(&b, &chunks).await.expect("create");
    let plain = create(&store, 1).await;
    assert!(store.get(a.id).await.expect("get").callback.is_none());

    // Starting is not an event that is delivered.
    let a = start(&store, &a).await;
    assert!(a.callback.is_none());
    let now = Utc::now();
    assert!(store.callbacks_due(now, 10).await.expect("due").is_empty());

    // Failing a, cancelling b and the plain job.
    let failed = applied(
        change(
            &store,
            &a,
            Change::Fail {
                error: "provider_rejected: the provider answered HTTP 400".into(),
                chunk: None,
            },
        )
        .await,
        "fail",
    );
    let cb = failed
        .callback
        .clone()
        .expect("a callback with the failure");
    assert_eq!(cb.status, CallbackStatus::Pending);
    assert_eq!(cb.attempts, 0);
    let event: serde_json::Value = serde_json::from_str(&cb.event).expect("event json");
    assert_eq!(event["type"], "job.failed");
    assert_eq!(event["jobId"], a.id.to_string());
    assert_eq!(event["errorCode"], "provider_rejected");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cancelled = applied(change(&store, &b, Change::Cancel).await, "cancel");
    assert_eq!(
        cancelled.callback.as_ref().map(|c| c.status),
        Some(CallbackStatus::Pending)
    );
    let plain = applied(change(&store, &plain, Change::Cancel).await, "cancel");
    assert!(plain.callback.is_none(), "no URL, no callback");
    // The stored job says the same as the transition's answer.
    assert_eq!(
        store.get(a.id).await.expect("get").callback,
        failed.callback
    );

    // Due: both, the earliest first; none before they are due.
    let later = Utc::now() + chrono::Duration::seconds(1);
    let due = due_ids(&store, later).await;
    assert_eq!(due, vec![a.id, b.id]);
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    assert!(
        store
            .callbacks_due(long_ago, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(store.callbacks_due(later, 1).await.expect("due").len(), 1);

    // A failed attempt: due again later.
    let retry_at = Utc::now() + chrono::Duration::minutes(10);
    let after_one = Callback {
        attempts: 1,
        last_error: Some("HTTP 500".into()),
        next_attempt_at: Some(retry_at),
        ..cb.clone()
    };
    assert!(
        store
            .callback_update(a.id, &cb, &after_one)
            .await
            .expect("update")
    );
    // A second deliverer with the old state loses.
    let other = Callback {
        attempts: 1,
        last_error: Some("timeout".into()),
        ..cb.clone()
    };
    assert!(
        !store
            .callback_update(a.id, &cb, &other)
            .await
            .expect("update")
    );
    let due = due_ids(&store, later).await;
    assert_eq!(due, vec![b.id], "a is due in ten minutes");
    let far = retry_at + chrono::Duration::seconds(1);
    assert_eq!(store.callbacks_due(far, 10).await.expect("due").len(), 2);

    // Delivered: never due again; the job shows it.
    let delivered = Callback {
        status: CallbackStatus::Delivered,
        attempts: 2,
        last_error: None,
        delivered_at: Some(Utc::now()),
        next_attempt_at: None,
        ..cb.clone()
    };
    assert!(
        store
            .callback_update(a.id, &after_one, &delivered)
            .await
            .expect("update")
    );
    let shown = store
        .get(a.id)
        .await
        .expect("get")
        .callback
        .expect("callback");
    assert_eq!(shown.status, CallbackStatus::Delivered);
    assert_eq!(shown.attempts, 2);
    let due = due_ids(&store, far).await;
    assert_eq!(due, vec![b.id]);

    // Retried and failed again: a new event, due at once, whatever the
    // old delivery's state.
    let again = applied(change(&store, &failed, Change::Retry).await, "retry");
    assert_eq!(
        again.callback.as_ref().map(|c| c.status),
        Some(CallbackStatus::Delivered)
    );
    let again = start(&store, &again).await;
    let failed2 = applied(
        change(
            &store,
            &again,
            Change::Fail {
                error: "provider_unavailable: the provider answered HTTP 503".into(),
                chunk: None,
            },
        )
        .await,
        "fail",
    );
    let cb2 = failed2.callback.expect("the new event");
    assert_eq!((cb2.status, cb2.attempts), (CallbackStatus::Pending, 0));
    assert!(cb2.event.contains("provider_unavailable"));
    // The older delivery's writer cannot overwrite the new event.
    assert!(
        !store
            .callback_update(a.id, &delivered, &after_one)
            .await
            .expect("update")
    );
    assert_eq!(store.callbacks_due(far, 10).await.expect("due").len(), 2);
}

/// Batches are stored, read and listed newest first per tenant; their
/// jobs keep their batch, and the queue orders jobs by turn: item `k` of a
/// batch `k` turns after the queue's current one, a single job in the
/// current turn, FIFO within a turn.
pub async fn batches_are_stored_listed_and_queued_in_turns(store: Store) {
    use lotsawa_core::batch::{Batch, BatchItem};
    use lotsawa_core::{BatchId, BatchRef};
    let one = vec!["ཀ། ".to_owned()];
    async fn item(store: &Store, one: &[String], batch: BatchId, index: u32) -> Job {
        let mut job = job_of(one);
        job.batch = Some(BatchRef { id: batch, index });
        store.create(&job, one).await.expect("create a batch item");
        job
    }
    let (a, b) = (BatchId::new(), BatchId::new());
    let mut a_jobs = Vec::new();
    for k in 0..4 {
        a_jobs.push(item(&store, &one, a, k).await);
    }
    let single = create_with(&store, &one).await;
    let mut b_jobs = Vec::new();
    for k in 0..2 {
        b_jobs.push(item(&store, &one, b, k).await);
    }
    let want = vec![
        a_jobs[0].id,
        single.id,
        b_jobs[0].id,
        a_jobs[1].id,
        b_jobs[1].id,
        a_jobs[2].id,
        a_jobs[3].id,
    ];
    assert_eq!(
        store.next_pending(10).await.expect("queue"),
        want,
        "turn 0: A0, the single, B0; turn 1: A1, B1; then A2, A3"
    );
    // The head is claimed first; a single job submitted now joins turn 0.
    let first = store
        .claim_next(100, Utc::now())
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(first.id, a_jobs[0].id, "the head of turn 0 starts first");
    assert_eq!(
        first.batch,
        Some(BatchRef { id: a, index: 0 }),
        "keeps its batch"
    );
    let late = create_with(&store, &one).await;
    let queue = store.next_pending(10).await.expect("queue");
    assert_eq!(
        &queue[..4],
        &[single.id, b_jobs[0].id, late.id, a_jobs[1].id],
        "a single job waits for turn 0 only, not for the batches"
    );
    // Once turn 0 is gone, a single job joins turn 1 at its end.
    for _ in 0..3 {
        store
            .claim_next(100, Utc::now())
            .await
            .expect("claim")
            .expect("a job");
    }
    let later = create_with(&store, &one).await;
    assert_eq!(
        store.next_pending(10).await.expect("queue"),
        vec![
            a_jobs[1].id,
            b_jobs[1].id,
            later.id,
            a_jobs[2].id,
            a_jobs[3].id
        ],
    );

    // The batches themselves.
    let stored = |id: BatchId, jobs: &[Job], tenant: Tenant| Batch {
        id,
        tenant,
        created_at: created_at(),
        items: jobs
            .iter()
            .enumerate()
            .map(|(i, j)| BatchItem {
                name: format!("text-{i}.txt"),
                job_id: j.id,
            })
            .collect(),
    };
    let batch_a = stored(a, &a_jobs, Tenant::default());
    let batch_b = stored(b, &b_jobs, Tenant::default());
    let other = Tenant::parse("other-tenant").expect("tenant");
    let batch_c = stored(BatchId::new(), &[], other.clone());
    for batch in [&batch_a, &batch_b, &batch_c] {
        store.batch_put(batch).await.expect("store a batch");
    }
    assert!(
        matches!(
            store.batch_put(&batch_a).await,
            Err(StoreError::ConditionFailed(_))
        ),
        "a batch id is stored once"
    );
    let read = store.batch_get(a).await.expect("read a batch");
    assert_eq!(read.items, batch_a.items);
    assert_eq!(read.tenant, Tenant::default());
    assert_eq!(
        read.created_at.timestamp_millis(),
        batch_a.created_at.timestamp_millis()
    );
    let missing = BatchId::new();
    assert!(
        matches!(store.batch_get(missing).await, Err(StoreError::BatchNotFound(id)) if id == missing),
        "an unknown batch is BatchNotFound"
    );
    let (page, next) = store
        .batch_list(&Tenant::default(), 1, None)
        .await
        .expect("first page");
    assert_eq!(page.iter().map(|b| b.id).collect::<Vec<_>>(), vec![b]);
    let next = next.expect("a second page");
    let (page, next) = store
        .batch_list(&Tenant::default(), 1, Some(&next))
        .await
        .expect("second page");
    assert_eq!(page.iter().map(|b| b.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(next, None, "two batches in two pages");
    let (page, _) = store.batch_list(&other, 10, None).await.expect("other");
    assert_eq!(page.len(), 1, "a tenant lists only its own batches");

    // Briefs: in the order asked, unknown ids left out, batches kept.
    let ids = vec![b_jobs[1].id, JobId::new(), a_jobs[0].id];
    let briefs = store.get_briefs(&ids).await.expect("briefs");
    assert_eq!(
        briefs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![b_jobs[1].id, a_jobs[0].id]
    );
    assert_eq!(briefs[0].batch, Some(BatchRef { id: b, index: 1 }));
    assert_eq!(briefs[1].status, JobStatus::Processing);
    assert!(briefs[0].source.is_empty(), "briefs carry no texts");
}
