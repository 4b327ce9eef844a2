//! Limits of the real binary: slow clients dropped at the header deadline,
//! stream caps per tenant and in all (the server stays responsive), the
//! per-tenant pending cap, the model allowlist, and a keyless metrics
//! listener beside a keyed API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use lotsawa_apitests::FakeProvider;
use serde_json::{Value, json};

mod support;

use support::{Server, temp_db};

fn make_key(db: &str, tenant: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(["keys", "create", "--tenant", tenant, "--db", db])
        .env_remove("LOTSAWA_DB")
        .output()
        .expect("run lotsawa keys");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: impl std::fmt::Display,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 1, &[("LOTSAWA_HEADER_TIMEOUT_MS", "1000")]);
    let addr = host_port(&server.url);
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // Meanwhile others are served.
    let ok = reqwest::get(format!("{}/healthz", server.url.trim_end_matches('/')))
        .await
        .expect("health");
    assert_eq!(ok.status().as_u16(), 200);
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = slow.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "the server closed the connection instead of waiting on: {read:?}"
    );
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "a slow client gets nothing or 408: {answer}"
    );
    eprintln!(
        "slow-loris: dropped {:.1} s after the last byte (deadline 1 s)",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_tenant_and_in_all() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let db_s = db.to_str().expect("path");
    let alpha = make_key(db_s, "alpha");
    let beta = make_key(db_s, "beta");
    let server = Server::start(
        &db,
        &provider,
        1,
        &[
            ("LOTSAWA_REQUIRE_AUTH", "1"),
            ("LOTSAWA_MAX_STREAMS", "3"),
            ("LOTSAWA_MAX_STREAMS_PER_TENANT", "2"),
        ],
    );
    let base = server.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    provider.set_delay_ms(60_000);
    let mut jobs = Vec::new();
    for key in [&alpha, &beta] {
        let (status, body) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/api/jobs"),
            key,
            Some(json!({"sourceText": "ཀ་ཁ་ག། ", "config": {"engine": "openai"}})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        jobs.push(body["jobId"].as_str().expect("id").to_owned());
    }
    let open = |key: &str, job: &str| {
        http.get(format!("{base}/api/jobs/{job}/stream"))
            .bearer_auth(key)
            .send()
    };
    let a1 = open(&alpha, &jobs[0]).await.expect("stream");
    let a2 = open(&alpha, &jobs[0]).await.expect("stream");
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let a3 = open(&alpha, &jobs[0]).await.expect("stream");
    assert_eq!(a3.status().as_u16(), 429, "alpha's third stream");
    assert!(a3.headers().contains_key("retry-after"));
    let b1 = open(&beta, &jobs[1]).await.expect("stream");
    assert_eq!(b1.status().as_u16(), 200, "beta is under its own cap");
    let b2 = open(&beta, &jobs[1]).await.expect("stream");
    assert_eq!(b2.status().as_u16(), 503, "the server's cap of three");
    let body: Value = b2.json().await.expect("problem");
    assert_eq!(body["status"], 503, "{body}");
    // The server stays responsive with every stream slot held.
    let (status, _) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/jobs"),
        &alpha,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // A closed stream gives its slot back.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = open(&alpha, &jobs[0]).await.expect("stream");
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a2, b1));
    provider.set_delay_ms(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_models_and_metrics_are_limited_with_keys() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let db_s = db.to_str().expect("path");
    let alpha = make_key(db_s, "alpha");
    let beta = make_key(db_s, "beta");
    let metrics_port = free_port().to_string();
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(
        &db,
        &provider,
        1,
        &[
            ("LOTSAWA_REQUIRE_AUTH", "1"),
            ("LOTSAWA_MAX_PENDING", "2"),
            ("LOTSAWA_MAX_BATCH_ITEMS", "2"),
            ("LOTSAWA_METRICS_BIND", &metrics_bind),
        ],
    );
    let base = server.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    provider.set_delay_ms(60_000);
    let submit = |key: &str, text: &str, model: Option<&str>| {
        let mut config = json!({"engine": "openai"});
        if let Some(m) = model {
            config["model"] = json!(m);
        }
        call(
            &http,
            reqwest::Method::POST,
            format!("{base}/api/jobs"),
            key.to_owned(),
            Some(json!({"sourceText": text, "config": config})),
        )
    };
    // Only the configured model (keys are required and no LOTSAWA_MODELS).
    let (status, body) = submit(&alpha, "ཀ། ", Some("costly-model")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("fake-model")),
        "{body}"
    );
    // A batch over LOTSAWA_MAX_BATCH_ITEMS is refused before anything is stored.
    let items: Vec<_> = (0..3)
        .map(|i| json!({"sourceText": format!("ཀ་{i}། "), "name": format!("t{i}.txt")}))
        .collect();
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/batches"),
        alpha.clone(),
        Some(json!({"items": items, "config": {"engine": "openai"}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 2 items")),
        "{body}"
    );
    let (status, body) = submit(&alpha, "ཀ། ", Some("fake-model")).await;
    assert_eq!(status, 202, "{body}");
    // That job takes the one slot; two more wait; a third waiting is refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.total_calls() == 0 {
        assert!(Instant::now() < deadline, "the first job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..2 {
        let (status, body) = submit(&alpha, &format!("ཁ་{i}། "), None).await;
        assert_eq!(status, 202, "waiting job {i}: {body}");
    }
    let (status, body) = submit(&alpha, "ག། ", None).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 2")),
        "{body}"
    );
    let (status, body) = submit(&beta, "ག། ", None).await;
    assert_eq!(status, 202, "another tenant has its own cap: {body}");

    // Metrics: keyed on the API port, keyless on their own.
    let res = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status().as_u16(), 401);
    let res = http
        .get(format!("http://{metrics_bind}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.expect("text");
    assert!(
        text.contains("lotsawa_queue_depth{queue=\"default\"} 3"),
        "{text}"
    );
    let res = http
        .get(format!("http://{metrics_bind}/api/jobs"))
        .send()
        .await
        .expect("api on the metrics port");
    assert_eq!(res.status().as_u16(), 404, "the metrics port serves no API");
    provider.set_delay_ms(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_share_the_translation_memory_across_tenants() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let db_s = db.to_str().expect("path");
    let alpha = make_key(db_s, "alpha");
    let beta = make_key(db_s, "beta");
    let server = Server::start(
        &db,
        &provider,
        1,
        &[
            ("LOTSAWA_REQUIRE_AUTH", "1"),
            ("LOTSAWA_SHARED_MEMORY", "1"),
        ],
    );
    let base = server.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let text = "ཀ་ཁ་ག་ང་ཅ། shared-memory";
    let mut hits = Vec::new();
    for key in [&alpha, &beta] {
        let (status, body) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/api/jobs"),
            key.as_str(),
            Some(json!({"sourceText": text, "config": {"engine": "openai"}})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let url = format!("{base}/api/jobs/{}", body["jobId"].as_str().expect("id"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let job = loop {
            let (_, job) = call(&http, reqwest::Method::GET, url.clone(), key.as_str(), None).await;
            if job["status"] == "completed" {
                break job;
            }
            assert!(Instant::now() < deadline, "{job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        hits.push(job["result"]["chunksFromMemory"].as_u64());
    }
    assert_eq!(
        hits,
        vec![Some(0), Some(1)],
        "beta is served alpha's memory"
    );
    assert_eq!(provider.calls_for(text), 1);
}
