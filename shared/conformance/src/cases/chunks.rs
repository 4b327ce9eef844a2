//! Chunks: idempotent checkpoints, large texts, and what watchers read.

use super::*;

/// The same chunk completed twice is written and counted once.
pub async fn checkpoints_are_idempotent(store: Handle) {
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

/// Source, chunk translation and result over 100 KB come back exactly.
pub async fn large_texts_round_trip_byte_for_byte(store: Handle) {
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
        .checkpoint(job.id, run.run, &done(0, &out0))
        .await
        .expect("checkpoint");
    store
        .checkpoint(job.id, run.run, &done(1, "small"))
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

/// What a watcher reads: a pulse that follows status, run and completed
/// chunks; a brief job without texts (the whole job keeps them); chunks of
/// a range only; and, through the service, a watch view that carries the
/// result once the job is completed.
pub async fn watchers_read_pulses_briefs_and_chunk_ranges(store: Handle) {
    let job = create(&store, 3).await;
    let pulse = |status, attempts, chunks_completed| lotsawa_core::store::Pulse {
        tenant: Tenant::default(),
        status,
        run: attempts,
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

/// A job keeps the `traceparent` it was submitted with, through its
/// transitions; a job without one has none.
pub async fn a_job_keeps_its_trace(store: Handle) {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = JobFactory::new()
        .chunks(2)
        .with(|j| j.trace = Some(traceparent.to_owned()))
        .create(store.as_ref())
        .await;
    let plain = JobFactory::new().create(store.as_ref()).await;
    assert_eq!(
        store.get(traced.id).await.expect("get").trace.as_deref(),
        Some(traceparent)
    );
    assert_eq!(store.get(plain.id).await.expect("get").trace, None);
    let started = start(&store, &traced).await;
    assert_eq!(started.trace.as_deref(), Some(traceparent));
    assert_eq!(
        store.get(traced.id).await.expect("get").trace.as_deref(),
        Some(traceparent),
        "a transition keeps it"
    );
}

/// A committed chunk's usage is kept with it and added to its tenant's
/// day, once (a repeated checkpoint adds nothing); budgets are set, read
/// and lifted per tenant.
pub async fn usage_is_kept_per_chunk_and_per_tenant_day(store: Handle) {
    use lotsawa_core::store::ChunkUsage;
    use lotsawa_core::usage::Usage;
    let acme = Tenant::parse("acme").expect("tenant");
    let job = JobFactory::new()
        .chunks(3)
        .tenant(&acme)
        .create(&*store)
        .await;
    let job = start(&store, &job).await;
    let with = |index: u32, model: &str, usage: Usage| {
        let mut d = done(index, "x");
        d.usage = Some(ChunkUsage {
            tenant: acme.clone(),
            engine: "openai".into(),
            model: Some(model.into()),
            usage,
        });
        d
    };
    for d in [
        with(0, "m", Usage::call(100, 20)),
        with(0, "m", Usage::call(100, 20)),
        with(1, "m", Usage::call(50, 5)),
        with(2, "big", Usage::call(7, 3)),
    ] {
        store.checkpoint(job.id, 1, &d).await.expect("checkpoint");
    }
    let chunks = store.chunks(job.id, 0).await.expect("chunks");
    assert_eq!(chunks[0].usage, Usage::call(100, 20));
    assert_eq!(chunks[2].usage, Usage::call(7, 3));
    let today = Utc::now().date_naive();
    let mut rows = store.usage(&acme, today, today).await.expect("usage");
    rows.sort_by(|a, b| a.model.cmp(&b.model));
    let got: Vec<(&str, Usage)> = rows.iter().map(|r| (r.model.as_str(), r.usage)).collect();
    assert_eq!(
        got,
        [
            ("big", Usage::call(7, 3)),
            ("m", Usage::call(100, 20) + Usage::call(50, 5))
        ]
    );
    assert!(rows.iter().all(|r| r.day == today && r.engine == "openai"));
    let yesterday = today.pred_opt().expect("a day before");
    assert!(
        store
            .usage(&acme, yesterday, yesterday)
            .await
            .expect("usage")
            .is_empty()
    );
    assert!(
        store
            .usage(&Tenant::default(), today, today)
            .await
            .expect("usage")
            .is_empty()
    );
    assert_eq!(store.budget(&acme).await.expect("budget"), None);
    store.set_budget(&acme, Some(500)).await.expect("set");
    store.set_budget(&acme, Some(400)).await.expect("change");
    assert_eq!(store.budget(&acme).await.expect("budget"), Some(400));
    assert_eq!(
        store.budget(&Tenant::default()).await.expect("budget"),
        None
    );
    store.set_budget(&acme, None).await.expect("lift");
    assert_eq!(store.budget(&acme).await.expect("budget"), None);
}
