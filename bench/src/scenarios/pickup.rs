//! Pickup latency: open-loop arrivals at 100 and 1000 per second, timed
//! from the submission's acknowledgement to the moment the engine sees the
//! job's chunk, which is what a client waits before work starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lotsawa_core::{Engine, EngineError, EngineOutput, JobService, TranslateRequest};

use crate::args::Sizes;
use crate::fixture::{backend, job_number, new_job};
use crate::report::{Figures, percentile};

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    for rate in [100.0, 1000.0] {
        let (p50, p99, p999) = pickup(rate, sizes.pickup_secs).await;
        figures.add(format!("pickup at {rate} arrivals/s, p50"), "µs", p50);
        figures.add(format!("pickup at {rate} arrivals/s, p99"), "µs", p99);
        figures.add(format!("pickup at {rate} arrivals/s, p99.9"), "µs", p999);
    }
}

/// An echo engine that notes when each job's chunk first reaches it
/// (pickup).
#[derive(Default)]
pub(crate) struct Clocked {
    seen: Mutex<HashMap<usize, Instant>>,
}

#[async_trait]
impl Engine for Clocked {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        let at = Instant::now();
        if let Some(n) = job_number(&req.text)
            && let Ok(mut s) = self.seen.lock()
        {
            s.entry(n).or_insert(at);
        }
        Ok(EngineOutput::text(req.text.clone()))
    }
}

/// Open-loop arrivals at `rate`/s for `secs`: pickup (accepted → the engine
/// sees the chunk) p50, p99, p99.9 in microseconds.
async fn pickup(rate: f64, secs: f64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clocked = Arc::new(Clocked::default());
    let b = backend(dir.path().join("p.db"), 3, clocked.clone()).await;
    let us = arrivals(b.service(), &clocked, rate, secs).await;
    let _ = b.shutdown().await;
    (
        percentile(&us, 0.5),
        percentile(&us, 0.99),
        percentile(&us, 0.999),
    )
}

/// Submit single-chunk jobs to `svc` at `rate`/s for `secs` (open loop)
/// and wait until `clocked` saw them: each job's pickup (accepted → the
/// engine sees the chunk) in microseconds, sorted.
pub(crate) async fn arrivals(
    svc: Arc<lotsawa_core::Service>,
    clocked: &Clocked,
    rate: f64,
    secs: f64,
) -> Vec<f64> {
    let n = (rate * secs) as usize;
    let accepted: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::new();
    for i in 0..n {
        interval.tick().await;
        let svc = svc.clone();
        let accepted = accepted.clone();
        sends.push(tokio::spawn(async move {
            svc.submit(new_job(i, 1)).await.expect("submit");
            if let Ok(mut a) = accepted.lock() {
                a.insert(i, Instant::now());
            }
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while clocked.seen.lock().map(|s| s.len()).unwrap_or(0) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = clocked.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    let mut us: Vec<f64> = accepted
        .iter()
        .filter_map(|(i, at)| {
            let s = seen.get(i)?;
            Some(s.saturating_duration_since(*at).as_secs_f64() * 1e6)
        })
        .collect();
    us.sort_by(f64::total_cmp);
    us
}
