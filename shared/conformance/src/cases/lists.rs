//! Reads and lists: pages and cursors, counts, unknown jobs, tenants.

use super::*;

/// Newest first; a cursor keeps its place while newer jobs arrive; filters
/// by status and type.
pub async fn lists_are_newest_first_with_stable_cursors(store: Handle) {
    let svc = service(&store);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&store, 1).await.id);
    }
    let q = |cursor: Option<String>| ListQuery {
        tenant: Tenant::default(),
        status: None,
        kind: None,
        priority: None,
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
        priority: None,
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
        priority: None,
        limit: 10,
        cursor: None,
    };
    assert!(page(&svc, translit).await.0.is_empty());
    // By priority: only the job with that priority.
    let urgent = JobFactory::new()
        .with(|j| j.config.priority = 4)
        .create(&*store)
        .await
        .id;
    let by_priority = ListQuery {
        tenant: Tenant::default(),
        status: None,
        kind: None,
        priority: Some(4),
        limit: 10,
        cursor: None,
    };
    assert_eq!(page(&svc, by_priority).await.0, [urgent]);
    let listed = svc.list(q(None)).await.expect("list");
    assert!(
        listed.jobs.iter().all(|v| v.job.source.is_empty()),
        "list items carry no source text"
    );
}

/// A cursor issued for another filter, or one we never issued, is invalid
/// input, not a server error.
pub async fn foreign_and_forged_cursors_are_invalid_input(store: Handle) {
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
            priority: None,
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
                priority: None,
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

/// Counts follow the jobs through their changes.
pub async fn counts_by_status(store: Handle) {
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
pub async fn unknown_jobs_are_not_found(store: Handle) {
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

/// Every job belongs to a tenant: another tenant's job does not exist for a
/// caller (get, watch, pulse, chunks, cancel, retry all answer NotFound and
/// change nothing), lists and their filters hold only the caller's jobs,
/// and a cursor from one tenant's list is refused in another's.
pub async fn tenants_see_only_their_own_jobs(store: Handle) {
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
        priority: None,
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
