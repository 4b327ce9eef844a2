//! Fuzz targets for the text pipeline: the segmenter, the transliterator
//! and the offline gloss, fed random byte strings and random Tibetan-rich
//! text (bytes mapped onto letters, vowel signs, subjoined letters, tshegs,
//! shads, spaces, line breaks, invisible characters and other scripts).
//! `cargo test` runs each for `LOTSAWA_FUZZ_SECS` seconds (default 8) and
//! prints its executions; `cargo bolero test` runs them under a fuzzing
//! engine for longer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lotsawa_core::Glossary;
use lotsawa_core::ewts::to_ewts;
use lotsawa_core::glossary::gloss;
use lotsawa_core::segment::segment;

fn budget() -> Duration {
    let secs = std::env::var("LOTSAWA_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

const ALPHABET: &[char] = &[
    'ཀ', 'ཁ', 'ག', 'ང', 'ཅ', 'ཉ', 'ཏ', 'ད', 'ན', 'པ', 'བ', 'མ', 'ཙ', 'ཞ', 'ཟ', 'འ', 'ཡ', 'ར', 'ལ',
    'ཤ', 'ས', 'ཧ', 'ཨ', 'ཪ', 'ཥ', '\u{0F72}', '\u{0F74}', '\u{0F7A}', '\u{0F7C}', '\u{0F71}',
    '\u{0F80}', '\u{0F7E}', '\u{0F82}', '\u{0F90}', '\u{0F92}', '\u{0FB1}', '\u{0FB2}', '\u{0FB3}',
    '\u{0F99}', '\u{0FAD}', '\u{0F0B}', '\u{0F0C}', '\u{0F0D}', '\u{0F0E}', '\u{0F14}', '\u{0F04}',
    '\u{0F05}', '\u{0F08}', '\u{0F3A}', '\u{0F3B}', '\u{0F20}', '\u{0F29}', ' ', '\n', '\r', '\t',
    'a', 'Z', '0', '.', '\u{200B}', '\u{200D}', '\u{FEFF}', '\u{202E}', '\u{0000}', 'é', '漢',
    '🙏', '\u{0F35}', '\u{0F37}', '\u{0FC6}',
];

/// A Tibetan-rich text from fuzz bytes.
fn tibetan(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()])
        .collect()
}

/// Both readings of the input: as Tibetan-rich text and as (lossy) UTF-8.
fn texts(bytes: &[u8]) -> [String; 2] {
    [tibetan(bytes), String::from_utf8_lossy(bytes).into_owned()]
}

fn report(name: &str, runs: &AtomicU64) {
    eprintln!(
        "fuzz {name}: {} executions in {} s",
        runs.load(Ordering::Relaxed),
        budget().as_secs()
    );
}

#[test]
fn fuzz_segmenter() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| {
            RUNS.fetch_add(1, Ordering::Relaxed);
            let size = 1 + bytes.first().copied().unwrap_or(0) as usize % 300;
            for text in texts(bytes) {
                let chunks = segment(&text, size);
                // Lossless: the chunks are the text, in order.
                assert_eq!(chunks.concat(), text);
                assert!(chunks.iter().all(|c| !c.is_empty()));
                assert_eq!(chunks.is_empty(), text.is_empty());
            }
        });
    report("segmenter", &RUNS);
}

/// The text inside EWTS brackets (`[...]`, with `\\[` and `\\]`), and a
/// space for each `_` outside them.
fn unbracket(ewts: &str) -> String {
    let mut out = String::new();
    let (mut inside, mut chars) = (false, ewts.chars().peekable());
    while let Some(c) = chars.next() {
        match (inside, c) {
            (true, '\\') if matches!(chars.peek(), Some('[' | ']')) => {
                out.extend(chars.next());
            }
            (true, ']') => inside = false,
            (false, '[') => inside = true,
            (false, '_') => out.push(' '),
            (_, c) => out.push(c),
        }
    }
    out
}

#[test]
fn fuzz_transliterator() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| {
            RUNS.fetch_add(1, Ordering::Relaxed);
            for text in texts(bytes) {
                let out = to_ewts(&text);
                // Bounded growth: a character becomes at most a few.
                assert!(out.chars().count() <= 8 * text.chars().count() + 8);
                // Text with no Tibetan comes back whole from its brackets
                // (but for a backslash, which EWTS, as the reference writes
                // it, leaves unescaped: `\]` could be either).
                if !text.chars().any(|c| ('\u{0F00}'..='\u{0FFF}').contains(&c))
                    && !text.contains('\\')
                {
                    assert_eq!(unbracket(&out), text);
                }
            }
        });
    report("transliterator", &RUNS);
}

#[test]
fn fuzz_offline_gloss() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let base = Glossary::parse_tsv("སངས་རྒྱས\tBuddha\nཆོས\tDharma\nའི\tof\nལ\tto\nཀ་ཀ་ཀ\tkakaka\n")
        .expect("glossary");
    bolero::check!()
        .with_test_time(budget())
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| {
            RUNS.fetch_add(1, Ordering::Relaxed);
            let split = bytes.len() / 4;
            // The first quarter makes a job glossary of random terms.
            let mut job = Glossary::default();
            for term in tibetan(&bytes[..split]).split(['\n', ' ']) {
                job.insert(term, "x");
            }
            for text in texts(&bytes[split..]) {
                let g = gloss(&text, &job, &base);
                if let Some(c) = g.coverage {
                    assert!((0.0..=1.0).contains(&c), "{c}");
                }
            }
        });
    report("offline gloss", &RUNS);
}
