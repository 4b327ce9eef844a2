//! Fuzz target for request parsing: random bodies (raw bytes, and JSON
//! shaped like a submission with random fields), random job ids, cursors
//! and query strings, sent through the one router on the embedded
//! backend. No answer may be a 5xx, every error is problem+json, and the
//! server keeps answering. `cargo test` runs it for `LOTSAWA_FUZZ_SECS`
//! seconds (default 8) and prints its executions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use lotsawa_core::JobService;
use lotsawa_engines::{EchoEngine, EngineSet};
use lotsawa_http::{ApiConfig, router};
use lotsawa_local::{LocalBackend, SchedulerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

fn budget() -> Duration {
    let secs = std::env::var("LOTSAWA_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

/// A JSON value from fuzz bytes: nested to a depth the bytes choose.
fn value(bytes: &[u8], depth: usize) -> Value {
    let Some((&b, rest)) = bytes.split_first() else {
        return Value::Null;
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match (b % 9, depth) {
        (0, _) => Value::Null,
        (1, _) => json!(b % 2 == 0),
        (2, _) => json!(i64::from(b) * 1_000_003 - 100_000_000),
        (3, _) => json!(f64::from(b) / 7.0 - 10.0),
        (4, _) | (_, 0) => json!(text()),
        (5, _) => json!(format!("ཀ་ཁ་ག། {}", text())),
        (6, _) => Value::Array(vec![value(rest, depth - 1), value(rest, depth - 1)]),
        _ => {
            let keys = [
                "sourceText",
                "type",
                "config",
                "engine",
                "model",
                "chunkSize",
                "glossary",
                "bo",
                "en",
                "useHelperAi",
                "qualityThreshold",
            ];
            let mut m = serde_json::Map::new();
            for (i, k) in keys.iter().enumerate() {
                if rest.get(i).is_some_and(|x| x % 3 == 0) {
                    m.insert(
                        (*k).to_owned(),
                        value(&rest[i.min(rest.len())..], depth - 1),
                    );
                }
            }
            Value::Object(m)
        }
    }
}

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn fuzz_request_parsing() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, app) = rt.block_on(async {
        let engines = EngineSet::from_engines(vec![Arc::new(EchoEngine)], "echo");
        let backend = LocalBackend::start(
            dir.path().join("fuzz.db"),
            engines,
            SchedulerConfig::default(),
        )
        .await
        .expect("backend");
        let app = router(
            backend.service() as Arc<dyn JobService>,
            ApiConfig {
                body_limit: 64 * 1024,
                ..ApiConfig::default()
            },
        );
        (backend, app)
    });
    // The runtime and router outlive each run; a failed run ends the test.
    let shared = std::panic::AssertUnwindSafe((&rt, &app));
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(2048)
        .for_each(move |bytes: &[u8]| {
            let (rt, app) = *shared;
            RUNS.fetch_add(1, Ordering::Relaxed);
            let kind = bytes.first().copied().unwrap_or(0) % 6;
            let rest = bytes.get(1..).unwrap_or(&[]);
            let req = match kind {
                0 => Request::post("/api/jobs")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(rest.to_vec())),
                1 => Request::post("/api/jobs")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(value(rest, 6).to_string())),
                2 => Request::get(format!("/api/jobs/{}", pct(rest))).body(Body::empty()),
                3 => Request::get(format!(
                    "/api/jobs?cursor={}&limit={}",
                    pct(rest),
                    rest.len()
                ))
                .body(Body::empty()),
                4 => Request::get(format!(
                    "/api/jobs?{}",
                    String::from_utf8_lossy(rest).replace(
                        |c: char| c.is_whitespace() || c.is_control() || c == '#',
                        ""
                    )
                ))
                .body(Body::empty()),
                _ => Request::delete(format!("/api/jobs/{}/retry/{}", pct(rest), rest.len()))
                    .body(Body::empty()),
            };
            let Ok(req) = req else {
                return; // not a request a client could send
            };
            let res = rt.block_on(app.clone().oneshot(req)).expect("infallible");
            let status = res.status();
            assert!(!status.is_server_error(), "{status} for input {bytes:?}");
            if status.is_client_error() {
                let ct = res
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert_eq!(ct, "application/problem+json", "{status} for {bytes:?}");
            }
        });
    eprintln!(
        "fuzz request parsing: {} executions in {} s",
        RUNS.load(Ordering::Relaxed),
        budget().as_secs()
    );
    rt.block_on(backend.shutdown()).expect("shutdown");
}
