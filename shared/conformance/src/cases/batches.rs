//! The batch facet.

use super::*;

/// Batches are stored, read and listed newest first per tenant; their
/// jobs keep their batch, and the queue orders jobs by turn: item `k` of a
/// batch `k` turns after the queue's current one, a single job in the
/// current turn, FIFO within a turn.
pub async fn batches_are_stored_listed_and_queued_in_turns(store: Handle) {
    use lotsawa_core::batch::{Batch, BatchItem};
    use lotsawa_core::{BatchId, BatchRef};
    let one = vec!["ཀ། ".to_owned()];
    async fn item(store: &Handle, one: &[String], batch: BatchId, index: u32) -> Job {
        JobFactory::new()
            .texts(one.to_vec())
            .batch(BatchRef { id: batch, index })
            .create(&**store)
            .await
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
