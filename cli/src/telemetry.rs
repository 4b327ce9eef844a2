//! Traces over OTLP/HTTP, configured by the standard variables and off
//! when none names an endpoint: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_SERVICE_NAME` (default
//! `lotsawa`), `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (read by
//! the SDK). W3C `traceparent` on a request continues its trace: an HTTP
//! request span, each job run, each chunk and each provider call.

use axum::extract::MatchedPath;
use axum::http::Request;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Source;

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
    Ok(Some(Telemetry { provider }))
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

/// The span of an HTTP request: method and route, continuing the trace of
/// the request's `traceparent` when it has one.
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{} {route}", req.method()),
        http.request.method = %req.method(),
        http.route = %route,
        url.path = %req.uri().path(),
    );
    let parent = global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}
