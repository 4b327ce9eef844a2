//! Batches: many jobs submitted as one unit and followed as one.
//!
//! A batch is a stored list of named items, each an ordinary job that
//! carries a [`BatchRef`]. Its status and aggregate progress are derived
//! from its jobs whenever it is read, so they can never disagree with them.
//!
//! # Fairness
//!
//! Jobs wait in *turns*. A single job takes the queue's current turn (the
//! smallest turn any pending job has, 0 when none waits); item `k` of a
//! batch takes the current turn plus `k`. Jobs start in turn order, and in
//! submission order within a turn. So a job submitted after a 1,000-item
//! batch waits for at most one item of each batch already waiting (those of
//! its turn), not for the whole batch, and two batches submitted together
//! take turns item by item. A retried or requeued job goes to the end (or
//! head) of the current turn. With no batch waiting every job is in the
//! same turn, which is plain FIFO.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Tenant;
use crate::job::{BatchId, Job, JobId, JobStatus};
use crate::progress::Progress;

/// Most items one batch may have unless configured (`LOTSAWA_MAX_BATCH_ITEMS`).
pub const DEFAULT_MAX_ITEMS: u32 = 1000;

/// Longest item name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// One item of a stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The client's name for it (a file name, say).
    pub name: String,
    /// Its job.
    pub job_id: JobId,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Identifier.
    pub id: BatchId,
    /// Whose batch it is.
    pub tenant: Tenant,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// Its items, in submission order.
    pub items: Vec<BatchItem>,
}

/// Check an item name: non-empty, one line, at most [`MAX_NAME_BYTES`].
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

/// A batch's status, derived from its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// No item has started.
    Pending,
    /// Some item started and some item has not ended.
    Processing,
    /// Every item completed.
    Completed,
    /// Every item ended and at least one failed.
    Failed,
    /// Every item ended, none failed, at least one was cancelled.
    Cancelled,
}

impl BatchStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True once every item has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Items by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// Waiting to start.
    pub pending: u32,
    /// Running.
    pub processing: u32,
    /// Completed.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl StatusCounts {
    /// Count one job in `status`.
    pub fn add(&mut self, status: JobStatus) {
        match status {
            JobStatus::Pending => self.pending += 1,
            JobStatus::Processing => self.processing += 1,
            JobStatus::Completed => self.completed += 1,
            JobStatus::Failed => self.failed += 1,
            JobStatus::Cancelled => self.cancelled += 1,
        }
    }

    /// The batch status these counts make.
    pub fn status(&self) -> BatchStatus {
        let total = self.pending + self.processing + self.completed + self.failed + self.cancelled;
        let ended = self.completed + self.failed + self.cancelled;
        if total > 0 && ended == total {
            if self.failed > 0 {
                BatchStatus::Failed
            } else if self.cancelled > 0 {
                BatchStatus::Cancelled
            } else {
                BatchStatus::Completed
            }
        } else if self.processing > 0 || ended > 0 {
            BatchStatus::Processing
        } else {
            BatchStatus::Pending
        }
    }
}

/// A batch's state, derived from its items' jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Status.
    pub status: BatchStatus,
    /// Items by status.
    pub counts: StatusCounts,
    /// Aggregate progress: chunks done over chunks in all (a completed item
    /// counts whole), with an ETA and throughput from the batch's own pace
    /// since its first item started.
    pub progress: Progress,
    /// When its first item started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last item ended, once every item has.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Derive a batch's state from its items' jobs (in any order), at `now`.
pub fn summarize(jobs: &[&Job], now: DateTime<Utc>) -> Summary {
    let mut counts = StatusCounts::default();
    let (mut done, mut total) = (0u64, 0u64);
    let mut started_at: Option<DateTime<Utc>> = None;
    let mut finished_at: Option<DateTime<Utc>> = None;
    for j in jobs {
        counts.add(j.status);
        let chunks = u64::from(j.chunks_total.max(1));
        total += chunks;
        done += if j.status == JobStatus::Completed {
            chunks
        } else {
            u64::from(j.chunks_completed).min(chunks)
        };
        if let Some(t) = j.started_at {
            started_at = Some(started_at.map_or(t, |s| s.min(t)));
        }
        if let Some(t) = j.completed_at.or(j.cancelled_at) {
            finished_at = Some(finished_at.map_or(t, |f| f.max(t)));
        }
    }
    let status = counts.status();
    let finished = status == BatchStatus::Completed;
    let percent = if finished {
        100
    } else {
        (done * 100)
            .checked_div(total)
            .map_or(0, |p| p.min(100) as u8)
    };
    let elapsed_ms = started_at.map_or(0, |s| (now - s).num_milliseconds().max(0) as u64);
    let pace = (done > 0 && elapsed_ms > 0).then(|| elapsed_ms as f64 / done as f64);
    let progress = Progress {
        percent,
        estimated_time_remaining_ms: if status.is_terminal() {
            Some(0)
        } else {
            pace.map(|ms_per_chunk| ((total - done) as f64 * ms_per_chunk).round() as u64)
        },
        throughput_per_minute: pace.map(|ms| (60_000.0 / ms * 100.0).round() / 100.0),
    };
    Summary {
        status,
        counts,
        progress,
        started_at,
        finished_at: status.is_terminal().then_some(finished_at).flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobConfig, JobType};
    use rstest::rstest;

    fn job(status: JobStatus, done: u32, total: u32) -> Job {
        Job {
            id: JobId::new(),
            tenant: Tenant::default(),
            kind: JobType::Translation,
            status,
            source: String::new(),
            config: JobConfig::default(),
            result: None,
            error: None,
            chunks_completed: done,
            chunks_total: total,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            cancelled_at: None,
            run: 0,
            callback: None,
            batch: None,
            trace: None,
            review: Default::default(),
        }
    }

    use JobStatus::*;

    #[rstest]
    #[case(&[Pending, Pending], BatchStatus::Pending)]
    #[case(&[Pending, Processing], BatchStatus::Processing)]
    #[case(&[Pending, Completed], BatchStatus::Processing)]
    #[case(&[Completed, Completed], BatchStatus::Completed)]
    #[case(&[Completed, Failed, Cancelled], BatchStatus::Failed)]
    #[case(&[Completed, Cancelled], BatchStatus::Cancelled)]
    #[case(&[Failed, Processing], BatchStatus::Processing)]
    fn status_follows_the_items(#[case] items: &[JobStatus], #[case] want: BatchStatus) {
        let mut c = StatusCounts::default();
        for s in items {
            c.add(*s);
        }
        assert_eq!(c.status(), want);
    }

    #[test]
    fn progress_weighs_items_by_chunks_and_paces_the_eta() {
        let now = Utc::now();
        let mut a = job(Completed, 3, 3);
        a.started_at = Some(now - chrono::Duration::seconds(10));
        let mut b = job(Processing, 2, 5);
        b.started_at = Some(now - chrono::Duration::seconds(5));
        let c = job(Pending, 0, 2);
        let s = summarize(&[&a, &b, &c], now);
        assert_eq!(s.status, BatchStatus::Processing);
        assert_eq!(s.progress.percent, 50, "5 of 10 chunks");
        // 5 chunks in 10 s since the first start: 2 s a chunk, 5 left.
        assert_eq!(s.progress.estimated_time_remaining_ms, Some(10_000));
        assert_eq!(s.progress.throughput_per_minute, Some(30.0));
        assert_eq!(s.started_at, a.started_at);
        assert_eq!(s.finished_at, None);
    }

    #[test]
    fn an_ended_batch_has_no_time_left() {
        let now = Utc::now();
        let mut a = job(Completed, 1, 1);
        a.completed_at = Some(now);
        let mut b = job(Cancelled, 0, 4);
        b.cancelled_at = Some(now - chrono::Duration::seconds(1));
        let s = summarize(&[&a, &b], now);
        assert_eq!(s.status, BatchStatus::Cancelled);
        assert_eq!(s.progress.percent, 20);
        assert_eq!(s.progress.estimated_time_remaining_ms, Some(0));
        assert_eq!(s.finished_at, Some(now));
    }

    #[rstest]
    #[case("a.txt", true)]
    #[case("", false)]
    #[case("  ", false)]
    #[case("a\nb", false)]
    #[case(&"x".repeat(201), false)]
    fn names_are_checked(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(check_name(name).is_ok(), ok, "{name:?}");
    }
}
