//! Texts and glossaries the throughput figures are taken on; shared by the
//! criterion bench and the harness (`lotsawa-bench`).

use lotsawa_core::Glossary;

/// ~`bytes` of Tibetan made of the built-in glossary's own terms.
pub fn glossary_text(bytes: usize) -> String {
    let sample: String = lotsawa_engines::BUILTIN_GLOSSARY
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next().map(|bo| format!("{bo}་")))
        .collect::<String>()
        + "། །བསྒྲུབས་པ་མེད་ཀྱང་།\n";
    sample.repeat(bytes / sample.len() + 1)
}

/// The most terms a job may send, each of the longest allowed length and
/// all prefixes of one another.
pub fn hostile_glossary() -> Glossary {
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
    job
}

/// ~`bytes` of the hostile glossary's first syllable: every position tries
/// every length.
pub fn hostile_text(bytes: usize) -> String {
    "ཀ་".repeat(bytes / "ཀ་".len())
}
