//! Golden tests of the EWTS transliteration, and a round trip of generated
//! syllables through a Wylie → Unicode reader written for these tests.

#[path = "support/wylie_reader.rs"]
mod wylie_reader;

use lotsawa_core::ewts::to_ewts;

#[test]
fn golden_file_matches() {
    let data = include_str!("data/ewts_golden.tsv");
    let mut failures = Vec::new();
    let mut syllables = 0;
    for line in data
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (bo, want) = line.split_once('\t').expect("bo<TAB>ewts");
        syllables += bo.split(['་', '།', ' ']).filter(|s| !s.is_empty()).count();
        let got = to_ewts(bo);
        if got != want {
            failures.push(format!("{bo}\n  want {want}\n  got  {got}"));
        }
        // The test reader gives the Unicode back from the expected EWTS.
        if bo.chars().any(|c| c.is_ascii_alphabetic()) {
            continue;
        }
        let back = wylie_reader::canonical(&wylie_reader::to_unicode(want));
        if back != wylie_reader::canonical(bo) {
            failures.push(format!("reader: {want}\n  want {bo}\n  got  {back}"));
        }
    }
    assert!(
        syllables >= 300,
        "only {syllables} syllables in the golden file"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every syllable built from the Tibetan template (any prefix, root or
/// standard stack, vowel, suffix and post-suffix), written in Unicode by the
/// test reader, must come back to the same Unicode through `to_ewts`.
#[test]
fn every_template_syllable_round_trips() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (wylie, unicode) in wylie_reader::template_syllables() {
        let ewts = to_ewts(&unicode);
        let back = wylie_reader::to_unicode(&ewts);
        checked += 1;
        if back != unicode && failures.len() < 30 {
            failures.push(format!("{wylie} -> {unicode} -> {ewts} -> {back}"));
        }
    }
    assert!(checked > 50_000, "{checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
