//! Claims: FIFO order and the concurrency limit under concurrent claimers.

use super::*;

/// Jobs are claimed oldest first, each once.
pub async fn claims_are_fifo(store: Handle) {
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
        assert_eq!(got.run, 1);
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

/// Higher priorities are claimed first, first come first served within
/// one.
pub async fn claims_follow_priority_then_arrival(store: Handle) {
    let with = |p: i8| move |j: &mut Job| j.config.priority = p;
    let low = JobFactory::new().with(with(-3)).create(&*store).await.id;
    let mid_a = JobFactory::new().create(&*store).await.id;
    let high = JobFactory::new().with(with(7)).create(&*store).await.id;
    let mid_b = JobFactory::new().create(&*store).await.id;
    let top = JobFactory::new().with(with(10)).create(&*store).await.id;
    let mut order = Vec::new();
    while let Some(j) = store.claim_next(100, Utc::now()).await.expect("claim") {
        order.push(j.id);
    }
    assert_eq!(order, [top, high, mid_a, mid_b, low]);
    assert_eq!(
        store.next_pending(10).await.expect("pending"),
        Vec::<JobId>::new()
    );
}

/// With one slot and two claimers at once, exactly one wins; the slot comes
/// back when its job ends.
pub async fn two_claimers_respect_the_concurrency_limit(store: Handle) {
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
