//! Change feed for watchers: one counter per watched job.
//!
//! A stream waits on its own job's counter only, so a commit wakes the
//! streams of that job and no other (a process-wide channel woke every
//! stream for every change: ten thousand streams on a busy server meant
//! millions of wake-ups a second). A job's counter exists while someone
//! watches it and for a while after, so a watcher that reads between two
//! waits sees a change made meanwhile by the count it kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lotsawa_core::JobId;
use tokio::sync::watch;

/// How long a counter nobody waits on is kept.
const KEEP: Duration = Duration::from_secs(30);

struct Counter {
    tx: watch::Sender<u64>,
    touched: Instant,
}

/// Per-job change counters.
#[derive(Default)]
pub(crate) struct Changes {
    jobs: Mutex<HashMap<JobId, Counter>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    /// The job changed: wake its watchers. Costs a map lookup when nobody
    /// watches it.
    pub(crate) fn publish(&self, id: JobId) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = jobs.get(&id) {
            c.tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Anything may have changed (announcements were lost): wake every
    /// watcher, which reads its job again.
    pub(crate) fn publish_all(&self) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for c in jobs.values() {
            c.tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Return at once when the job changed since the count `seen`, else
    /// when it changes or after `max_wait`; `seen` becomes the count then.
    pub(crate) async fn wait(&self, id: JobId, seen: &mut u64, max_wait: Duration) {
        let mut rx = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let c = jobs.entry(id).or_insert_with(|| Counter {
                tx: watch::channel(*seen).0,
                touched: Instant::now(),
            });
            c.touched = Instant::now();
            c.tx.subscribe()
        };
        let now = *rx.borrow_and_update();
        if now != *seen {
            *seen = now;
            return;
        }
        let _ = tokio::time::timeout(max_wait, rx.changed()).await;
        *seen = *rx.borrow();
    }

    /// Drop counters nobody has waited on for a while.
    pub(crate) fn sweep(&self) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|_, c| c.tx.receiver_count() > 0 || c.touched.elapsed() < KEEP);
    }

    /// Sweep every 10 s until `draining`.
    pub(crate) async fn sweep_loop(
        self: std::sync::Arc<Self>,
        draining: tokio_util::sync::CancellationToken,
    ) {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = every.tick() => self.sweep(),
                _ = draining.cancelled() => return,
            }
        }
    }

    /// Counters held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.jobs.lock().map(|j| j.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_between_two_waits_is_not_missed() {
        let c = Changes::default();
        let id = JobId::new();
        let mut seen = 0;
        // First wait registers the counter and times out.
        c.wait(id, &mut seen, Duration::from_millis(5)).await;
        assert_eq!(seen, 0);
        // A change while the watcher is away (reading the store).
        c.publish(id);
        let t = Instant::now();
        c.wait(id, &mut seen, Duration::from_secs(10)).await;
        assert!(t.elapsed() < Duration::from_secs(5), "returned at once");
        assert_eq!(seen, 1);
    }

    #[tokio::test]
    async fn a_change_wakes_only_its_jobs_watchers() {
        let c = std::sync::Arc::new(Changes::default());
        let (a, b) = (JobId::new(), JobId::new());
        let wa = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut seen = 0;
                c.wait(a, &mut seen, Duration::from_secs(10)).await;
                seen
            })
        };
        let wb = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut seen = 0;
                let t = Instant::now();
                c.wait(b, &mut seen, Duration::from_millis(300)).await;
                (seen, t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.publish(a);
        assert_eq!(wa.await.expect("a"), 1);
        let (seen_b, waited) = wb.await.expect("b");
        assert_eq!(seen_b, 0, "b's watcher saw no change");
        assert!(waited >= Duration::from_millis(300), "b waited it out");
    }

    #[tokio::test]
    async fn counters_nobody_watches_are_swept_and_unwatched_jobs_cost_nothing() {
        let c = Changes::default();
        c.publish(JobId::new());
        assert_eq!(c.len(), 0, "publishing to an unwatched job keeps nothing");
        let id = JobId::new();
        let mut seen = 0;
        c.wait(id, &mut seen, Duration::from_millis(1)).await;
        assert_eq!(c.len(), 1);
        c.sweep();
        assert_eq!(c.len(), 1, "kept for a while after the last wait");
        if let Ok(mut j) = c.jobs.lock()
            && let Some(counter) = j.get_mut(&id)
        {
            counter.touched = Instant::now() - KEEP - Duration::from_secs(1);
        }
        c.sweep();
        assert_eq!(c.len(), 0);
    }
}
