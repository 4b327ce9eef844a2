//! The drain of a pre-filled backlog: single-chunk jobs at concurrency 3, 8
//! and 32, then multi-chunk jobs at 3 and 8, where an engine that notes the
//! gap between one chunk's answer and the next chunk's call gives the
//! scheduler's own cost per chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lotsawa_core::{Engine, EngineError, EngineOutput, TranslateRequest};

use crate::args::Sizes;
use crate::fixture::{backend, completed, job_number, prefill};
use crate::report::{Figures, percentile};

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    for c in [3u32, 8, 32] {
        let (jobs, _, _, _) = drain(sizes.drain_jobs, 1, c).await;
        figures.add(
            format!(
                "drain {} single-chunk jobs, concurrency {c}",
                sizes.drain_jobs
            ),
            "jobs/s",
            jobs,
        );
    }
    for c in [3u32, 8] {
        let (jobs, chunks, p50, p99) = drain(sizes.multi_jobs, sizes.multi_chunks, c).await;
        let what = format!(
            "drain {} jobs × {} chunks, concurrency {c}",
            sizes.multi_jobs, sizes.multi_chunks
        );
        figures.add(format!("{what} (jobs)"), "jobs/s", jobs);
        figures.add(format!("{what} (chunks)"), "chunks/s", chunks);
        figures.add(format!("{what}: per-chunk overhead, p50"), "µs", p50);
        figures.add(format!("{what}: per-chunk overhead, p99"), "µs", p99);
    }
}

/// An echo engine that notes, per job, the time between one chunk's answer
/// and the next chunk's call: what the scheduler adds per chunk (the
/// checkpoint's commit and the bookkeeping around it).
#[derive(Default)]
struct Gaps {
    last: Mutex<HashMap<usize, Instant>>,
    gaps: Mutex<Vec<f64>>,
}

#[async_trait]
impl Engine for Gaps {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        if let Some(job) = job_number(&req.text)
            && let Ok(mut last) = self.last.lock()
        {
            if let Some(prev) = last.get(&job)
                && let Ok(mut g) = self.gaps.lock()
            {
                g.push(prev.elapsed().as_secs_f64() * 1e6);
            }
            last.insert(job, Instant::now());
        }
        Ok(EngineOutput::text(req.text.clone()))
    }
}

/// Time the drain of `jobs` pre-enqueued jobs of `chunks` chunks: (jobs/s,
/// chunks/s, per-chunk overhead p50 and p99 in µs).
async fn drain(jobs: usize, chunks: usize, concurrency: u32) -> (f64, f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("d.db");
    prefill(&db, jobs, chunks).await;
    let gaps = Arc::new(Gaps::default());
    let t = Instant::now();
    let b = backend(db, concurrency, gaps.clone()).await;
    let store = b.service().store().clone();
    while completed(&store).await < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let _ = b.shutdown().await;
    let mut g = gaps.gaps.lock().map(|g| g.clone()).unwrap_or_default();
    g.sort_by(f64::total_cmp);
    (
        jobs as f64 / secs,
        (jobs * chunks) as f64 / secs,
        percentile(&g, 0.5),
        percentile(&g, 0.99),
    )
}
