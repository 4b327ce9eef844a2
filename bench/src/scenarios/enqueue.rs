//! Intake alone, in-process: how fast the service accepts jobs one at a
//! time and with 50 submissions in flight, while the single slot is held by
//! a job that never ends so that no draining competes with the intake.

use std::sync::Arc;
use std::time::Instant;

use lotsawa_core::JobService;

use crate::args::Sizes;
use crate::fixture::{Stalled, backend, new_job};
use crate::report::Figures;

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    let (one, batched) = enqueue(sizes).await;
    figures.add("enqueue in-process, one at a time", "jobs/s", one);
    figures.add("enqueue in-process, 50 in flight", "jobs/s", batched);
}

/// Enqueue in-process: one at a time, and 50 in flight at once.
async fn enqueue(sizes: Sizes) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    // One job runs and never ends: the figure is the intake alone (the
    // drain while clients submit is its own figure).
    let b = backend(dir.path().join("e.db"), 1, Arc::new(Stalled)).await;
    let svc = b.service();
    let t = Instant::now();
    for i in 0..sizes.enqueue {
        svc.submit(new_job(i, 1)).await.expect("submit");
    }
    let one = sizes.enqueue as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut left = sizes.enqueue;
    while left > 0 {
        let n = left.min(50);
        let batch = (0..n).map(|i| {
            let svc = svc.clone();
            async move { svc.submit(new_job(i, 1)).await }
        });
        for r in futures::future::join_all(batch).await {
            r.expect("submit");
        }
        left -= n;
    }
    let batched = sizes.enqueue as f64 / t.elapsed().as_secs_f64();
    let _ = b.shutdown().await;
    (one, batched)
}
