//! `lotsawa-bench`: the queue's figures on this machine, reproducibly.
//!
//! ```sh
//! cargo run --release -p lotsawa-bench -- --out bench/results.json   # full (a few minutes)
//! cargo run -p lotsawa-bench -- --smoke                               # seconds; in the test command
//! ```
//!
//! Everything runs in one process on loopback with the echo engine and the
//! embedded SQLite store in its durable setting (WAL, `synchronous=FULL`,
//! one fsync per group commit), and beside it a throwaway PostgreSQL
//! server with one and three servers on one database (`nodes`); the provider part uses the OpenAI engine
//! against a fake provider on loopback that enforces its rate limits. Each figure is measured `--runs` times
//! (default 3) and reported as median, min and max.
//!
//! `main` parses the command line ([`args`]) and runs the scenarios
//! ([`scenarios`], one module each) in the report's order, `--runs` times;
//! [`report`] collects and prints the figures, [`fixture`] builds the
//! deployments the scenarios measure.

mod args;
mod fixture;
mod report;
mod scenarios;

use args::Mode;
use report::Figures;
use scenarios::{
    drain, enqueue, fanout, http, load, nodes, pickup, provider, scale, text, transliterate,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = match args::parse(&args) {
        Mode::ServeFanout {
            pace_ms,
            jobs,
            streams,
        } => {
            fanout::serve_fanout(pace_ms, jobs, streams).await;
            return;
        }
        Mode::Bench(opts) => opts,
    };
    let sizes = opts.sizes;
    let mut figures = Figures::default();
    for run in 0..sizes.runs {
        eprintln!("run {}/{}", run + 1, sizes.runs);
        if opts.wants("enqueue") {
            enqueue::run(sizes, &mut figures).await;
        }
        if opts.wants("drain") {
            drain::run(sizes, &mut figures).await;
        }
        if opts.wants("http") {
            http::run(sizes, &mut figures).await;
        }
        if opts.wants("load") {
            load::run(sizes, &mut figures).await;
        }
        if opts.wants("fanout") {
            fanout::run(sizes, &mut figures).await;
        }
        // Once: the largest store takes a minute to fill.
        if opts.wants("scale") && run == 0 {
            scale::run(sizes, &mut figures).await;
        }
        if opts.wants("text") {
            text::run(sizes, &mut figures);
        }
        if opts.wants("transliterate") {
            transliterate::run(sizes, &mut figures);
        }
        if opts.wants("pickup") {
            pickup::run(sizes, &mut figures).await;
        }
        if opts.wants("provider") {
            provider::run(sizes, &mut figures).await;
        }
        if opts.wants("nodes") {
            nodes::run(sizes, &mut figures).await;
        }
    }
    figures.print();
    if let Some(path) = &opts.out {
        report::write(path, &figures.report(&opts));
    }
}
