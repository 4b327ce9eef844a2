//! The single writer: a queue of writes in two lanes (urgent claims,
//! checkpoints and status changes ahead of bulk job creation), run in
//! batches of one transaction each by one thread.

use super::*;

/// The writer's queue: two lanes. Job creation (which a flood of clients
/// can fill) waits in the bulk lane; claims, checkpoints and status changes
/// go in the urgent lane, and every batch takes all urgent writes first, so
/// the drain is not starved by submissions.
pub(super) struct WriteQueue {
    pub(super) lanes: Mutex<Lanes>,
    pub(super) ready: std::sync::Condvar,
}

#[derive(Default)]
pub(super) struct Lanes {
    pub(super) urgent: std::collections::VecDeque<Op>,
    pub(super) bulk: std::collections::VecDeque<Op>,
    pub(super) closed: bool,
    /// When urgent writes were last taken: while jobs are being worked on,
    /// a batch takes few bulk writes, so a flood of submissions (whose
    /// clients wait for their commit) slows down instead of the drain.
    pub(super) last_urgent: Option<std::time::Instant>,
}

/// Bulk writes a batch takes while jobs are being worked on: this many per
/// urgent write it holds, and at least [`BULK_WHILE_BUSY`].
pub(super) const BULK_PER_URGENT: usize = 1;
/// The fewest bulk writes a batch takes while jobs are being worked on.
pub(super) const BULK_WHILE_BUSY: usize = 4;
/// How long after the last urgent write the writer counts as busy.
pub(super) const BUSY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Which lane a write waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Claims, checkpoints, status changes: ahead of bulk writes.
    Urgent,
    /// New jobs and other writes clients can flood.
    Bulk,
}

pub(super) struct QueueGuard(pub(super) Arc<WriteQueue>);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        if let Ok(mut l) = self.0.lanes.lock() {
            l.closed = true;
        }
        self.0.ready.notify_all();
    }
}

impl WriteQueue {
    pub(super) fn push(&self, lane: Lane, op: Op) -> Result<(), SqliteError> {
        let mut l = self.lanes.lock().map_err(|_| SqliteError::Closed)?;
        if l.closed {
            return Err(SqliteError::Closed);
        }
        match lane {
            Lane::Urgent => l.urgent.push_back(op),
            Lane::Bulk => l.bulk.push_back(op),
        }
        drop(l);
        self.ready.notify_one();
        Ok(())
    }

    /// The next batch: every urgent write (up to the batch size), then bulk
    /// writes; empty once closed and drained.
    pub(super) fn next_batch(&self) -> Vec<Op> {
        let Ok(mut l) = self.lanes.lock() else {
            return Vec::new();
        };
        while l.urgent.is_empty() && l.bulk.is_empty() && !l.closed {
            l = match self.ready.wait(l) {
                Ok(l) => l,
                Err(_) => return Vec::new(),
            };
        }
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match l.urgent.pop_front() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        let now = std::time::Instant::now();
        if !batch.is_empty() {
            l.last_urgent = Some(now);
        }
        let busy = l
            .last_urgent
            .is_some_and(|t| now.duration_since(t) < BUSY_WINDOW);
        let bulk = if busy {
            (batch.len() * BULK_PER_URGENT).max(BULK_WHILE_BUSY)
        } else {
            MAX_BATCH
        };
        let room = MAX_BATCH - batch.len();
        for _ in 0..bulk.min(room) {
            match l.bulk.pop_front() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        batch
    }
}

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 512;

pub(super) fn writer_loop(conn: Connection, queue: Arc<WriteQueue>) {
    loop {
        let batch = queue.next_batch();
        if batch.is_empty() {
            return;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for op in batch {
                // Run nothing; tell every caller the batch could not start.
                let (_, reply) = op(Err(msg.clone()));
                reply(None);
            }
            continue;
        }
        // A write runs inside its own savepoint, so a failing write leaves
        // nothing behind and the rest of the batch commits. If the savepoint
        // itself cannot be set, undone or released, the batch is abandoned:
        // nothing of it is committed and every caller hears why.
        let mut abandoned: Option<String> = None;
        for op in batch {
            if let Some(why) = &abandoned {
                let (_, reply) = op(Err(why.clone()));
                replies.push(reply);
                continue;
            }
            if let Err(e) = run(&conn, "SAVEPOINT op") {
                abandoned = Some(format!("savepoint: {e}"));
                let (_, reply) = op(Err(format!("savepoint: {e}")));
                replies.push(reply);
                continue;
            }
            let (ok, reply) = op(Ok(&conn));
            replies.push(reply);
            let undo = if ok {
                Ok(())
            } else {
                run(&conn, "ROLLBACK TO op")
            };
            if let Err(e) = undo.and_then(|()| run(&conn, "RELEASE op")) {
                abandoned = Some(format!("savepoint: {e}"));
            }
        }
        let commit = match abandoned {
            Some(why) => Some(why),
            None => run(&conn, "COMMIT").err().map(|e| e.to_string()),
        };
        if commit.is_some()
            && !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back an abandoned batch failed");
        }
        for r in replies {
            r(commit.clone());
        }
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    fn op(tag: &'static str, log: &Arc<Mutex<Vec<&'static str>>>) -> Op {
        let log = log.clone();
        Box::new(move |_| {
            log.lock().expect("log").push(tag);
            (true, Box::new(|_| {}))
        })
    }

    fn run(batch: Vec<Op>) {
        for o in batch {
            let (_, reply) = o(Err(String::new()));
            reply(None);
        }
    }

    #[test]
    fn a_flood_of_creates_waits_behind_claims_while_jobs_are_worked_on() {
        let q = WriteQueue {
            lanes: Mutex::new(Lanes::default()),
            ready: std::sync::Condvar::new(),
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..2000 {
            q.push(Lane::Bulk, op("create", &log)).expect("push");
        }
        // Idle writer: creates go in full batches.
        run(q.next_batch());
        assert_eq!(log.lock().expect("log").len(), MAX_BATCH);
        log.lock().expect("log").clear();
        // Work arrives: urgent writes first, and a few creates beside them.
        for _ in 0..10 {
            q.push(Lane::Urgent, op("claim", &log)).expect("push");
        }
        run(q.next_batch());
        let taken = log.lock().expect("log").clone();
        assert_eq!(&taken[..10], &["claim"; 10]);
        assert_eq!(
            taken.len(),
            10 + (10 * BULK_PER_URGENT).max(BULK_WHILE_BUSY)
        );
        log.lock().expect("log").clear();
        // Still busy (within the window) with no urgent write: the floor.
        run(q.next_batch());
        assert_eq!(log.lock().expect("log").len(), BULK_WHILE_BUSY);
        log.lock().expect("log").clear();
        // The window passes: full batches again.
        std::thread::sleep(BUSY_WINDOW + std::time::Duration::from_millis(5));
        run(q.next_batch());
        assert_eq!(log.lock().expect("log").len(), MAX_BATCH);
    }
}
