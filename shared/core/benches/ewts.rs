//! Text throughput of the domain crate (criterion):
//! `cargo bench -p lotsawa-core --bench ewts`.
//!
//! The segmenter and the EWTS transliterator over ~1 MB of Tibetan built
//! from the golden file; criterion reports bytes per second.

// criterion's macros make undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn sample() -> String {
    let golden = include_str!("../tests/data/ewts_golden.tsv");
    let lines: String = golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t').map(|(bo, _)| format!("{bo} །\n")))
        .collect();
    lines.repeat((1 << 20) / lines.len() + 1)
}

fn text(c: &mut Criterion) {
    let text = sample();
    let mut g = c.benchmark_group("text");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(20);
    g.bench_function("segment, chunks of 1200", |b| {
        b.iter(|| lotsawa_core::segment::segment(std::hint::black_box(&text), 1200).len());
    });
    g.bench_function("ewts", |b| {
        b.iter(|| lotsawa_core::ewts::to_ewts(std::hint::black_box(&text)).len());
    });
    g.finish();
}

criterion_group!(benches, text);
criterion_main!(benches);
