//! The admission facet: idempotency keys, rate buckets, pending counts.

use super::*;

/// Idempotency keys: the first record for a (tenant, key) holds within the
/// window, an expired one is replaced, tenants are independent; through
/// the service, the same request again makes no second job, a different
/// one is refused.
pub async fn idempotency_keys_hold_their_first_request(store: Handle) {
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
        trace: None,
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
            priority: None,
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
pub async fn rate_buckets_per_tenant(store: Handle) {
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
pub async fn pending_jobs_are_counted_and_capped_per_tenant(store: Handle) {
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
        trace: None,
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
