//! What a client reads beside one job: the job list (newest first, stable
//! cursor pagination, filters, no result text) and the service endpoints
//! (health, Prometheus metrics, the OpenAPI document). The health case
//! runs twice in [`CASES`](super::CASES), first and last
//! (`api::metrics_after_work`), so the metrics are checked on a fresh
//! deployment and again after the rest of the suite's work.

use std::collections::HashSet;

use anyhow::{Result, bail, ensure};
use reqwest::Method;
use serde_json::json;

use super::{JOB_TIMEOUT, unique_tag};
use crate::{Api, FakeProvider};

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
