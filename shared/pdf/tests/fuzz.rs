//! Fuzz target for the PDF reader: real PDFs (Chromium and LibreOffice,
//! both fonts) with bytes overwritten, inserted and cut where the fuzzer
//! says. Every input is read to text or refused with a reason; none may
//! panic, hang past its budget or loop. `cargo test` runs it for
//! `LOTSAWA_FUZZ_SECS` seconds (default 8) and prints its executions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lotsawa_apitests::pdfgen::{self, Doc, Font, Producer};
use lotsawa_pdf::{Options, extract};

fn budget() -> Duration {
    let secs = std::env::var("LOTSAWA_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

/// A seed changed by the fuzz bytes: each 4-byte group is one edit
/// (position, byte, kind: overwrite, insert or cut the tail).
fn mutate(seed: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for e in edits.chunks(4) {
        if out.is_empty() || e.len() < 4 {
            break;
        }
        let at = (usize::from(e[0]) << 8 | usize::from(e[1])) * out.len() / 65_536;
        match e[3] % 8 {
            0..=5 => out[at] = e[2],
            6 => out.insert(at, e[2]),
            _ => out.truncate(at.max(8)),
        }
    }
    out
}

#[test]
fn damaged_pdfs_are_read_or_refused_never_a_panic() {
    let seeds = [
        pdfgen::pdf(Doc::Mixed, Font::Noto, Producer::LibreOffice),
        pdfgen::pdf(Doc::Mixed, Font::TibetanMachine, Producer::Chromium),
    ];
    static RUNS: AtomicU64 = AtomicU64::new(0);
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    let options = Options {
        budget: Duration::from_secs(5),
        ..Options::default()
    };
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(64)
        .for_each(|bytes: &[u8]| {
            RUNS.fetch_add(1, Ordering::Relaxed);
            let seed = &seeds[usize::from(bytes.first().copied().unwrap_or(0) % 2)];
            let input = mutate(seed, bytes.get(1..).unwrap_or_default());
            let start = Instant::now();
            if extract(&input, &options).is_err() {
                REFUSED.fetch_add(1, Ordering::Relaxed);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "took {:?}",
                start.elapsed()
            );
        });
    println!(
        "pdf fuzz: {} inputs, {} refused",
        RUNS.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed)
    );
    assert!(RUNS.load(Ordering::Relaxed) > 0);
}
