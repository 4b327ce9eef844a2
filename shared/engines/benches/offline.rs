//! Offline gloss throughput (criterion):
//! `cargo bench -p lotsawa-engines --bench offline`.
//!
//! ~1 MB of Tibetan made of the built-in glossary's own terms, with no job
//! glossary and with a hostile one (see `support/texts.rs`). The gloss is
//! linear in the text: both figures are bytes per second.

// criterion's macros make undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lotsawa_core::Glossary;
use lotsawa_core::glossary::gloss;

#[path = "support/texts.rs"]
mod texts;

fn offline(c: &mut Criterion) {
    let base = lotsawa_engines::builtin_glossary();
    let text = texts::glossary_text(1 << 20);
    let empty = Glossary::default();
    let job = texts::hostile_glossary();
    let hostile = texts::hostile_text(1 << 20);

    let mut g = c.benchmark_group("offline gloss");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("built-in glossary", |b| {
        b.iter(|| gloss(std::hint::black_box(&text), &empty, &base).coverage);
    });
    g.throughput(Throughput::Bytes(hostile.len() as u64));
    g.bench_function(
        format!("hostile job glossary of {} terms", job.len()),
        |b| {
            b.iter(|| gloss(std::hint::black_box(&hostile), &job, &base).coverage);
        },
    );
    g.finish();
}

criterion_group!(benches, offline);
criterion_main!(benches);
