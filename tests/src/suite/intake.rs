//! What the API refuses or deduplicates before a job exists: malformed
//! bodies, wrong content types, oversized requests and bad paths or query
//! parameters (problem+json with the right status, never a 500), then
//! idempotency keys and the per-job limits. Grouped because each case
//! checks that a request is answered without anything being run or stored.

use anyhow::{Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use super::{JOB_TIMEOUT, unique_tag};
use crate::Api;

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
