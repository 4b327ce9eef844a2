//! The text paths without any queue: the segmenter, the EWTS
//! transliterator, and the offline gloss with the built-in glossary and
//! with a hostile job glossary, in MB/s. The texts and glossaries are the
//! ones the engines' criterion bench uses, so the two agree on inputs.

use std::time::Instant;

use crate::args::Sizes;
use crate::report::Figures;

#[path = "../../../shared/engines/benches/support/texts.rs"]
mod texts;

/// The figures of this scenario, added to `figures`.
pub(crate) fn run(sizes: Sizes, figures: &mut Figures) {
    for (name, rate) in text_rates(sizes.text_bytes) {
        figures.add(name, "MB/s", rate);
    }
}

/// MB/s of `f` over `text`, median of `runs`.
fn throughput(text: &str, runs: usize, mut f: impl FnMut(&str) -> usize) -> f64 {
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f(std::hint::black_box(text)));
            text.len() as f64 / 1e6 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The text paths, MB/s: segmenter, transliterator, offline gloss with the
/// built-in glossary and with a hostile job glossary.
fn text_rates(bytes: usize) -> Vec<(&'static str, f64)> {
    let golden = include_str!("../../../shared/core/tests/data/ewts_golden.tsv");
    let lines: String = golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t').map(|(bo, _)| format!("{bo} །\n")))
        .collect();
    let tibetan = lines.repeat(bytes / lines.len() + 1);
    let base = lotsawa_engines::builtin_glossary();
    let empty = lotsawa_core::Glossary::default();
    let glossed = texts::glossary_text(bytes);
    let job = texts::hostile_glossary();
    let hostile = texts::hostile_text(bytes);
    vec![
        (
            "segmenter (chunks of 1200)",
            throughput(&tibetan, 5, |t| {
                lotsawa_core::segment::segment(t, 1200).len()
            }),
        ),
        (
            "transliterator (EWTS)",
            throughput(&tibetan, 5, |t| lotsawa_core::ewts::to_ewts(t).len()),
        ),
        (
            "offline gloss, built-in glossary",
            throughput(&glossed, 5, |t| {
                lotsawa_core::glossary::gloss(t, &empty, &base).text.len()
            }),
        ),
        (
            "offline gloss, hostile job glossary of 10,000 terms",
            throughput(&hostile, 3, |t| {
                lotsawa_core::glossary::gloss(t, &job, &base).text.len()
            }),
        ),
    ]
}
