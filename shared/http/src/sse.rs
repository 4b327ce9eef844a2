//! `GET /api/jobs/{id}/stream`: job progress as Server-Sent Events.
//!
//! Event ids count the chunk events a client has seen: a `chunk` event for
//! chunk i has id i+1, and every other event carries the id of the last chunk
//! event before it. Chunks of a job complete in index order, so a client
//! reconnecting with `Last-Event-ID: n` gets every chunk from index n on.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use lotsawa_core::store::Pulse;
use lotsawa_core::{ChunkOutput, JobId, JobStatus, JobView, ServiceError, Tenant};
use serde_json::json;
use tokio::sync::mpsc;

use crate::dto::{ProgressEvent, ResultDto};
use crate::error::{MalformedId, NoSuchJob};
use crate::extract::JobIdPath;
use crate::{ApiError, AppState};

/// Progress is re-sent at least this often while a job is live.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Chunks read per page while a stream catches up.
const CHUNK_PAGE: u32 = 16;

/// Open streams, in all and per tenant, on this process.
#[derive(Debug, Default)]
pub(crate) struct StreamSlots {
    open: std::sync::Mutex<(usize, std::collections::HashMap<Tenant, usize>)>,
}

/// One open stream; its slot is given back when it is dropped.
pub(crate) struct StreamSlot {
    slots: std::sync::Arc<StreamSlots>,
    tenant: Tenant,
}

impl StreamSlots {
    /// A slot for `tenant`, or the error to answer: 429 at the tenant's
    /// cap, 503 at the process's.
    fn take(
        self: &std::sync::Arc<Self>,
        tenant: &Tenant,
        max: usize,
        per_tenant: usize,
    ) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.1.get(tenant).copied().unwrap_or(0);
        if mine >= per_tenant {
            let e = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "you have {mine} progress streams open and at most {per_tenant} may be; \
                     close one first"
                ),
            );
            return Err(e.with_retry_after(5));
        }
        if open.0 >= max {
            let e = ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server has as many progress streams open as it serves; try again shortly",
            );
            return Err(e.with_retry_after(5));
        }
        open.0 += 1;
        *open.1.entry(tenant.clone()).or_insert(0) += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.tenant);
            }
        }
    }
}

/// Chunks `from..to` as read.
type Page = (u32, u32, std::sync::Arc<Vec<ChunkOutput>>);

/// What the streams of one job share on this process: the newest view read
/// after a change and the newest page of chunks. A change wakes every
/// stream of its job; the first to get here reads, the others take its
/// read (a view read after change `n` is good for any stream woken by `n`).
#[derive(Default)]
pub(crate) struct SharedReads {
    view: tokio::sync::Mutex<Option<(u64, std::sync::Arc<JobView>)>>,
    page: tokio::sync::Mutex<Option<Page>>,
}

impl SharedReads {
    /// The job's view as of change `count` or later.
    async fn view(
        &self,
        count: u64,
        read: impl std::future::Future<Output = Result<JobView, ServiceError>>,
    ) -> Result<std::sync::Arc<JobView>, ServiceError> {
        let mut cached = self.view.lock().await;
        if let Some((n, v)) = cached.as_ref()
            && *n >= count
        {
            return Ok(v.clone());
        }
        let v = std::sync::Arc::new(read.await?);
        *cached = Some((count, v.clone()));
        Ok(v)
    }

    /// Completed chunks `from..to` (they never change once completed; a
    /// page missing one is read again).
    async fn page(
        &self,
        from: u32,
        to: u32,
        read: impl std::future::Future<Output = Result<Vec<ChunkOutput>, ServiceError>>,
    ) -> Result<std::sync::Arc<Vec<ChunkOutput>>, ServiceError> {
        let mut cached = self.page.lock().await;
        if let Some((f, t, chunks)) = cached.as_ref()
            && (*f, *t) == (from, to)
        {
            return Ok(chunks.clone());
        }
        let chunks = std::sync::Arc::new(read.await?);
        // A page with a gap (chunks translated in parallel, one still
        // running) changes: only a whole page is kept.
        if chunks.len() == to.saturating_sub(from) as usize {
            *cached = Some((from, to, chunks.clone()));
        }
        Ok(chunks)
    }
}

/// Shared reads per streamed job; a job's entry goes with its last stream.
#[derive(Default)]
pub(crate) struct JobReads {
    jobs: std::sync::Mutex<std::collections::HashMap<JobId, std::sync::Arc<SharedReads>>>,
}

/// A stream's hold on its job's shared reads.
struct ReadsHold {
    all: std::sync::Arc<JobReads>,
    id: JobId,
    reads: std::sync::Arc<SharedReads>,
}

impl JobReads {
    fn join(self: &std::sync::Arc<Self>, id: JobId) -> ReadsHold {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let reads = jobs.entry(id).or_default().clone();
        ReadsHold {
            all: self.clone(),
            id,
            reads,
        }
    }
}

impl Drop for ReadsHold {
    fn drop(&mut self) {
        let mut jobs = self.all.jobs.lock().unwrap_or_else(|p| p.into_inner());
        // The map's and this hold's: nobody else streams the job.
        if std::sync::Arc::strong_count(&self.reads) <= 2 {
            jobs.remove(&self.id);
        }
    }
}

fn progress_of(v: &JobView) -> ProgressEvent {
    ProgressEvent {
        kind: "progress".into(),
        id: v.job.id.to_string(),
        status: v.job.status.as_str().into(),
        progress: v.progress.percent,
        estimated_time_remaining: v.progress.estimated_time_remaining_ms,
        chunks_completed: v.job.chunks_completed,
        chunks_total: v.job.chunks_total,
        throughput: v.progress.throughput_per_minute,
    }
}

fn event(id: u32, data: &serde_json::Value) -> Event {
    Event::default().id(id.to_string()).data(data.to_string())
}

fn terminal_event(v: &JobView, id: u32) -> Event {
    let j = &v.job;
    let data = match j.status {
        JobStatus::Completed => json!({
            "type": "completed",
            "id": j.id.to_string(),
            "result": j.result.clone().map(ResultDto::from),
        }),
        JobStatus::Failed => json!({
            "type": "failed",
            "id": j.id.to_string(),
            "error": j.error.clone().unwrap_or_else(|| "job failed".into()),
        }),
        _ => json!({"type": "cancelled", "id": j.id.to_string()}),
    };
    event(id, &data)
}

fn close_event(status: JobStatus, id: u32) -> Event {
    let word = match status {
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
        _ => "cancelled",
    };
    Event::default()
        .id(id.to_string())
        .event("close")
        .data(format!("Job {word}"))
}

/// Stream a job's progress.
#[utoipa::path(get, path = "/api/jobs/{id}/stream",
    params(JobIdPath,
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "Server-Sent Events", content_type = "text/event-stream", body = crate::dto::SseEvent),
        MalformedId,
        NoSuchJob,
    ))]
pub(crate) async fn stream_job(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JobIdPath(id): JobIdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let first = state.service.watch(&tenant, id).await?;
    let last_seen: Option<u32> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let stream_state = state.clone();
    serve_events(&stream_state, &tenant.clone(), move |tx| {
        pump(state, tenant, id, first, last_seen, tx)
    })
}

/// An SSE response fed by `pump`, spawned with the sending end of its
/// channel; it holds one of `tenant`'s stream slots while it runs (429 or
/// 503 when none is free), with a keep-alive comment every 15 s.
pub(crate) fn serve_events<F, Fut>(
    state: &AppState,
    tenant: &Tenant,
    pump: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slot = state.streams.take(
        tenant,
        state.config.max_streams,
        state.config.max_streams_per_tenant,
    )?;
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let run = pump(tx);
    tokio::spawn(async move {
        run.await;
        drop(slot);
    });
    let events =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response())
}

async fn pump(
    state: AppState,
    tenant: Tenant,
    id: JobId,
    first: JobView,
    last_seen: Option<u32>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let started = Instant::now();
    let mut seen = last_seen.unwrap_or(0);
    let connected = json!({"type": "connected", "jobId": id.to_string()});
    if tx.send(Ok(event(seen, &connected))).await.is_err() {
        return;
    }
    // A job already finished, for a client that saw nothing of it: its
    // terminal event and close at once.
    if first.job.status.is_terminal() && last_seen.is_none() {
        let seen = first.job.chunks_completed;
        let _ = tx.send(Ok(terminal_event(&first, seen))).await;
        let _ = tx.send(Ok(close_event(first.job.status, seen))).await;
        return;
    }
    let mut pulse = Pulse::of(&first.job);
    let mut view = std::sync::Arc::new(first);
    let hold = state.reads.join(id);
    let mut last_progress: Option<(ProgressEvent, Instant)> = None;
    let mut changes = 0u64;
    loop {
        // Completed chunks in pages, so a stream whose client reads slowly
        // holds one page, not the whole job's output.
        while view.job.chunks_completed > seen {
            let to = view
                .job
                .chunks_completed
                .min(seen.saturating_add(CHUNK_PAGE));
            let read = hold
                .reads
                .page(seen, to, state.service.chunks_from(&tenant, id, seen, to))
                .await;
            match read {
                Ok(chunks) if !chunks.is_empty() => {
                    let before = seen;
                    for c in chunks.iter() {
                        if c.index < seen {
                            continue;
                        }
                        // Chunks translated in parallel commit in any
                        // order: events go out in chunk order, so a gap
                        // waits for its chunk.
                        if c.index > seen {
                            break;
                        }
                        seen = c.index + 1;
                        let data = json!({"type": "chunk", "index": c.index, "translation": c.translation});
                        if tx.send(Ok(event(seen, &data))).await.is_err() {
                            return;
                        }
                    }
                    if seen == before {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "reading chunks for a stream failed");
                    break;
                }
            }
        }
        let p = progress_of(&view);
        let due = match &last_progress {
            None => true,
            Some((prev, at)) => *prev != p || at.elapsed() >= HEARTBEAT,
        };
        if due {
            let data = serde_json::to_value(&p).unwrap_or_default();
            if tx.send(Ok(event(seen, &data))).await.is_err() {
                return;
            }
            last_progress = Some((p, Instant::now()));
        }
        if view.job.status.is_terminal() {
            let _ = tx.send(Ok(terminal_event(&view, seen))).await;
            let _ = tx.send(Ok(close_event(view.job.status, seen))).await;
            return;
        }
        if state.config.shutdown.is_cancelled() || started.elapsed() >= state.config.stream_max {
            let data = json!({"type": "reconnect", "id": id.to_string(),
                "message": "stream time limit reached; reconnect with Last-Event-ID"});
            let _ = tx
                .send(Ok(event(seen, &data).retry(Duration::from_millis(500))))
                .await;
            return;
        }
        let wait = last_progress
            .as_ref()
            .map(|(_, at)| HEARTBEAT.saturating_sub(at.elapsed()))
            .unwrap_or(HEARTBEAT)
            .max(Duration::from_millis(20));
        tokio::select! {
            _ = state.service.wait_for_change(id, &mut changes, wait) => {}
            _ = state.config.shutdown.cancelled() => {}
            _ = tx.closed() => return,
        }
        // With a change feed, the view as of the change this stream woke
        // for, read once for all the job's streams. Without one, the small
        // pulse each time and the whole view only when it moved.
        let read = if changes > 0 {
            hold.reads
                .view(changes, state.service.watch(&tenant, id))
                .await
                .map(Some)
        } else {
            match state.service.pulse(&tenant, id).await {
                Ok(p) if p == pulse => Ok(None),
                Ok(_) => state
                    .service
                    .watch(&tenant, id)
                    .await
                    .map(std::sync::Arc::new)
                    .map(Some),
                Err(e) => Err(e),
            }
        };
        match read {
            Ok(Some(v)) => {
                pulse = Pulse::of(&v.job);
                view = v;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "reading a job for a stream failed");
                tokio::time::sleep(HEARTBEAT).await;
            }
        }
    }
}
