//! Every metric the Grafana dashboard names exists on a running server's
//! `/metrics` (the local server's exposition; the cloud-only counters as
//! core renders them for the cloud's `/metrics`), so a renamed metric
//! cannot leave a panel empty.

use std::collections::BTreeSet;

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::suite::JOB_TIMEOUT;
use serde_json::{Value, json};

mod support;

use support::{Server, temp_db};

/// The metric names in a PromQL expression (`lotsawa_…`), histogram
/// series suffixes taken off.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lotsawa_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Metric families exposed in a Prometheus text (from `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_names_is_exposed() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/grafana-lotsawa.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut named = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let found = names_in(expr);
            assert!(!found.is_empty(), "a panel query names no metric: {expr}");
            named.extend(found);
        }
    }

    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 1, &[]);
    // One job, so the per-engine histogram has a series.
    let id = server
        .api
        .submit("ཀ་ཁ་ག་ང། ", json!({}))
        .await
        .expect("submit");
    server
        .api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    let res = reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("metrics");
    assert_eq!(res.status().as_u16(), 200);
    let mut exposed = families(&res.text().await.expect("text"));
    exposed.extend(families(
        &lotsawa_core::metrics::ChunkTotals::default().to_prometheus(),
    ));

    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names metrics /metrics does not have: {missing:?} (exposed: {exposed:?})"
    );
    assert!(
        named.len() >= 8,
        "the dashboard covers the metrics: {named:?}"
    );
}

#[test]
fn metric_names_are_read_out_of_queries() {
    assert_eq!(
        names_in(
            "histogram_quantile(0.5, sum by (le) (rate(lotsawa_chunk_duration_seconds_bucket[5m])))"
        ),
        ["lotsawa_chunk_duration_seconds"]
    );
    assert_eq!(
        names_in("lotsawa_jobs + lotsawa_slots_in_use"),
        ["lotsawa_jobs", "lotsawa_slots_in_use"]
    );
}
