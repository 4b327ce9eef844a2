//! Traces over OTLP/HTTP, for both forms, configured by the standard variables and off
//! when none names an endpoint: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_SERVICE_NAME` (default
//! `lotsawa`), `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (read by
//! the SDK). W3C `traceparent` on a request continues its trace: an HTTP
//! request span, each job run, each chunk and each provider call.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use lotsawa_core::settings::Source;

/// The exporter, when tracing is on; flushed and stopped by [`shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Start the exporter when an OTLP endpoint is configured.
pub fn init(env: &dyn Source) -> Result<Option<Telemetry>, String> {
    let configured = env.var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    let disabled = env.var("OTEL_SDK_DISABLED").as_deref() == Some("true");
    if !configured || disabled {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let name = env
        .var("OTEL_SERVICE_NAME")
        .unwrap_or_else(|| "lotsawa".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    let _ = FLUSHER.set(provider.clone());
    Ok(Some(Telemetry { provider }))
}

/// The provider [`flush`] pushes (set once, by [`init`]).
static FLUSHER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (an endpoint was configured at [`init`]).
pub fn enabled() -> bool {
    FLUSHER.get().is_some()
}

/// Export the spans buffered so far: a function calls it at the end of each
/// invocation, before Lambda freezes it. Nothing when traces are off.
pub fn flush() {
    if let Some(p) = FLUSHER.get()
        && let Err(e) = p.force_flush()
    {
        tracing::warn!(error = %e, "spans not exported");
    }
}

/// The current span's W3C `traceparent`: `None` when traces are off (no
/// propagator is installed, or the span carries no trace).
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Make `span` continue the trace `traceparent` names (when there is one
/// and traces are on).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}

impl Telemetry {
    /// The tracing layer that turns spans into exported ones.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("lotsawa"))
    }

    /// Export what is buffered and stop.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: traces not all exported at shutdown: {e}");
        }
    }
}
