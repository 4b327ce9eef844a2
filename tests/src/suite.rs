//! The API suite. Each function takes a deployment ([`Api`]) and the fake
//! provider its `openai` engine talks to, and fails with a message when the
//! deployment does not behave as the API promises.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::provider::fake_translation;
use crate::{Api, FakeProvider};

/// Generous bound for a job of a few chunks to finish.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A text of `n` lines that the segmenter cuts into exactly one chunk per
/// line at the returned chunk size; also returns the chunks.
pub fn numbered_text(tag: &str, n: usize) -> (String, Vec<String>, u32) {
    let chunks: Vec<String> = (0..n)
        .map(|i| format!("{tag}{i:03} བྱང་ཆུབ་སེམས་དཔའ།\n"))
        .collect();
    let size = chunks.iter().map(|c| c.chars().count()).max().unwrap_or(1) as u32;
    (chunks.concat(), chunks, size)
}

/// What the fake provider's translations of `chunks` assemble to.
pub fn expected_translation(chunks: &[String]) -> String {
    chunks
        .iter()
        .map(|c| format!("{}\n", fake_translation(c)))
        .collect()
}

pub(crate) fn unique_tag(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-", n % 1_000_000_007)
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

/// Submit, stream to completion, read the result.
pub async fn submit_stream_complete(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(50);
    let (text, chunks, size) = numbered_text(&unique_tag("flow"), 3);
    let (status, body, location) = api
        .post_job(&json!({"sourceText": text, "type": "translation",
            "config": {"engine": "openai", "chunkSize": size}}))
        .await?;
    ensure!(status == 202, "submit: {status} {body}");
    ensure!(body["status"] == "pending", "{body}");
    ensure!(body["message"] == "Job enqueued successfully", "{body}");
    let id = body["jobId"].as_str().unwrap_or_default().to_owned();
    ensure!(
        location.as_deref() == Some(&format!("/api/jobs/{id}")),
        "Location header: {location:?}"
    );

    let events = api.stream(&id, None, JOB_TIMEOUT).await?;
    ensure!(
        events.iter().all(|e| !e.id.is_empty()),
        "every event has an id: {events:?}"
    );
    let first = events.first().map(|e| e.json()).unwrap_or(Value::Null);
    ensure!(
        first["type"] == "connected" && first["jobId"] == id.as_str(),
        "first: {first}"
    );
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.kind() == "progress")
        .map(|e| e.json())
        .collect();
    ensure!(!progress.is_empty(), "no progress events: {events:?}");
    for p in &progress {
        for field in [
            "id",
            "status",
            "progress",
            "estimatedTimeRemaining",
            "chunksCompleted",
            "chunksTotal",
            "throughput",
        ] {
            ensure!(p.get(field).is_some(), "progress event lacks {field}: {p}");
        }
        ensure!(p["chunksTotal"] == 3, "{p}");
    }
    let chunk_events: Vec<Value> = events
        .iter()
        .filter(|e| e.kind() == "chunk")
        .map(|e| e.json())
        .collect();
    ensure!(chunk_events.len() == 3, "chunk events: {chunk_events:?}");
    for (i, c) in chunk_events.iter().enumerate() {
        ensure!(c["index"] == i, "{c}");
        ensure!(
            c["translation"] == fake_translation(&chunks[i]).as_str(),
            "{c}"
        );
    }
    let n = events.len();
    ensure!(n >= 3, "{events:?}");
    let terminal = events[n - 2].json();
    ensure!(terminal["type"] == "completed", "terminal: {terminal}");
    ensure!(
        terminal["result"]["translation"] == expected_translation(&chunks).as_str(),
        "terminal result: {terminal}"
    );
    ensure!(
        events[n - 1].event == "close" && events[n - 1].data == "Job completed",
        "close: {:?}",
        events[n - 1]
    );

    let job = api.job(&id).await?;
    ensure!(
        job["id"] == id.as_str() && job["type"] == "translation",
        "{job}"
    );
    ensure!(
        job["status"] == "completed" && job["progress"] == 100,
        "{job}"
    );
    ensure!(
        job["chunksCompleted"] == 3 && job["chunksTotal"] == 3,
        "{job}"
    );
    ensure!(job["attempts"] == 1, "{job}");
    ensure!(
        job["error"].is_null() && job["cancelledAt"].is_null(),
        "{job}"
    );
    for t in ["createdAt", "startedAt", "completedAt"] {
        ensure!(is_rfc3339_utc(&job[t]), "{t} is not RFC 3339 UTC: {job}");
    }
    ensure!(job["estimatedTimeRemaining"] == 0, "{job}");
    let result = &job["result"];
    ensure!(
        result["translation"] == expected_translation(&chunks).as_str(),
        "{job}"
    );
    ensure!(result["engine"] == "openai", "{job}");
    ensure!(
        result["confidence"]
            .as_f64()
            .is_some_and(|c| (0.0..=1.0).contains(&c))
            && result["processingTime"].is_u64(),
        "{job}"
    );
    for c in &chunks {
        ensure!(
            provider.calls_for(c) == 1,
            "chunk {c:?} called {} times",
            provider.calls_for(c)
        );
    }

    // A finished job's stream: connected, its terminal event, close.
    let again = api.stream(&id, None, Duration::from_secs(10)).await?;
    let kinds: Vec<String> = again
        .iter()
        .map(|e| {
            if e.event == "close" {
                "close".into()
            } else {
                e.kind()
            }
        })
        .collect();
    ensure!(
        kinds == ["connected", "completed", "close"],
        "finished stream: {kinds:?}"
    );

    // Reconnecting after chunk event 1 replays chunks 1 and 2 only.
    let resumed = api.stream(&id, Some("1"), Duration::from_secs(10)).await?;
    let idx: Vec<Value> = resumed
        .iter()
        .filter(|e| e.kind() == "chunk")
        .map(|e| e.json()["index"].clone())
        .collect();
    ensure!(
        idx == [json!(1), json!(2)],
        "resumed chunks: {idx:?} in {resumed:?}"
    );
    ensure!(
        resumed.last().is_some_and(|e| e.event == "close"),
        "{resumed:?}"
    );
    Ok(())
}

/// Bad input gets problem+json with the right status, never a 500.
pub async fn bad_input(api: &Api) -> Result<()> {
    let post_raw = |body: &'static str, ct: Option<&'static str>| {
        let api = api.clone();
        async move {
            let mut req = api.http.post(format!("{}/api/jobs", api.base)).body(body);
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            let res = req.send().await?;
            let status = res.status().as_u16();
            let ct = crate::header(&res, "content-type");
            let body: Value = res.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, ct, body))
        }
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, &'static str, Option<&'static str>, u16)> = vec![
        ("empty text", r#"{"sourceText": ""}"#, json_ct, 400),
        (
            "whitespace text",
            r#"{"sourceText": "  \n\t "}"#,
            json_ct,
            400,
        ),
        ("missing text", r#"{"config": {}}"#, json_ct, 400),
        ("wrong type", r#"{"sourceText": 42}"#, json_ct, 400),
        (
            "wrong config type",
            r#"{"sourceText": "ཀ།", "config": {"chunkSize": "big"}}"#,
            json_ct,
            400,
        ),
        (
            "chunkSize 0",
            r#"{"sourceText": "ཀ།", "config": {"chunkSize": 0}}"#,
            json_ct,
            400,
        ),
        (
            "negative chunkSize",
            r#"{"sourceText": "ཀ།", "config": {"chunkSize": -5}}"#,
            json_ct,
            400,
        ),
        (
            "unknown engine",
            r#"{"sourceText": "ཀ།", "config": {"engine": "babelfish"}}"#,
            json_ct,
            400,
        ),
        (
            "unknown type",
            r#"{"sourceText": "ཀ།", "type": "poetry"}"#,
            json_ct,
            400,
        ),
        (
            "bad threshold",
            r#"{"sourceText": "ཀ།", "config": {"qualityThreshold": 7}}"#,
            json_ct,
            400,
        ),
        ("invalid json", r#"{"sourceText": "#, json_ct, 400),
        ("not an object", r#"["ཀ།"]"#, json_ct, 400),
        (
            "wrong content type",
            r#"{"sourceText": "ཀ།"}"#,
            Some("text/plain"),
            415,
        ),
        ("no content type", r#"{"sourceText": "ཀ།"}"#, None, 415),
    ];
    for (name, body, ct, want) in cases {
        let (status, got_ct, problem) = post_raw(body, ct).await?;
        ensure!(
            status == want,
            "{name}: want {want}, got {status} {problem}"
        );
        ensure!(
            got_ct.starts_with("application/problem+json"),
            "{name}: content type {got_ct}"
        );
        ensure!(
            problem["status"] == want && problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: problem body {problem}"
        );
    }

    // A body over the limit (1 MiB by default).
    let big = format!(r#"{{"sourceText": "{}"}}"#, "ཀ".repeat(400_000));
    let res = api
        .http
        .post(format!("{}/api/jobs", api.base))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    ensure!(res.status().as_u16() == 413, "big body: {}", res.status());

    for (path, method, want) in [
        ("/api/jobs/not-a-uuid", Method::GET, 400),
        (
            "/api/jobs/00000000-0000-4000-8000-000000000000",
            Method::GET,
            404,
        ),
        (
            "/api/jobs/00000000-0000-4000-8000-000000000000",
            Method::DELETE,
            404,
        ),
        (
            "/api/jobs/00000000-0000-4000-8000-000000000000/retry",
            Method::POST,
            404,
        ),
        (
            "/api/jobs/00000000-0000-4000-8000-000000000000/stream",
            Method::GET,
            404,
        ),
        ("/api/jobs?limit=0", Method::GET, 400),
        ("/api/jobs?limit=101", Method::GET, 400),
        ("/api/jobs?limit=ten", Method::GET, 400),
        ("/api/jobs?status=done", Method::GET, 400),
        ("/api/jobs?type=poetry", Method::GET, 400),
        ("/api/jobs?cursor=garbage!", Method::GET, 400),
        ("/api/nothing", Method::GET, 404),
    ] {
        let (status, ct, body) = api.request(method.clone(), path).await?;
        ensure!(
            status == want,
            "{method} {path}: want {want}, got {status} {body}"
        );
        ensure!(
            ct.starts_with("application/problem+json"),
            "{method} {path}: {ct}"
        );
    }
    Ok(())
}

/// Cancel of a pending job, of a processing job, retry, and the 409s.
pub async fn cancel_and_retry(
    api: &Api,
    provider: &FakeProvider,
    concurrency: usize,
) -> Result<()> {
    provider.set_delay_ms(400);
    let tag = unique_tag("cancel");
    // Fill every slot with slow jobs so the next one stays pending.
    let mut blockers = Vec::new();
    for i in 0..concurrency {
        let (text, _, size) = numbered_text(&format!("{tag}b{i}-"), 4);
        blockers.push(
            api.submit(&text, json!({"engine": "openai", "chunkSize": size}))
                .await?,
        );
    }
    let (text, chunks, size) = numbered_text(&format!("{tag}p-"), 2);
    let pending = api
        .submit(&text, json!({"engine": "openai", "chunkSize": size}))
        .await?;
    let job = api.job(&pending).await?;
    ensure!(job["status"] == "pending", "expected pending: {job}");
    let (status, _, body) = api
        .request(Method::DELETE, &format!("/api/jobs/{pending}"))
        .await?;
    ensure!(status == 200, "cancel pending: {status} {body}");
    ensure!(
        body["message"] == "Job cancelled successfully" && body["jobId"] == pending.as_str(),
        "{body}"
    );
    let job = api.job(&pending).await?;
    ensure!(
        job["status"] == "cancelled" && is_rfc3339_utc(&job["cancelledAt"]),
        "{job}"
    );
    let (status, ct, _) = api
        .request(Method::DELETE, &format!("/api/jobs/{pending}"))
        .await?;
    ensure!(
        status == 409 && ct.starts_with("application/problem+json"),
        "second cancel: {status}"
    );

    // Cancel a processing job: it stops before its next chunk.
    let victim = blockers[0].clone();
    api.wait_for(&victim, JOB_TIMEOUT, |j| j["status"] == "processing")
        .await?;
    let (status, _, body) = api
        .request(Method::DELETE, &format!("/api/jobs/{victim}"))
        .await?;
    ensure!(status == 200, "cancel processing: {status} {body}");
    let at_cancel = api.job(&victim).await?;
    ensure!(at_cancel["status"] == "cancelled", "{at_cancel}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = api.job(&victim).await?;
    ensure!(later["status"] == "cancelled", "{later}");
    ensure!(
        later["chunksCompleted"] == at_cancel["chunksCompleted"],
        "a cancelled job went on: {at_cancel} -> {later}"
    );

    // The cancelled pending job never started; the others finish.
    for b in &blockers[1..] {
        api.wait_status(b, "completed", JOB_TIMEOUT).await?;
    }
    ensure!(
        chunks.iter().all(|c| provider.calls_for(c) == 0),
        "a cancelled pending job was translated"
    );
    ensure!(
        api.job(&pending).await?["startedAt"].is_null(),
        "cancelled pending job has a startedAt"
    );

    // Retry both; they complete; the victim re-runs only unfinished chunks.
    provider.set_delay_ms(20);
    for id in [&pending, &victim] {
        let (status, _, body) = api
            .request(Method::POST, &format!("/api/jobs/{id}/retry"))
            .await?;
        ensure!(status == 200, "retry: {status} {body}");
        ensure!(
            body["message"] == "Job retry initiated" && body["jobId"] == id.as_str(),
            "{body}"
        );
    }
    let done = api.wait_status(&pending, "completed", JOB_TIMEOUT).await?;
    ensure!(
        done["result"]["translation"] == expected_translation(&chunks).as_str(),
        "{done}"
    );
    let v = api.wait_status(&victim, "completed", JOB_TIMEOUT).await?;
    ensure!(v["attempts"] == 2 && v["cancelledAt"].is_null(), "{v}");
    let (status, _, _) = api
        .request(Method::POST, &format!("/api/jobs/{victim}/retry"))
        .await?;
    ensure!(status == 409, "retry of a completed job: {status}");
    let (status, _, _) = api
        .request(Method::DELETE, &format!("/api/jobs/{victim}"))
        .await?;
    ensure!(status == 409, "cancel of a completed job: {status}");
    Ok(())
}

/// Transient failures are retried; permanent ones fail the job at once.
pub async fn retries_and_failures(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    let tag = unique_tag("retry");
    let flaky = format!("{tag} FAIL503x2 ཀ་ཁ།");
    let id = api.submit(&flaky, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&flaky) == 3,
        "503 twice then success: {} calls",
        provider.calls_for(&flaky)
    );
    ensure!(
        job["result"]["translation"] == fake_translation(&flaky).as_str(),
        "{job}"
    );

    let bad = format!("{tag} FAIL400 ཀ་ཁ།");
    let id = api.submit(&bad, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "failed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&bad) == 1,
        "400 is permanent: {} calls",
        provider.calls_for(&bad)
    );
    ensure!(
        job["error"].as_str().is_some_and(|e| e.contains("400")
            && e.starts_with("provider_rejected: ")
            && !e.contains("injected")),
        "a stable code and no provider text: {job}"
    );
    ensure!(is_rfc3339_utc(&job["completedAt"]), "{job}");
    let events = api.stream(&id, None, Duration::from_secs(10)).await?;
    ensure!(
        events
            .iter()
            .any(|e| e.kind() == "failed" && e.json()["error"].is_string()),
        "{events:?}"
    );
    ensure!(
        events
            .last()
            .is_some_and(|e| e.event == "close" && e.data == "Job failed"),
        "{events:?}"
    );

    let down = format!("{tag} ALWAYS503 ཀ་ཁ།");
    let id = api.submit(&down, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "failed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&down) == 3,
        "3 attempts in all: {}",
        provider.calls_for(&down)
    );
    ensure!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("3 attempts") && e.starts_with("provider_unavailable: ")),
        "{job}"
    );
    Ok(())
}

/// Newest first, stable cursor pagination, filters, no result text.
pub async fn list_and_paginate(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    let tag = unique_tag("list");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            api.submit(&format!("{tag}{i} ཀ་ཁ།"), json!({"engine": "openai"}))
                .await?,
        );
    }
    for id in &ids {
        api.wait_status(id, "completed", JOB_TIMEOUT).await?;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/jobs?limit=2&cursor={c}"),
            None => "/api/jobs?limit=2".to_owned(),
        };
        let (status, _, page) = api.request(Method::GET, &path).await?;
        ensure!(status == 200, "{page}");
        let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
        ensure!(jobs.len() <= 2, "{page}");
        for j in &jobs {
            ensure!(j.get("result").is_none(), "list items omit the result: {j}");
            seen.push(j["id"].as_str().unwrap_or_default().to_owned());
        }
        if pages == 0 {
            // A job arriving mid-pagination must not shift later pages.
            api.submit(&format!("{tag}late ཀ་ཁ།"), json!({"engine": "openai"}))
                .await?;
        }
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                ensure!(page["nextCursor"].is_null(), "{page}");
                break;
            }
        }
        if pages > 10_000 {
            bail!("pagination does not end");
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    ensure!(
        unique.len() == seen.len(),
        "a job was repeated across pages"
    );
    let positions: Vec<usize> = ids
        .iter()
        .map(|id| seen.iter().position(|s| s == id))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("a job was skipped"))?;
    ensure!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {positions:?}"
    );

    let (_, _, page) = api
        .request(
            Method::GET,
            "/api/jobs?status=completed&type=translation&limit=100",
        )
        .await?;
    let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
    ensure!(
        !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "completed"),
        "{page}"
    );
    let (_, _, page) = api.request(Method::GET, "/api/jobs").await?;
    ensure!(
        page["jobs"].as_array().is_some_and(|j| j.len() <= 20),
        "default limit 20"
    );
    Ok(())
}

/// Health, metrics and the OpenAPI document.
pub async fn health_metrics_openapi(api: &Api) -> Result<()> {
    let (status, _, health) = api.request(Method::GET, "/healthz").await?;
    ensure!(status == 200 && health["status"] == "ok", "{health}");
    let (status, ct, text) = api.request(Method::GET, "/metrics").await?;
    ensure!(
        status == 200 && ct.starts_with("text/plain"),
        "metrics: {status} {ct}"
    );
    let text = text.as_str().unwrap_or_default().to_owned();
    for name in [
        "lotsawa_jobs{status=\"completed\"}",
        "lotsawa_chunk_attempts_total",
        "lotsawa_chunk_duration_seconds",
        "lotsawa_queue_depth",
    ] {
        ensure!(text.contains(name), "metrics lack {name}");
    }
    let (status, _, doc) = api.request(Method::GET, "/openapi.json").await?;
    ensure!(
        status == 200
            && doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    for p in [
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/retry",
        "/api/jobs/{id}/stream",
        "/healthz",
        "/metrics",
    ] {
        ensure!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    Ok(())
}

/// `transliteration` jobs return exact EWTS; the offline engine glosses.
pub async fn transliteration_and_offline(api: &Api) -> Result<()> {
    let text = "༄༅། །བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ། །\nཨོཾ་མ་ཎི་པདྨེ་ཧཱུྃ།\n";
    let (status, body, _) = api
        .post_job(
            &json!({"sourceText": text, "type": "transliteration", "config": {"chunkSize": 20}}),
        )
        .await?;
    ensure!(status == 202, "{body}");
    let id = body["jobId"].as_str().unwrap_or_default().to_owned();
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(job["type"] == "transliteration", "{job}");
    ensure!(
        job["result"]["translation"]
            == "@#/_/byang chub sems dpa'i spyod pa la 'jug pa/_/\noM ma Ni pad+me hU~M/\n",
        "{job}"
    );
    ensure!(job["result"]["engine"] == "ewts", "{job}");
    ensure!(job["chunksTotal"].as_u64() > Some(1), "chunked: {job}");

    let id = api
        .submit(
            "སངས་རྒྱས་ཆོས་དང་ཚོགས་ཀྱི་མཆོག་རྣམས་ལ། །སྤྲེའུ་ཡིས།",
            json!({"engine": "offline"}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(job["result"]["engine"] == "offline", "{job}");
    let t = job["result"]["translation"].as_str().unwrap_or_default();
    ensure!(
        t.contains("Buddha") && t.contains("assembly") && t.contains("[spre'u]"),
        "{job}"
    );
    let c = job["result"]["confidence"].as_f64().unwrap_or(-1.0);
    ensure!(c > 0.5 && c < 1.0, "confidence: {job}");
    Ok(())
}

/// The same text twice calls the provider once per distinct chunk.
/// `memory_metric`: the deployment exports `lotsawa_translation_memory_hits_total`.
pub async fn translation_memory(
    api: &Api,
    provider: &FakeProvider,
    memory_metric: bool,
) -> Result<()> {
    provider.set_delay_ms(0);
    let (text, chunks, size) = numbered_text(&unique_tag("tm"), 3);
    let config = json!({"engine": "openai", "chunkSize": size});
    let first = api.submit(&text, config.clone()).await?;
    let a = api.wait_status(&first, "completed", JOB_TIMEOUT).await?;
    let second = api.submit(&text, config).await?;
    let b = api.wait_status(&second, "completed", JOB_TIMEOUT).await?;
    for c in &chunks {
        ensure!(
            provider.calls_for(c) == 1,
            "chunk {c:?} called {} times",
            provider.calls_for(c)
        );
    }
    ensure!(a["result"]["chunksFromMemory"] == 0, "{a}");
    ensure!(b["result"]["chunksFromMemory"] == 3, "{b}");
    ensure!(
        a["result"]["translation"] == b["result"]["translation"],
        "{a} {b}"
    );
    if !memory_metric {
        return Ok(());
    }
    let (_, _, metrics) = api.request(Method::GET, "/metrics").await?;
    let hits = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("lotsawa_translation_memory_hits_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    ensure!(hits >= 3.0, "memory hits metric: {hits}");
    Ok(())
}

/// Glossary terms reach the model; context of the previous chunk is sent;
/// bad answers get one quality retry; the reviewer's low confidence is a
/// warning.
pub async fn glossary_context_quality(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    let tag = unique_tag("q");
    // Glossary and context.
    let (text, chunks, size) = numbered_text(&format!("{tag}g"), 2);
    let id = api
        .submit(
            &text,
            json!({"engine": "openai", "chunkSize": size,
            "glossary": [{"bo": "བྱང་ཆུབ་སེམས་དཔའ", "en": "awakening warrior"}]}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["result"]["warnings"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{job}"
    );
    let second = provider.requests_for(&chunks[1]);
    let messages = second
        .first()
        .map(|b| b["messages"].clone())
        .unwrap_or(Value::Null);
    ensure!(
        messages[0]["content"]
            .as_str()
            .is_some_and(|s| s.contains(r#"{"bo":"བྱང་ཆུབ་སེམས་དཔའ","en":"awakening warrior"}"#)),
        "glossary not in the system message: {messages}"
    );
    ensure!(
        messages.as_array().map(Vec::len) == Some(4),
        "context turns: {messages}"
    );
    ensure!(
        messages[1]["content"] == chunks[0].as_str(),
        "context source: {messages}"
    );
    ensure!(
        messages[2]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with(&fake_translation(&chunks[0]))),
        "context translation: {messages}"
    );
    ensure!(
        messages[3]["content"] == chunks[1].as_str(),
        "last message is the chunk: {messages}"
    );

    // A glossary the model ignores: one quality retry, then a warning.
    let ignored = format!("{tag} IGNORE_GLOSSARY བྱང་ཆུབ་སེམས་དཔའ།");
    let id = api
        .submit(
            &ignored,
            json!({"engine": "openai",
            "glossary": [{"bo": "བྱང་ཆུབ་སེམས་དཔའ", "en": "awakening warrior"}]}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&ignored) == 2,
        "quality retry: {} calls",
        provider.calls_for(&ignored)
    );
    ensure!(
        job["result"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("awakening warrior")),
        "{job}"
    );

    // Still Tibetan once: retried and completed; always: failed.
    // Mostly Tibetan, so that an answer repeating it is rejected.
    let verse = "བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ་བདེ་གཤེགས་ཆོས་ཀྱི་སྐུ་མངའ་སྲས་བཅས་དང་།";
    let once = format!("{tag} TIBETAN_ONCE {verse}");
    let id = api.submit(&once, json!({"engine": "openai"})).await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&once) == 2,
        "{} calls",
        provider.calls_for(&once)
    );
    let always = format!("{tag} TIBETAN_ALWAYS {verse}");
    let id = api.submit(&always, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "failed", JOB_TIMEOUT).await?;
    ensure!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("quality check")),
        "{job}"
    );

    // The reviewer.
    let low = format!("{tag} LOWCONF ཀ་ཁ་ག་ང།");
    let id = api
        .submit(
            &low,
            json!({"engine": "openai", "useHelperAI": true, "qualityThreshold": 0.8}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(job["result"]["confidence"] == 0.3, "{job}");
    ensure!(
        job["result"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("reviewer confidence 0.30")),
        "{job}"
    );
    Ok(())
}

/// Which deployment the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The `lotsawa serve` binary.
    Local,
    /// The emulated cloud.
    Cloud,
}

/// What every case gets: the deployment, the fake provider behind it, and
/// which deployment it is.
pub struct Ctx {
    /// The API.
    pub api: Api,
    /// The provider the `openai` engine talks to.
    pub provider: FakeProvider,
    /// Local or cloud.
    pub target: Target,
    /// The deployment's concurrency limit.
    pub concurrency: usize,
}

/// A case's future.
pub type CaseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// One case of the suite.
pub type Case = for<'a> fn(&'a Ctx) -> CaseFuture<'a>;

fn case_health(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(health_metrics_openapi(&c.api))
}
fn case_bad_input(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(bad_input(&c.api))
}
fn case_submit(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(submit_stream_complete(&c.api, &c.provider))
}
fn case_retries(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(retries_and_failures(&c.api, &c.provider))
}
fn case_list(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(list_and_paginate(&c.api, &c.provider))
}
fn case_cancel(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(cancel_and_retry(&c.api, &c.provider, c.concurrency))
}
fn case_transliteration(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(transliteration_and_offline(&c.api))
}
fn case_memory(c: &Ctx) -> CaseFuture<'_> {
    // The cloud's memory-hit counter is checked with its other counters.
    Box::pin(translation_memory(
        &c.api,
        &c.provider,
        c.target == Target::Local,
    ))
}
fn case_glossary(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(glossary_context_quality(&c.api, &c.provider))
}

/// Idempotency keys and the per-job limits, the same on every deployment:
/// a repeated key returns the first job (202, `Idempotent-Replayed: true`),
/// a key reused with another body is 422, a text that would make more
/// chunks than allowed and an overlong glossary term are refused before
/// anything is stored.
pub async fn idempotency_and_job_limits(api: &Api) -> Result<()> {
    let tag = unique_tag("idem");
    let key = format!("{tag}key");
    let body = json!({"sourceText": format!("{tag} ཀ་ཁ་ག།"), "config": {"engine": "offline"}});
    let post = |body: Value, key: String| {
        let http = api.http.clone();
        let url = format!("{}/api/jobs", api.base);
        async move {
            let res = http
                .post(url)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await?;
            let status = res.status().as_u16();
            let replayed = crate::header(&res, "idempotent-replayed");
            let body = res.json::<Value>().await.unwrap_or(Value::Null);
            Ok::<_, anyhow::Error>((status, replayed, body))
        }
    };
    let (s1, r1, b1) = post(body.clone(), key.clone()).await?;
    ensure!(s1 == 202 && r1.is_empty(), "first: {s1} {r1} {b1}");
    let (s2, r2, b2) = post(body.clone(), key.clone()).await?;
    ensure!(s2 == 202 && r2 == "true", "replay: {s2} {r2} {b2}");
    ensure!(b1["jobId"] == b2["jobId"], "the same job: {b1} {b2}");
    let other = json!({"sourceText": format!("{tag} ག་ང།"), "config": {"engine": "offline"}});
    let (s3, _, b3) = post(other, key.clone()).await?;
    ensure!(s3 == 422, "another body under the key: {s3} {b3}");
    let id = b1["jobId"].as_str().unwrap_or_default().to_owned();
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;

    // More chunks than a job may have: refused, nothing stored.
    let (_, _, before) = api.request(Method::GET, "/api/jobs?limit=100").await?;
    let many = "ཀ། ".repeat(2100);
    let (status, body, _) = api
        .post_job(&json!({"sourceText": many, "config": {"chunkSize": 1}}))
        .await?;
    ensure!(
        status == 400
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("at most 2000")),
        "{status} {body}"
    );
    let (_, _, after) = api.request(Method::GET, "/api/jobs?limit=100").await?;
    ensure!(
        before["jobs"].as_array().map(Vec::len) == after["jobs"].as_array().map(Vec::len),
        "a refused job was stored"
    );
    let long_term = vec!["ཀ"; 17].join("་");
    let (status, body, _) = api
        .post_job(
            &json!({"sourceText": "ཀ་ཁ།", "config": {"glossary": [{"bo": long_term, "en": "x"}]}}),
        )
        .await?;
    ensure!(
        status == 400
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("16 syllables")),
        "{status} {body}"
    );
    Ok(())
}

fn case_limits(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(idempotency_and_job_limits(&c.api))
}
fn case_pdf_jobs(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::documents::pdf_jobs(&c.api))
}
fn case_batch_bad_input(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::batches::batch_bad_input(&c.api))
}
fn case_batch_progress(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::batches::batch_progress_and_fairness(
        &c.api,
        &c.provider,
        c.concurrency,
    ))
}
fn case_batch_cancel(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::batches::batch_cancel_retry_and_list(
        &c.api,
        &c.provider,
        c.concurrency,
    ))
}

/// The suite, in the order it runs against every deployment (one test per
/// case: a failure does not hide the cases after it).
pub const CASES: &[(&str, Case)] = &[
    ("api::health_metrics_openapi", case_health),
    ("api::bad_input", case_bad_input),
    ("api::submit_stream_complete", case_submit),
    ("api::retries_and_failures", case_retries),
    ("api::list_and_paginate", case_list),
    ("api::cancel_and_retry", case_cancel),
    ("api::transliteration_and_offline", case_transliteration),
    ("api::translation_memory", case_memory),
    ("api::glossary_context_quality", case_glossary),
    ("api::idempotency_and_job_limits", case_limits),
    ("api::batch_bad_input", case_batch_bad_input),
    ("api::batch_progress_and_fairness", case_batch_progress),
    ("api::batch_cancel_retry_and_list", case_batch_cancel),
    ("api::pdf_jobs", case_pdf_jobs),
    ("api::metrics_after_work", case_health),
];
