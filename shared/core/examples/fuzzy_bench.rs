//! Figures for the fuzzy translation memory:
//! `cargo run -p lotsawa-core --release --example fuzzy_bench`.
//!
//! 1. A [`FuzzyIndex`] of 100,000 synthetic Tibetan segments (random
//!    sequences of 8–40 syllables drawn, with their frequencies, from the
//!    Heart Sutra and the Derge excerpt), its insert time, and the latency of
//!    1,000 lookups (k = 3) of held-out queries: half near-duplicates of
//!    indexed segments (1–3 syllables edited), half fresh; a sample is
//!    checked against a brute-force [`rank`] over every segment.
//! 2. For each real corpus, leave-one-out: the share of its chunks that find
//!    a match of at least [`USEFUL`] among the other chunks, and the mean
//!    similarity of the best match.

use std::time::Instant;

use lotsawa_core::fuzzy::{Entry, FuzzyIndex, USEFUL, rank};
use lotsawa_core::job::ChunkSize;
use lotsawa_core::segment::segment;

const HEART: &str = include_str!("../../../eval/heart-sutra.tsv");
const DERGE: &str = include_str!("../tests/data/derge-sutra-excerpt.txt");
const SEGMENTS: usize = 100_000;
const QUERIES: usize = 1_000;
/// Queries also ranked by brute force (each scores all 100,000 segments).
const CHECKED: usize = 40;

/// xorshift64*: deterministic and good enough to draw syllables.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn heart_lines() -> Vec<&'static str> {
    HEART
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Syllables of a text, one per occurrence, Tibetan letters only.
fn syllables(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || ('\u{0F01}'..='\u{0F14}').contains(&c))
        .filter(|s| !s.is_empty() && s.chars().all(|c| ('\u{0F40}'..='\u{0FBC}').contains(&c)))
        .collect()
}

/// A segment from syllables: tsheg-joined, a shad now and then, a final shad.
fn render(syls: &[&str], rng: &mut Rng) -> String {
    let mut s = String::new();
    for (i, syl) in syls.iter().enumerate() {
        s.push_str(syl);
        if i + 1 == syls.len() {
            s.push('།');
        } else if rng.below(10) == 0 {
            s.push_str("། །");
        } else {
            s.push('་');
        }
    }
    s
}

fn random_syllables<'a>(pool: &[&'a str], rng: &mut Rng) -> Vec<&'a str> {
    let n = 8 + rng.below(33);
    (0..n).map(|_| pool[rng.below(pool.len())]).collect()
}

/// 1–3 syllables substituted, deleted or inserted.
fn edit<'a>(syls: &[&'a str], pool: &[&'a str], rng: &mut Rng) -> Vec<&'a str> {
    let mut out = syls.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len());
        match rng.below(3) {
            0 if out.len() > 1 => {
                out.remove(at);
            }
            1 => out.insert(at, pool[rng.below(pool.len())]),
            _ => out[at] = pool[rng.below(pool.len())],
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn synthetic() {
    let mut pool = syllables(DERGE);
    for l in heart_lines() {
        pool.extend(syllables(l));
    }
    let mut rng = Rng(0x5EED_0F0B_0F0D_2024);
    let segs: Vec<Vec<&str>> = (0..SEGMENTS)
        .map(|_| random_syllables(&pool, &mut rng))
        .collect();
    let entries: Vec<Entry> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| Entry {
            id: i as u64,
            source: render(s, &mut rng),
            human: rng.below(5) == 0,
        })
        .collect();
    let chars: usize = entries.iter().map(|e| e.source.chars().count()).sum();

    let t = Instant::now();
    let mut index = FuzzyIndex::new();
    for e in entries.iter().cloned() {
        index.insert(e);
    }
    let insert = t.elapsed();
    println!(
        "index: {} segments, {:.0} characters on average, inserted in {:.2} s ({:.1} µs each)",
        index.len(),
        chars as f64 / SEGMENTS as f64,
        insert.as_secs_f64(),
        insert.as_secs_f64() * 1e6 / SEGMENTS as f64
    );

    // Even queries edit an indexed segment (its id is kept); odd ones are fresh.
    let queries: Vec<(Option<u64>, String)> = (0..QUERIES)
        .map(|i| {
            if i % 2 == 0 {
                let id = rng.below(SEGMENTS);
                (
                    Some(id as u64),
                    render(&edit(&segs[id], &pool, &mut rng), &mut rng),
                )
            } else {
                (None, render(&random_syllables(&pool, &mut rng), &mut rng))
            }
        })
        .collect();

    let mut micros = Vec::with_capacity(QUERIES);
    let (mut found, mut fresh_useful) = (0, 0);
    for (origin, q) in &queries {
        let t = Instant::now();
        let m = index.lookup(q, 3, 0.0);
        micros.push(t.elapsed().as_secs_f64() * 1e6);
        match origin {
            Some(id) => found += usize::from(m.first().is_some_and(|m| m.id == *id)),
            None => fresh_useful += usize::from(m.first().is_some_and(|m| m.similarity >= USEFUL)),
        }
    }
    micros.sort_by(f64::total_cmp);
    println!(
        "lookup (k=3), {QUERIES} queries: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, mean {:.0} µs",
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        micros.last().copied().unwrap_or(f64::NAN),
        micros.iter().sum::<f64>() / micros.len() as f64
    );
    println!(
        "near-duplicates whose edited segment is the top match: {found}/{}; fresh queries with a match >= {USEFUL}: {fresh_useful}/{}",
        QUERIES / 2,
        QUERIES / 2
    );

    // The index against a scan of every segment, on the first queries.
    let (mut same, mut same_useful, mut useful) = (0, 0, 0);
    let t = Instant::now();
    for (_, q) in queries.iter().take(CHECKED) {
        let fast = index.lookup(q, 1, 0.0);
        let exact = rank(q, entries.iter().cloned(), 1, 0.0);
        let agree = match (fast.first(), exact.first()) {
            (Some(a), Some(b)) => (a.similarity - b.similarity).abs() < 1e-12,
            (None, None) => true,
            _ => false,
        };
        same += usize::from(agree);
        if exact.first().is_some_and(|m| m.similarity >= USEFUL) {
            useful += 1;
            same_useful += usize::from(agree);
        }
    }
    println!(
        "brute force ({:.0} ms per query) agrees on the best similarity for {same}/{CHECKED} queries, {same_useful}/{useful} of those whose best is >= {USEFUL}",
        t.elapsed().as_secs_f64() * 1e3 / CHECKED as f64
    );
}

/// Leave-one-out over a corpus's chunks.
fn corpus(name: &str, chunks: &[&str]) {
    let entries: Vec<Entry> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| Entry {
            id: i as u64,
            source: (*c).to_string(),
            human: false,
        })
        .collect();
    let mut index = FuzzyIndex::new();
    for e in entries.iter().cloned() {
        index.insert(e);
    }
    let (mut useful, mut sum, mut agree) = (0, 0.0, 0);
    for e in &entries {
        index.remove(e.id);
        let best = index.lookup(&e.source, 1, 0.0);
        let s = best.first().map_or(0.0, |m| m.similarity);
        let others = entries.iter().filter(|o| o.id != e.id).cloned();
        let exact = rank(&e.source, others, 1, 0.0);
        agree += usize::from((exact.first().map_or(0.0, |m| m.similarity) - s).abs() < 1e-12);
        useful += usize::from(s >= USEFUL);
        sum += s;
        index.insert(e.clone());
    }
    let n = chunks.len().max(1);
    println!(
        "{name}: {} chunks, {useful} ({:.1}%) with a match >= {USEFUL} among the others, mean best similarity {:.3} (index = brute force for {agree})",
        chunks.len(),
        100.0 * useful as f64 / n as f64,
        sum / n as f64
    );
}

fn main() {
    synthetic();
    let size = u32::from(ChunkSize::DEFAULT) as usize;
    let heart = heart_lines();
    let heart_text = heart.join("\n");
    corpus("Heart Sutra, lines", &heart);
    corpus(
        &format!("Heart Sutra, chunks of {size}"),
        &segment(&heart_text, size),
    );
    let derge_lines: Vec<&str> = DERGE.lines().filter(|l| !l.trim().is_empty()).collect();
    corpus("Derge excerpt, lines", &derge_lines);
    corpus(
        &format!("Derge excerpt, chunks of {size}"),
        &segment(DERGE, size),
    );
}
