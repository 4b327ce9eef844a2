//! The drain of a backlog at concurrency 8 while 64 HTTP clients keep
//! submitting: both rates at once, since intake and drain share the store
//! and its commits.

use std::sync::Arc;
use std::time::Instant;

use lotsawa_core::JobService;
use lotsawa_engines::EchoEngine;

use super::http::http_enqueue;
use crate::args::Sizes;
use crate::fixture::{backend, completed, prefill, serve};
use crate::report::Figures;

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    let (drained, submitted) = drain_under_load(sizes.drain_jobs, sizes.http_secs).await;
    figures.add(
        "drain while 64 clients submit, concurrency 8 (drained)",
        "jobs/s",
        drained,
    );
    figures.add(
        "drain while 64 clients submit, concurrency 8 (submitted)",
        "jobs/s",
        submitted,
    );
}

/// Drain while 64 clients submit: (drained jobs/s, submitted jobs/s).
async fn drain_under_load(backlog: usize, secs: f64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("l.db");
    prefill(&db, backlog, 1).await;
    let b = backend(db, 8, Arc::new(EchoEngine)).await;
    let store = b.service().store().clone();
    let (url, server) = serve(b.service() as Arc<dyn JobService>).await;
    let before = completed(&store).await;
    let t = Instant::now();
    let (submitted, _, _) = http_enqueue(&url, 64, secs).await;
    let drained = (completed(&store).await - before) as f64 / t.elapsed().as_secs_f64();
    server.abort();
    let _ = b.shutdown().await;
    (drained, submitted)
}
