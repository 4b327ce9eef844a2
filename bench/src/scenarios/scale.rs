//! The store's growth: with 1,000 up to 1,000,000 pending jobs stored,
//! what claiming one costs, how fast a slice of them drains, and how long
//! the first page of the list and a GET take. Run once per harness run
//! (the caller's choice), since the largest store takes a minute to fill.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lotsawa_core::{JobService, JobStore, Tenant};
use lotsawa_engines::EchoEngine;
use lotsawa_local::SqliteStore;

use crate::args::{Sizes, durability};
use crate::fixture::{backend, completed, prefill};
use crate::report::{Figures, percentile};

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    for &stored in sizes.scale {
        eprintln!("scale: {stored} stored jobs");
        for (what, unit, v) in scale(stored, sizes.scale_drain).await {
            figures.add(format!("with {stored} jobs stored: {what}"), unit, v);
        }
    }
}

/// With `stored` pending jobs in the store: claim latency (one job, µs),
/// the drain of `drain_n` of them at concurrency 8 (jobs/s), and list
/// (first page of 50) and GET latency (ms), each p50 and p99.
async fn scale(stored: usize, drain_n: usize) -> Vec<(&'static str, &'static str, f64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    let ids = prefill(&db, stored, 1).await;
    let drain_n = drain_n.min(stored);
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let claims = {
        let store = SqliteStore::open_with(&db, durability()).expect("store");
        let mut us = Vec::new();
        for _ in 0..200.min(stored / 4) {
            let t = Instant::now();
            store
                .claim_next(u32::MAX, Utc::now())
                .await
                .expect("claim")
                .expect("a pending job");
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        store.flush().await.expect("flush");
        sorted(us)
    };
    let t = Instant::now();
    let b = backend(db, 8, Arc::new(EchoEngine)).await;
    let svc = b.service();
    let store = svc.store().clone();
    while completed(&store).await < drain_n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drained = drain_n as f64 / t.elapsed().as_secs_f64();
    let mut list = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        svc.list(lotsawa_core::ListQuery {
            tenant: Tenant::default(),
            status: None,
            kind: None,
            priority: None,
            limit: 50,
            cursor: None,
        })
        .await
        .expect("list");
        list.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut get = Vec::new();
    for k in 0..1000usize {
        let id = ids[(k * 7919 + 13) % ids.len()];
        let t = Instant::now();
        svc.get(&Tenant::default(), id).await.expect("get");
        get.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = b.shutdown().await;
    let (list, get) = (sorted(list), sorted(get));
    vec![
        ("claim, p50", "µs", percentile(&claims, 0.5)),
        ("claim, p99", "µs", percentile(&claims, 0.99)),
        ("drain, concurrency 8", "jobs/s", drained),
        ("list first page of 50, p50", "ms", percentile(&list, 0.5)),
        ("list first page of 50, p99", "ms", percentile(&list, 0.99)),
        ("GET a job, p50", "ms", percentile(&get, 0.5)),
        ("GET a job, p99", "ms", percentile(&get, 0.99)),
    ]
}
