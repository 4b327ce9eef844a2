//! Traces over OTLP/HTTP to a real receiver in the test: a job submitted
//! with a W3C `traceparent` is one trace, its spans in the expected tree:
//! the pipeline's span → the POST request → the job's run → each chunk →
//! each provider call, with the job id, chunk index, engine, model, attempt
//! and outcome as attributes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::suite::JOB_TIMEOUT;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

mod support;

use support::{Server, temp_db};

type Received = Arc<Mutex<Vec<Span>>>;

async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut spans = received.lock().expect("lock");
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// An OTLP/HTTP receiver on loopback: its endpoint and what it received.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(n) => n.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(x) => x.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_form_one_trace_under_the_pipelines_span() {
    let (endpoint, received) = receiver().await;
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let server = Server::start(
        &db,
        &provider,
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "lotsawa-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            (
                "LOTSAWA_LOG",
                "warn,lotsawa=info,lotsawa_local=info,lotsawa_core=info",
            ),
        ],
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let pipeline_span = "00f067aa0ba902b7";
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/api/jobs", server.url))
        .header("traceparent", format!("00-{trace_id}-{pipeline_span}-01"))
        .json(&json!({
            "sourceText": "ཀ་ཁ་ག་ང། ཅ་ཆ་ཇ་ཉ། ",
            "config": {"chunkSize": 12},
        }))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status().as_u16(), 202);
    let id = res.json::<serde_json::Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("jobId")
        .to_owned();
    let job = server
        .api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    let chunks = job["chunksTotal"].as_u64().expect("chunks") as usize;
    assert!(chunks >= 2, "{job}");

    // The spans arrive in batches; wait for the provider calls.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans: Vec<Span> = loop {
        let spans: Vec<Span> = received
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        let calls = spans.iter().filter(|s| s.name == "provider.call").count();
        if calls >= chunks || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    let post = spans
        .iter()
        .find(|s| s.name == "POST /api/jobs")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(
        hex(&post.parent_span_id),
        pipeline_span,
        "the pipeline's span is the parent"
    );

    let run = spans
        .iter()
        .find(|s| s.name == "job.run")
        .unwrap_or_else(|| panic!("no run span in {names:?}"));
    assert_eq!(hex(&run.parent_span_id), hex(&post.span_id));
    assert_eq!(attr(run, "job.id").as_deref(), Some(id.as_str()));

    let chunk_spans: Vec<&Span> = spans.iter().filter(|s| s.name == "chunk").collect();
    assert_eq!(chunk_spans.len(), chunks, "{names:?}");
    let mut indexes: Vec<String> = Vec::new();
    for c in &chunk_spans {
        assert_eq!(hex(&c.parent_span_id), hex(&run.span_id));
        assert_eq!(attr(c, "job.id").as_deref(), Some(id.as_str()));
        assert_eq!(attr(c, "outcome").as_deref(), Some("success"));
        indexes.push(attr(c, "chunk.index").expect("chunk.index"));
    }
    indexes.sort();
    let want: Vec<String> = (0..chunks).map(|i| i.to_string()).collect();
    assert_eq!(indexes, want);

    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "provider.call").collect();
    assert_eq!(calls.len(), chunks, "{names:?}");
    for call in calls {
        let parent = by_id
            .get(&hex(&call.parent_span_id))
            .expect("the call's parent is in the trace");
        assert_eq!(parent.name, "chunk");
        assert_eq!(attr(call, "engine").as_deref(), Some("openai"));
        assert_eq!(attr(call, "model").as_deref(), Some("fake-model"));
        assert_eq!(attr(call, "attempt").as_deref(), Some("1"));
        assert_eq!(attr(call, "outcome").as_deref(), Some("success"));
    }
    drop(server);
}
