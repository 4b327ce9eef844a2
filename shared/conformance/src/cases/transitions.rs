//! Status changes: every change is checked and written with a compare-and-set; a stale run cannot write; cancel and retry.

use super::*;

/// Every status × every change: allowed ones apply and give the status
/// `JobStatus::apply` names; refused ones write nothing.
pub async fn every_transition_is_checked_and_compare_and_set(store: Handle) {
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
pub async fn a_stale_run_cannot_write(store: Handle) {
    let job = create(&store, 2).await;
    let run1 = start(&store, &job).await;
    assert_eq!(run1.run, 1);
    let cancelled = applied(change(&store, &run1, Change::Cancel).await, "cancel");
    let pending = applied(change(&store, &cancelled, Change::Retry).await, "retry");
    let run2 = start(&store, &pending).await;
    assert_eq!(run2.run, 2);

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
        (now.status, now.run, now.chunks_completed),
        (JobStatus::Processing, 2, 0)
    );
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert!(chunks.iter().all(|c| c.translation.is_none()));
}

/// Cancelling a pending job holds no slot; cancelling a processing job
/// gives its slot back; neither can be cancelled twice.
pub async fn cancel_of_pending_and_processing(store: Handle) {
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
pub async fn retry_resets_only_unfinished_chunks(store: Handle) {
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
    assert_eq!(chunks[1].provider_calls, 2);
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
    assert_eq!(run2.run, 2);
}
