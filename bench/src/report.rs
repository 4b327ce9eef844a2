//! The figures and their report: each figure collected across runs under
//! its name (in the order first added, which is the table's order), its
//! median, min and max, the percentiles the scenarios summarise their
//! samples with, the table printed on stdout, and the JSON report written
//! with `--out`. Shared so every scenario rounds and reports alike.

use std::path::Path;

use serde_json::{Value, json};

use crate::args::{Options, durability};

/// One figure over repeated runs.
struct Figure {
    name: String,
    unit: &'static str,
    runs: Vec<f64>,
}

impl Figure {
    fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn json(&self) -> Value {
        let min = self.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!({"name": self.name, "unit": self.unit, "median": round(self.median()),
               "min": round(min), "max": round(max), "runs": self.runs.iter().map(|r| round(*r)).collect::<Vec<_>>()})
    }
}

fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Every figure of a harness run, in the order first added.
#[derive(Default)]
pub(crate) struct Figures(Vec<Figure>);

impl Figures {
    /// One run's value of the figure `name` (a new figure the first time).
    pub(crate) fn add(&mut self, name: impl Into<String>, unit: &'static str, value: f64) {
        let name = name.into();
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.runs.push(value),
            None => self.0.push(Figure {
                name,
                unit,
                runs: vec![value],
            }),
        }
    }

    /// The table on stdout: median, min and max of each figure.
    pub(crate) fn print(&self) {
        println!(
            "{:<70} {:>12} {:>12} {:>12}  unit",
            "figure", "median", "min", "max"
        );
        for f in &self.0 {
            let j = f.json();
            println!(
                "{:<70} {:>12} {:>12} {:>12}  {}",
                f.name, j["median"], j["min"], j["max"], f.unit
            );
        }
    }

    /// The JSON report: the figures and what they were measured on.
    pub(crate) fn report(&self, opts: &Options) -> Value {
        json!({
            "harness": "lotsawa-bench",
            "mode": if opts.smoke { "smoke" } else { "full" },
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "durability": match durability() {
                lotsawa_local::Durability::Full => "full: SQLite WAL, synchronous=FULL, every acknowledged commit fsynced (group commit); survives a power loss",
                lotsawa_local::Durability::Process => "process: SQLite WAL, synchronous=NORMAL, every acknowledged commit in the WAL file; survives a process crash, not a power loss",
            },
            "engine": "echo",
            "provider": opts.wants("provider").then(|| format!(
                "provider part: the openai engine against a fake OpenAI-compatible provider on loopback enforcing {} RPM, {} TPM and {} calls at once (429 with Retry-After: 1 beyond them), answering in {}–{} ms",
                opts.sizes.provider_rpm,
                u64::from(opts.sizes.provider_rpm) * crate::scenarios::provider::TOKENS_PER_REQUEST,
                crate::scenarios::provider::CONCURRENT,
                opts.sizes.provider_latency_ms.0,
                opts.sizes.provider_latency_ms.1,
            )),
            "runs": opts.sizes.runs,
            "figures": self.0.iter().map(Figure::json).collect::<Vec<_>>(),
        })
    }
}

/// Write `report` to `path`, or exit with status 1 saying why not.
pub(crate) fn write(path: &Path, report: &Value) {
    std::fs::write(
        path,
        serde_json::to_string_pretty(report).expect("json") + "\n",
    )
    .unwrap_or_else(|e| {
        eprintln!("error: cannot write {}: {e}", path.display());
        std::process::exit(1)
    });
    eprintln!("results written to {}", path.display());
}
