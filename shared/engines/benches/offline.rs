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

    // A hostile job glossary: the most terms a job may send, each of the
    // longest allowed length and all prefixes of one another over a text
    // made of their first syllable, so every position tries every length.
    let mut job = Glossary::default();
    let consonants: Vec<String> = ('\u{0F41}'..='\u{0F5F}').map(String::from).collect();
    let max = lotsawa_core::glossary::MAX_TERM_SYLLABLES;
    for i in 0..lotsawa_core::glossary::MAX_JOB_TERMS {
        let n = i % (max - 1);
        let mut term: Vec<&str> = vec!["ཀ"; n];
        let k = i / (max - 1);
        term.push(&consonants[k % consonants.len()]);
        term.push(&consonants[(k / consonants.len()) % consonants.len()]);
        job.insert(&term.join("་"), "x");
    }
    let hostile = "ཀ་".repeat((1 << 20) / "ཀ་".len());
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let _ = gloss(&hostile, &job, &base);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "offline gloss, hostile job glossary ({} terms): {:.2} MB in {:.3} s median of 7 = {:.2} MB/s",
        job.len(),
        hostile.len() as f64 / 1e6,
        median,
        hostile.len() as f64 / 1e6 / median
    );
}
