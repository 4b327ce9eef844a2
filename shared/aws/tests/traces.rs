//! The cloud worker's spans continue the trace of the request that
//! submitted the job (the `traceparent` the job item keeps): a worker step
//! (`job.step`) is a child of the submitting span, its `chunk` a child of
//! the step, and the `provider.call` a child of the chunk. Spans are taken
//! by an in-memory exporter behind the same tracing layer the functions
//! use; the store is DynamoDB in moto.

use std::sync::Arc;

use chrono::Utc;
use lotsawa_aws::store::{Clients, DynamoStore};
use lotsawa_aws::worker::{Answer, Task, Worker};
use lotsawa_conformance::JobFactory;
use lotsawa_core::store::{Change, transition};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

mod support;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_step_continues_the_jobs_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let sdk = support::sdk().await;
    let store = DynamoStore::new(Clients::from_sdk(&sdk), support::fresh_config());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let submitter = "00f067aa0ba902b7";
    let job = JobFactory::new()
        .with(|j| j.trace = Some(format!("00-{trace_id}-{submitter}-01")))
        .create(&store)
        .await;
    let kept = lotsawa_core::JobStore::get(&store, job.id)
        .await
        .expect("get");
    assert_eq!(kept.trace, job.trace, "the job item keeps its trace");
    transition(&store, &kept, Change::Start { limit: 3 }, Utc::now())
        .await
        .expect("start");

    let worker = Worker {
        store: store.clone(),
        engines: lotsawa_engines::EngineSet::from_engines(
            vec![Arc::new(lotsawa_engines::EchoEngine)],
            "echo",
        ),
        budgets: Default::default(),
    };
    let body = format!(
        r#"{{"action":"chunk","taskToken":"t","jobId":"{}","run":1,"attempt":0}}"#,
        job.id
    );
    let task = Task::parse(&body).expect("task");
    let answer = worker.handle(&task).await;
    assert!(matches!(answer, Answer::Success(_)), "{answer:?}");
    provider.force_flush().expect("flush");

    let spans: Vec<SpanData> = exporter.get_finished_spans().expect("spans");
    let named = |name: &str| -> &SpanData {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no {name} span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let step = named("job.step");
    assert_eq!(step.span_context.trace_id().to_string(), trace_id);
    assert_eq!(step.parent_span_id.to_string(), submitter);
    let chunk = named("chunk");
    assert_eq!(chunk.parent_span_id, step.span_context.span_id());
    let call = named("provider.call");
    assert_eq!(call.parent_span_id, chunk.span_context.span_id());
    assert_eq!(hex(&call.span_context.trace_id().to_bytes()), trace_id);
}
