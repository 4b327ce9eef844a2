//! Progress, ETA and throughput, derived from the chunk ledger.

use serde::Serialize;

/// How many recent chunks the moving average covers.
pub const WINDOW: usize = 10;

/// Timing of one chunk completed in the current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkTiming {
    /// Source length in characters.
    pub chars: u64,
    /// Time the successful attempt took, in milliseconds.
    pub duration_ms: u64,
}

/// A job's progress as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// 0..=100.
    pub percent: u8,
    /// Milliseconds left, from the size-weighted moving average of recent
    /// chunk durations; `None` until a chunk of this run has completed.
    pub estimated_time_remaining_ms: Option<u64>,
    /// Chunks per minute over the recent window; `None` until known.
    pub throughput_per_minute: Option<f64>,
}

impl Progress {
    /// Derive progress from the ledger.
    ///
    /// `recent` holds the chunks completed in the current run, oldest first;
    /// only the last [`WINDOW`] count. Chunks finished in an earlier run count
    /// towards `percent` but not towards the rates, so a retry starts its
    /// estimate afresh.
    pub fn derive(
        completed: u32,
        total: u32,
        remaining_chars: u64,
        finished: bool,
        recent: &[ChunkTiming],
    ) -> Self {
        let percent = if finished {
            100
        } else if total == 0 {
            0
        } else {
            ((u64::from(completed) * 100) / u64::from(total)).min(100) as u8
        };
        let window = &recent[recent.len().saturating_sub(WINDOW)..];
        let ms: u64 = window.iter().map(|t| t.duration_ms).sum();
        let chars: u64 = window.iter().map(|t| t.chars).sum();
        let throughput = (!window.is_empty()).then(|| {
            let per_minute = window.len() as f64 * 60_000.0 / (ms.max(1) as f64);
            (per_minute * 100.0).round() / 100.0
        });
        let eta = if finished {
            Some(0)
        } else if window.is_empty() {
            None
        } else if chars == 0 {
            // Only empty chunks so far: fall back to per-chunk timing.
            let left = u64::from(total.saturating_sub(completed));
            Some(left * ms / window.len() as u64)
        } else {
            Some(((u128::from(remaining_chars) * u128::from(ms)) / u128::from(chars)) as u64)
        };
        Self {
            percent,
            estimated_time_remaining_ms: eta,
            throughput_per_minute: throughput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(chars: u64, duration_ms: u64) -> ChunkTiming {
        ChunkTiming { chars, duration_ms }
    }

    #[test]
    fn nothing_known_yet() {
        let p = Progress::derive(0, 4, 400, false, &[]);
        assert_eq!(p.percent, 0);
        assert_eq!(p.estimated_time_remaining_ms, None);
        assert_eq!(p.throughput_per_minute, None);
    }

    #[test]
    fn eta_is_weighted_by_chunk_size() {
        // 100 chars in 1 s and 300 chars in 3 s: 10 ms per char.
        let p = Progress::derive(2, 4, 500, false, &[t(100, 1000), t(300, 3000)]);
        assert_eq!(p.percent, 50);
        assert_eq!(p.estimated_time_remaining_ms, Some(5000));
        // Two chunks in 4 s: 30 chunks a minute.
        assert_eq!(p.throughput_per_minute, Some(30.0));
    }

    #[test]
    fn only_the_recent_window_counts() {
        let mut recent = vec![t(100, 100_000); 5];
        recent.extend(vec![t(100, 1000); WINDOW]);
        let p = Progress::derive(15, 20, 500, false, &recent);
        assert_eq!(p.estimated_time_remaining_ms, Some(5000));
    }

    #[test]
    fn finished_jobs_have_no_time_left() {
        let p = Progress::derive(3, 3, 0, true, &[t(10, 10)]);
        assert_eq!(p.percent, 100);
        assert_eq!(p.estimated_time_remaining_ms, Some(0));
    }
}
