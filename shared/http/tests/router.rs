//! Router tests with `oneshot`: every endpoint, including bad input, on the
//! embedded backend with the echo engine.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use lotsawa_core::{JobService, RetryPolicy};
use lotsawa_engines::{EchoEngine, EngineSet};
use lotsawa_http::{ApiConfig, router};
use lotsawa_local::{LocalBackend, SchedulerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn app(body_limit: usize) -> (tempfile::TempDir, LocalBackend, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = EngineSet::from_engines(vec![Arc::new(EchoEngine)], "echo");
    let backend = LocalBackend::start(
        dir.path().join("r.db"),
        engines,
        SchedulerConfig {
            concurrency: 3,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(1),
            max_chunks: 2000,
            ..SchedulerConfig::default()
        },
    )
    .await
    .expect("backend");
    let config = ApiConfig {
        body_limit,
        ..ApiConfig::default()
    };
    let app = router(backend.service() as Arc<dyn JobService>, config);
    (dir, backend, app)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, String, Value) {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, ct, body)
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn submit_get_list_and_finish() {
    let (_d, _b, app) = app(1024 * 1024).await;
    let text = "༄༅། །བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ། །\nཀ་ཁ་ག།";
    let res = app
        .clone()
        .oneshot(post_json(
            "/api/jobs",
            &json!({"sourceText": text, "config": {"chunkSize": 12}}).to_string(),
        ))
        .await
        .expect("res");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    let id = body["jobId"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/api/jobs/{id}"));

    let mut job = Value::Null;
    for _ in 0..200 {
        let (status, _, j) = call(&app, get(&location)).await;
        assert_eq!(status, StatusCode::OK);
        job = j;
        if job["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(job["status"], "completed", "{job}");
    // Echo gives the source back exactly, however it was chunked.
    assert_eq!(job["result"]["translation"], text);
    assert_eq!(job["result"]["engine"], "echo");
    assert!(job["chunksTotal"].as_u64() > Some(1));

    let (status, _, page) = call(&app, get("/api/jobs?limit=1&status=completed")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"][0]["id"], id.as_str());
    assert!(page["jobs"][0].get("result").is_none());
    assert!(page["nextCursor"].is_null());
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let (_d, _b, app) = app(4096).await;
    let cases: Vec<(Request<Body>, StatusCode)> = vec![
        (
            post_json("/api/jobs", r#"{"sourceText": " "}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            post_json("/api/jobs", r#"{"sourceText": "ཀ", "extra": 1}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            post_json(
                "/api/jobs",
                r#"{"sourceText": "ཀ", "config": {"engine": "openai"}}"#,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            post_json(
                "/api/jobs",
                &format!(r#"{{"sourceText": "{}"}}"#, "a".repeat(5000)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Request::post("/api/jobs")
                .body(Body::from("{}"))
                .expect("req"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (get("/api/jobs/xyz"), StatusCode::BAD_REQUEST),
        (
            get("/api/jobs/6a1f2c3e-0000-4000-8000-000000000000"),
            StatusCode::NOT_FOUND,
        ),
        (get("/api/jobs?cursor=AAAA"), StatusCode::BAD_REQUEST),
        (get("/api/jobs?sort=asc"), StatusCode::BAD_REQUEST),
        (
            Request::put("/api/jobs").body(Body::empty()).expect("req"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (get("/nowhere"), StatusCode::NOT_FOUND),
    ];
    for (req, want) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, ct, body) = call(&app, req).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(ct, "application/problem+json", "{what}");
        assert_eq!(body["status"], want.as_u16(), "{what}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let (_d, _b, app) = app(4096).await;
    let (status, _, h) = call(&app, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["engines"], json!(["echo"]));
    let (status, ct, m) = call(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain"));
    assert!(
        m.as_str()
            .is_some_and(|t| t.contains("lotsawa_jobs{status=\"pending\"} 0"))
    );
    let (status, _, doc) = call(&app, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["components"]["schemas"]["JobDto"]["properties"]["estimatedTimeRemaining"].is_object()
    );
}

#[tokio::test]
async fn list_parameters_are_parsed_at_the_edge() {
    let (_d, _b, app) = app(1 << 20).await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
    for (uri, says) in [
        (
            "/api/jobs?limit=0",
            "limit must be an integer between 1 and 100",
        ),
        (
            "/api/jobs?limit=abc",
            "limit must be an integer between 1 and 100",
        ),
        ("/api/jobs?status=done", "unknown status 'done'"),
        ("/api/jobs?type=poetry", "unknown job type 'poetry'"),
        ("/api/jobs?colour=red", "unknown field `colour`"),
        ("/api/jobs?cursor=forged", "not a valid cursor"),
    ] {
        let (status, ct, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(ct, "application/problem+json", "{uri}");
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(detail.contains(says), "{uri}: {detail}");
    }
    let (status, _, body) = call(
        &app,
        get("/api/jobs?status=pending&type=translation&limit=5"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A text that would make more chunks than a job may have is refused
/// before anything is stored, with a message that says what to change.
#[tokio::test]
async fn too_many_chunks_are_refused_before_anything_is_stored() {
    let (_d, _b, app) = app(1024 * 1024).await;
    let text = "ཀ་ཁ། ".repeat(2001);
    let (status, ct, body) = call(
        &app,
        post_json(
            "/api/jobs",
            &json!({"sourceText": text, "config": {"chunkSize": 4}}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(ct, "application/problem+json");
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("at most 2000") && detail.contains("chunkSize"),
        "{detail}"
    );
    let (_, _, list) = call(&app, get("/api/jobs")).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(0), "{list}");
    // The same text in larger chunks is accepted.
    let (status, _, body) = call(
        &app,
        post_json(
            "/api/jobs",
            &json!({"sourceText": text, "config": {"chunkSize": 2000}}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// A keyless server answers only for localhost, IP literals and the
/// configured names (a page on a rebound DNS name gets 421), and refuses
/// cross-site browser requests (403).
#[tokio::test]
async fn a_keyless_server_refuses_foreign_hosts_and_cross_site_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = EngineSet::from_engines(vec![Arc::new(EchoEngine)], "echo");
    let backend = LocalBackend::start(
        dir.path().join("h.db"),
        engines,
        SchedulerConfig {
            concurrency: 1,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(1),
            max_chunks: 2000,
            ..SchedulerConfig::default()
        },
    )
    .await
    .expect("backend");
    let app = router(
        backend.service() as Arc<dyn JobService>,
        ApiConfig {
            allowed_hosts: Some(vec!["lotsawa.lan".into()]),
            ..ApiConfig::default()
        },
    );
    let with = |host: &str, extra: &[(&str, &str)]| {
        let mut r = Request::get("/api/jobs").header(header::HOST, host);
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).expect("request")
    };
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "LOCALHOST",
        "[::1]:8080",
        "10.1.2.3",
        "lotsawa.lan:8080",
    ] {
        let (status, _, body) = call(&app, with(host, &[])).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    for host in [
        "attacker.example:8080",
        "localhost.attacker.example",
        "lotsawa.lan.evil",
    ] {
        let (status, ct, body) = call(&app, with(host, &[])).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}: {body}");
        assert_eq!(ct, "application/problem+json");
    }
    for extra in [
        [("sec-fetch-site", "cross-site")],
        [("origin", "http://attacker.example")],
    ] {
        let (status, _, body) = call(&app, with("127.0.0.1:8080", &extra)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{extra:?}: {body}");
    }
    for extra in [
        [("sec-fetch-site", "same-origin")],
        [("origin", "http://localhost:3000")],
    ] {
        let (status, _, body) = call(&app, with("127.0.0.1:8080", &extra)).await;
        assert_eq!(status, StatusCode::OK, "{extra:?}: {body}");
    }
    assert!(lotsawa_http::host_allowed("127.0.0.1", &[]));
    assert!(!lotsawa_http::host_allowed("example.org", &[]));
}

/// With keys required, a stream takes its key from `access_token`
/// percent-decoded, as a browser's `encodeURIComponent` writes it; a
/// mangled key is refused.
#[tokio::test]
async fn a_streams_access_token_is_percent_decoded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("k.db");
    let engines = EngineSet::from_engines(vec![Arc::new(EchoEngine)], "echo");
    let backend = LocalBackend::start(db.clone(), engines, SchedulerConfig::default())
        .await
        .expect("backend");
    let store = lotsawa_local::SqliteStore::open(&db).expect("store");
    let (key, record) =
        lotsawa_core::auth::new_key(lotsawa_core::Tenant::default(), chrono::Utc::now());
    lotsawa_core::KeyStore::key_put(&store, &record, &lotsawa_core::auth::key_hash(&key))
        .await
        .expect("key");
    let app = router(
        backend.service() as Arc<dyn JobService>,
        ApiConfig {
            require_auth: true,
            ..ApiConfig::default()
        },
    );
    let submit = Request::post("/api/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(json!({"sourceText": "ཀ་ཁ་ག།"}).to_string()))
        .expect("request");
    let (status, _, body) = call(&app, submit).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["jobId"].as_str().expect("jobId");
    let stream = |token: &str| get(&format!("/api/jobs/{id}/stream?access_token={token}"));
    // Every byte escaped: only a decoded key is the key.
    let escaped: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let res = app.clone().oneshot(stream(&escaped)).await.expect("res");
    assert_eq!(res.status(), StatusCode::OK);
    let (status, ct, _) = call(&app, stream(&format!("{key}%2B"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(ct, "application/problem+json");
}

/// `Idempotency-Key` on submission: the same request again answers with the
/// same status and body and `Idempotent-Replayed: true` and makes no second
/// job; a different body under the key is 422; a malformed key is 400.
#[tokio::test]
async fn idempotency_keys_replay_the_first_answer() {
    let (_d, _b, app) = app(1024 * 1024).await;
    let submit = |key: &str, text: &str| {
        Request::post("/api/jobs")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(json!({"sourceText": text}).to_string()))
            .expect("request")
    };
    let first = app
        .clone()
        .oneshot(submit("order-1", "ཀ་ཁ། "))
        .await
        .expect("res");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.into_body().collect().await.expect("body").to_bytes();
    let again = app
        .clone()
        .oneshot(submit("order-1", "ཀ་ཁ། "))
        .await
        .expect("res");
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let again_body = again.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(first_body, again_body, "the same body");
    let (status, ct, body) = call(&app, submit("order-1", "ག་ང། ")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(ct, "application/problem+json");
    for bad in [" ", &"k".repeat(256)] {
        let (status, _, body) = call(&app, submit(bad, "ཀ་ཁ། ")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
    let (_, _, list) = call(&app, get("/api/jobs")).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
}

/// With a creation rate, a tenant's submissions beyond its burst are 429
/// problems with Retry-After, and nothing is stored for them.
#[tokio::test]
async fn a_spent_creation_rate_is_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = EngineSet::from_engines(vec![Arc::new(EchoEngine)], "echo");
    let backend = LocalBackend::start(
        dir.path().join("rate.db"),
        engines,
        SchedulerConfig {
            concurrency: 1,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(1),
            max_chunks: 2000,
            rate: Some(lotsawa_core::rate::RateLimit {
                per_minute: 1,
                burst: 2,
            }),
            ..SchedulerConfig::default()
        },
    )
    .await
    .expect("backend");
    let app = router(
        backend.service() as Arc<dyn JobService>,
        ApiConfig::default(),
    );
    let body = json!({"sourceText": "ཀ་ཁ། "}).to_string();
    for _ in 0..2 {
        let (status, _, b) = call(&app, post_json("/api/jobs", &body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    }
    let res = app
        .clone()
        .oneshot(post_json("/api/jobs", &body))
        .await
        .expect("res");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    let (_, _, list) = call(&app, get("/api/jobs")).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(2), "{list}");
}

/// A translation needs Tibetan text; text made only of invisible or control
/// characters is refused for every job.
#[tokio::test]
async fn sources_without_tibetan_or_visible_text_are_refused() {
    let (_d, _b, app) = app(1024 * 1024).await;
    let (status, _, body) = call(
        &app,
        post_json(
            "/api/jobs",
            &json!({"sourceText": "only English here"}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Tibetan")),
        "{body}"
    );
    let (status, _, body) = call(
        &app,
        post_json(
            "/api/jobs",
            &json!({"sourceText": "\u{200B}\u{FEFF}\u{200D}", "type": "transliteration"})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = call(
        &app,
        post_json(
            "/api/jobs",
            &json!({"sourceText": "no Tibetan", "type": "transliteration"}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "transliteration: {body}");
    let (_, _, list) = call(&app, get("/api/jobs")).await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn the_dashboard_is_served_and_a_job_lists_its_chunks() {
    let (_d, _b, app) = app(1024 * 1024).await;
    for path in [
        "/",
        "/jobs/00000000-0000-4000-8000-000000000000",
        "/batches/x",
    ] {
        let res = app.clone().oneshot(get(path)).await.expect("res");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let html = String::from_utf8_lossy(&bytes);
        assert!(html.contains("/assets/app.js"), "{path}");
    }
    let (status, ct, js) = call(&app, get("/assets/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/javascript"), "{ct}");
    assert!(js.as_str().is_some_and(|s| s.contains("EventSource")));
    let (_, ct, _) = call(&app, get("/assets/app.css")).await;
    assert!(ct.starts_with("text/css"), "{ct}");
    let (_, _, config) = call(&app, get("/assets/config.json")).await;
    assert_eq!(config, json!({"streamUrl": "", "requireAuth": false}));
    let (status, _, _) = call(&app, get("/assets/nothing.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A job's chunks: source, EWTS on request, output once done.
    let text = "བྱང་ཆུབ། ཀ་ཁ།";
    let (status, _, body) = call(
        &app,
        post_json(
            "/api/jobs",
            &json!({"sourceText": text, "config": {"chunkSize": 8}}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["jobId"].as_str().expect("id").to_owned();
    let mut chunks = Value::Null;
    for _ in 0..200 {
        let (status, _, c) = call(&app, get(&format!("/api/jobs/{id}/chunks?ewts=true"))).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        chunks = c;
        if chunks["chunks"]
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["status"] == "completed"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let list = chunks["chunks"].as_array().expect("chunks");
    assert!(list.len() > 1, "{chunks}");
    let joined = |field: &str| -> String {
        list.iter()
            .map(|c| c[field].as_str().unwrap_or_default())
            .collect()
    };
    assert_eq!(joined("source"), text, "the chunks make the text, in order");
    assert_eq!(joined("translation"), text, "echo");
    assert_eq!(joined("sourceEwts"), "byang chub/_ka kha/");
    for (i, c) in list.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["attempts"], 1);
    }
    let (_, _, plain) = call(&app, get(&format!("/api/jobs/{id}/chunks"))).await;
    assert!(plain["chunks"][0].get("sourceEwts").is_none());
    for (uri, want) in [
        ("/api/jobs/nope/chunks".to_owned(), StatusCode::BAD_REQUEST),
        (
            "/api/jobs/00000000-0000-4000-8000-000000000000/chunks".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/jobs/{id}/chunks?ewts=maybe"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/jobs/{id}/chunks?other=1"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, ct, body) = call(&app, get(&uri)).await;
        assert_eq!(status, want, "{uri}: {body}");
        assert!(ct.starts_with("application/problem+json"), "{uri}: {ct}");
    }
}
