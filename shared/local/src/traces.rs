//! The span of a job's run: it continues the trace of the request that
//! submitted the job (the `traceparent` the job keeps), so a run resumed
//! after a restart, or a retry, joins the same trace.

use lotsawa_core::Job;

/// The span of `job`'s current run.
pub(crate) fn run_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "job.run",
        job.id = %job.id,
        job.run = job.run,
        chunks.total = job.chunks_total,
    );
    lotsawa_telemetry::continue_trace(&span, job.trace.as_deref());
    span
}
