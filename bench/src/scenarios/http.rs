//! Intake over HTTP: 1 and then 64 clients submitting through the real
//! router on a loopback port for a fixed time, with the backend's one slot
//! held so the figure is the HTTP path and the commit alone. The client
//! loop is shared with the drain-under-load scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lotsawa_core::JobService;
use serde_json::json;

use crate::args::Sizes;
use crate::fixture::{Stalled, backend, serve, text};
use crate::report::{Figures, percentile};

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = backend(dir.path().join("h.db"), 1, Arc::new(Stalled)).await;
    let (url, server) = serve(b.service() as Arc<dyn JobService>).await;
    for clients in [1usize, 64] {
        let (rate, p50, p99) = http_enqueue(&url, clients, sizes.http_secs).await;
        figures.add(
            format!("enqueue over HTTP, {clients} clients"),
            "jobs/s",
            rate,
        );
        figures.add(
            format!("enqueue over HTTP, {clients} clients, p50"),
            "ms",
            p50,
        );
        figures.add(
            format!("enqueue over HTTP, {clients} clients, p99"),
            "ms",
            p99,
        );
    }
    server.abort();
    let _ = b.shutdown().await;
}

/// `clients` HTTP clients submitting for `secs`: (jobs/s, p50 ms, p99 ms).
pub(crate) async fn http_enqueue(url: &str, clients: usize, secs: f64) -> (f64, f64, f64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let counter = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = http.clone();
            let url = format!("{url}/api/jobs");
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < stop {
                    let i = counter.fetch_add(1, Ordering::Relaxed) + c * 10_000_000;
                    let body = json!({"sourceText": text(i), "config": {"engine": "echo"}});
                    let t = Instant::now();
                    let r = http.post(&url).json(&body).send().await;
                    if r.is_ok_and(|r| r.status().as_u16() == 202) {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                lat
            })
        })
        .collect();
    let t = Instant::now();
    let mut lat: Vec<f64> = Vec::new();
    for task in tasks {
        lat.extend(task.await.expect("client"));
    }
    let rate = lat.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (rate, percentile(&lat, 0.5), percentile(&lat, 0.99))
}
