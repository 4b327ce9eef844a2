//! The command line: which sizes a run uses (`--smoke` or the full ones,
//! with `--streams` and `--runs` overriding them), which parts run
//! (`--only`), the durability the backends open their store with, where the
//! JSON report goes, and the hidden `--serve-fanout` mode in which this
//! binary is the fan-out scenario's child server. Parsed by hand, leniently
//! where the harness always was (`--streams` keeps its default on a bad
//! value), and exiting with status 2 and a one-line message otherwise.

use std::path::PathBuf;

/// Sizes of one run of the harness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) enqueue: usize,
    pub(crate) drain_jobs: usize,
    pub(crate) multi_jobs: usize,
    pub(crate) multi_chunks: usize,
    pub(crate) http_secs: f64,
    pub(crate) pickup_secs: f64,
    pub(crate) fanout_streams: usize,
    pub(crate) fanout_jobs: usize,
    pub(crate) fanout_secs: f64,
    pub(crate) text_bytes: usize,
    pub(crate) scale: &'static [usize],
    pub(crate) scale_drain: usize,
    /// Chunks of the provider scenario's volume (one job).
    pub(crate) provider_chunks: usize,
    /// Chunks of each smaller job submitted beside the volume.
    pub(crate) provider_small: &'static [usize],
    /// The fake provider's requests per minute.
    pub(crate) provider_rpm: u32,
    /// The fake provider's answer latency, uniform in this range (ms).
    pub(crate) provider_latency_ms: (u64, u64),
    pub(crate) runs: usize,
}

/// The sizes of a full run (without `--smoke`).
const FULL: Sizes = Sizes {
    enqueue: 20_000,
    drain_jobs: 20_000,
    multi_jobs: 1_000,
    multi_chunks: 20,
    http_secs: 3.0,
    pickup_secs: 2.0,
    fanout_streams: 10_000,
    fanout_jobs: 50,
    fanout_secs: 5.0,
    text_bytes: 4 << 20,
    scale: &[1_000, 10_000, 100_000, 1_000_000],
    scale_drain: 5_000,
    // Real providers answer in 0.5–3 s at a few hundred RPM; both are scaled
    // five-fold faster here (20–100 ms at 6,000 RPM: about 6 calls in flight
    // use the whole rate, 7 at 1,200 RPM and 100–600 ms), so the three
    // variants of a 2,000-chunk volume fit in a few minutes: the bound is
    // 2,000 ÷ 6,000 RPM = 20 s, and a volume one chunk at a time about 2 min.
    provider_chunks: 2_000,
    provider_small: &[10, 20, 30, 10, 20, 30, 10, 20, 30],
    provider_rpm: 6_000,
    provider_latency_ms: (20, 100),
    runs: 3,
};

/// The sizes of `--smoke`: seconds, for the test command.
const SMOKE: Sizes = Sizes {
    enqueue: 200,
    drain_jobs: 200,
    multi_jobs: 10,
    multi_chunks: 5,
    http_secs: 0.3,
    pickup_secs: 0.3,
    fanout_streams: 50,
    fanout_jobs: 5,
    fanout_secs: 0.5,
    text_bytes: 64 << 10,
    scale: &[100, 1_000],
    scale_drain: 50,
    provider_chunks: 40,
    provider_small: &[3, 5, 3, 5],
    provider_rpm: 60_000,
    provider_latency_ms: (1, 5),
    runs: 1,
};

/// The durability the harness runs with (`--durability full|process`).
static DURABILITY: std::sync::OnceLock<lotsawa_local::Durability> = std::sync::OnceLock::new();

/// The durability chosen with `--durability` (the store's default, full,
/// when not given).
pub(crate) fn durability() -> lotsawa_local::Durability {
    DURABILITY.get().copied().unwrap_or_default()
}

/// What this process is asked to do.
pub(crate) enum Mode {
    /// Be the fan-out scenario's child server (`--serve-fanout PACE_MS JOBS
    /// STREAMS`, each 1 when missing or not a number).
    ServeFanout {
        pace_ms: u64,
        jobs: usize,
        streams: usize,
    },
    /// Run the harness.
    Bench(Options),
}

/// A harness run as the command line asks for it.
pub(crate) struct Options {
    /// `--smoke`: the small sizes, and `"mode": "smoke"` in the report.
    pub(crate) smoke: bool,
    /// The sizes, after `--streams` and `--runs`.
    pub(crate) sizes: Sizes,
    /// `--out FILE`: where the JSON report is written.
    pub(crate) out: Option<PathBuf>,
    /// `--only PART,...`: the parts to run (all when `None`).
    only: Option<Vec<String>>,
}

impl Options {
    /// Whether the part named `part` runs.
    pub(crate) fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    }
}

/// Parse `args` (the program name first); sets the durability as a side
/// effect, since the backends read it wherever they are opened.
pub(crate) fn parse(args: &[String]) -> Mode {
    // The child server takes its own positional arguments and nothing
    // else, so it is recognised before any other parsing.
    if args.get(1).map(String::as_str) == Some("--serve-fanout") {
        let n = |i: usize| -> u64 { args.get(i).and_then(|v| v.parse().ok()).unwrap_or(1) };
        return Mode::ServeFanout {
            pace_ms: n(2),
            jobs: n(3) as usize,
            streams: n(4) as usize,
        };
    }
    // `--smoke` picks the base sizes wherever it appears, so `--streams`
    // and `--runs` override them in any order.
    let smoke = args.iter().any(|a| a == "--smoke");
    let mut sizes = if smoke { SMOKE } else { FULL };
    let mut out: Option<PathBuf> = None;
    let mut only: Option<Vec<String>> = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => {}
            "--streams" => {
                i += 1;
                sizes.fanout_streams = args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(sizes.fanout_streams);
            }
            "--only" => {
                i += 1;
                only = args
                    .get(i)
                    .map(|v| v.split(',').map(str::to_owned).collect());
            }
            "--durability" => {
                i += 1;
                let d = args.get(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("error: --durability takes full or process");
                    std::process::exit(2)
                });
                let _ = DURABILITY.set(d);
            }
            "--out" => {
                i += 1;
                out = args.get(i).map(PathBuf::from);
            }
            "--runs" => {
                i += 1;
                sizes.runs = args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("error: --runs takes a positive number");
                        std::process::exit(2)
                    });
            }
            other => {
                eprintln!(
                    "error: unknown argument '{other}' (use --smoke, --runs N, --out FILE, --durability full|process, --only PART,... with parts enqueue, drain, http, load, fanout, pickup, text, transliterate, scale, provider, nodes)"
                );
                std::process::exit(2);
            }
        }
        i += 1;
    }
    Mode::Bench(Options {
        smoke,
        sizes,
        out,
        only,
    })
}
