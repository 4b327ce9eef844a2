//! Which trace a job's run continues: the trace context of the request
//! that queued it (a pipeline's `traceparent`, or the request's own trace),
//! kept in memory from the submission until the run starts. A run resumed
//! after a restart starts a trace of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lotsawa_core::JobId;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Contexts kept at most (jobs queued and not yet started); beyond it a
/// run starts a trace of its own rather than the map growing without end.
const MAX_KEPT: usize = 100_000;

/// Trace contexts of queued jobs, by job.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueuedTraces(Arc<Mutex<HashMap<JobId, opentelemetry::Context>>>);

impl QueuedTraces {
    /// Remember the current span's trace for `id` (nothing when tracing is
    /// off: the current span then carries no trace).
    pub(crate) fn remember(&self, id: JobId) {
        let cx = tracing::Span::current().context();
        if !cx.span().span_context().is_valid() {
            return;
        }
        if let Ok(mut map) = self.0.lock()
            && map.len() < MAX_KEPT
        {
            map.insert(id, cx);
        }
    }

    /// Forget `id` (a cancelled job).
    pub(crate) fn forget(&self, id: JobId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&id);
        }
    }

    /// The span of a run of `id`: a child of the trace that queued it.
    pub(crate) fn run_span(&self, id: JobId, run: u32, chunks: u32) -> tracing::Span {
        let span =
            tracing::info_span!("job.run", job.id = %id, job.run = run, chunks.total = chunks);
        let cx = self.0.lock().ok().and_then(|mut map| map.remove(&id));
        if let Some(cx) = cx {
            let _ = span.set_parent(cx);
        }
        span
    }
}
