//! Coverage of the offline engine's built-in dictionary on real classical
//! text: the share of syllables it glosses (the rest stay visible as EWTS in
//! brackets). The vocabulary's words were chosen by frequency in the Vinaya
//! excerpt; the Sutra and Tantra excerpts are text they were not chosen from.

use lotsawa_core::Glossary;
use lotsawa_core::glossary::gloss;
use lotsawa_engines::builtin_glossary;

const VINAYA: &str = include_str!("../../core/tests/data/derge-kangyur-excerpt.txt");
const SUTRA: &str = include_str!("../../core/tests/data/derge-sutra-excerpt.txt");
const TANTRA: &str = include_str!("../../core/tests/data/derge-tantra-excerpt.txt");

fn coverage(text: &str) -> f64 {
    let g = gloss(text, &Glossary::default(), &builtin_glossary());
    g.coverage.expect("Tibetan text")
}

#[test]
fn the_built_in_dictionary_covers_nine_in_ten_syllables_of_classical_text() {
    for (name, text) in [("Vinaya", VINAYA), ("Sutra", SUTRA), ("Tantra", TANTRA)] {
        let c = coverage(text);
        eprintln!("offline coverage, Derge {name} excerpt: {:.1}%", 100.0 * c);
        assert!(c >= 0.90, "{name}: {c}");
    }
}

#[test]
fn unknown_words_stay_visible_in_ewts() {
    let g = gloss("སྤྲེའུ་དང་ཆུ།", &Glossary::default(), &builtin_glossary());
    assert_eq!(g.text, "[spre'u] and water /");
}
