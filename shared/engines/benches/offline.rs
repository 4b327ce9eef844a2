//! Offline gloss throughput: `cargo bench -p lotsawa-engines --bench offline`.
//! Prints the median of 7 runs over ~1 MB of Tibetan.

use std::time::Instant;

use lotsawa_core::Glossary;
use lotsawa_core::glossary::gloss;

fn main() {
    let base = lotsawa_engines::builtin_glossary();
    let sample: String = lotsawa_engines::BUILTIN_GLOSSARY
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next().map(|bo| format!("{bo}་")))
        .collect::<String>()
        + "། །བསྒྲུབས་པ་མེད་ཀྱང་།\n";
    let text = sample.repeat((1 << 20) / sample.len() + 1);
    let empty = Glossary::default();
    let mut times = Vec::new();
    let mut coverage = None;
    for _ in 0..7 {
        let t = Instant::now();
        let g = gloss(&text, &empty, &base);
        times.push(t.elapsed().as_secs_f64());
        coverage = g.coverage;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "offline gloss: {:.2} MB in {:.3} s median of 7 = {:.2} MB/s (coverage {:.3})",
        text.len() as f64 / 1e6,
        median,
        text.len() as f64 / 1e6 / median,
        coverage.unwrap_or(0.0)
    );
}
