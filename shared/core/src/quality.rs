//! Quality checks of a provider's answer.

use crate::glossary::GlossaryEntry;

/// Why an answer was rejected or flagged.
#[derive(Debug, Clone, PartialEq)]
pub enum QualityIssue {
    /// Nothing came back.
    Empty,
    /// The answer is still mostly Tibetan script.
    StillTibetan(f64),
    /// The answer's length is implausible for the source's.
    LengthRatio(f64),
    /// A glossary term was not translated as the glossary says.
    GlossaryIgnored {
        /// The term.
        bo: String,
        /// What it should have been.
        en: String,
    },
}

impl QualityIssue {
    /// True for answers that cannot be used at all.
    pub fn is_unusable(&self) -> bool {
        matches!(self, QualityIssue::Empty | QualityIssue::StillTibetan(_))
    }
}

impl std::fmt::Display for QualityIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QualityIssue::Empty => f.write_str("the answer is empty"),
            QualityIssue::StillTibetan(share) => write!(
                f,
                "the answer is still {:.0}% Tibetan script",
                share * 100.0
            ),
            QualityIssue::LengthRatio(r) => write!(
                f,
                "the answer is {r:.2} times the length of the source, which is implausible"
            ),
            QualityIssue::GlossaryIgnored { bo, en } => {
                write!(f, "the glossary term {bo} was not rendered as \"{en}\"")
            }
        }
    }
}

/// Bounds of a plausible translation length, relative to the source's
/// letter count (Tibetan letters and marks).
pub const MIN_RATIO: f64 = 0.15;
/// Upper bound, see [`MIN_RATIO`].
pub const MAX_RATIO: f64 = 12.0;

/// Check a translation of `source`; the first issue found, worst first.
pub fn check(source: &str, translation: &str, glossary: &[GlossaryEntry]) -> Option<QualityIssue> {
    let t = translation.trim();
    if t.is_empty() {
        return Some(QualityIssue::Empty);
    }
    let (share, total) = tibetan_share(t);
    if share > 0.5 {
        return Some(QualityIssue::StillTibetan(share));
    }
    if let Some(ratio) = length_ratio(source, total)
        && !(MIN_RATIO..=MAX_RATIO).contains(&ratio)
    {
        return Some(QualityIssue::LengthRatio(ratio));
    }
    let lower = t.to_lowercase();
    for e in glossary {
        if !e.en.trim().is_empty() && !lower.contains(&e.en.trim().to_lowercase()) {
            return Some(QualityIssue::GlossaryIgnored {
                bo: e.bo.clone(),
                en: e.en.clone(),
            });
        }
    }
    None
}

/// Letters (alphanumerics and Tibetan-block characters) in `s`.
fn letters(s: &str) -> usize {
    s.chars()
        .filter(|c| c.is_alphanumeric() || ('\u{0F00}'..='\u{0FFF}').contains(c))
        .count()
}

/// The share of an answer's letters that are Tibetan letters, and its
/// letter count (at least 1).
fn tibetan_share(t: &str) -> (f64, usize) {
    let tibetan = t
        .chars()
        .filter(|c| ('\u{0F40}'..='\u{0FBC}').contains(c))
        .count();
    let total = letters(t).max(1);
    (tibetan as f64 / total as f64, total)
}

/// Answer letters per source letter, for sources long enough to judge.
fn length_ratio(source: &str, answer_letters: usize) -> Option<f64> {
    let src = letters(source);
    (src >= 20).then(|| answer_letters as f64 / src as f64)
}

/// A score in 0..=1 from the same checks, for answers without a model's
/// own confidence: the share of the answer that is not Tibetan script,
/// halved for an implausible length ratio, and scaled by the share of the
/// chunk's glossary terms the answer renders (half weight).
pub fn score(source: &str, translation: &str, glossary: &[GlossaryEntry]) -> f64 {
    let t = translation.trim();
    if t.is_empty() {
        return 0.0;
    }
    let (share, total) = tibetan_share(t);
    let mut score = 1.0 - share.min(1.0);
    if length_ratio(source, total).is_some_and(|r| !(MIN_RATIO..=MAX_RATIO).contains(&r)) {
        score *= 0.5;
    }
    let terms: Vec<&GlossaryEntry> = glossary
        .iter()
        .filter(|e| !e.en.trim().is_empty())
        .collect();
    if !terms.is_empty() {
        let lower = t.to_lowercase();
        let honoured = terms
            .iter()
            .filter(|e| lower.contains(&e.en.trim().to_lowercase()))
            .count();
        score *= 0.5 + 0.5 * honoured as f64 / terms.len() as f64;
    }
    (score * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ།";

    #[test]
    fn good_answers_pass() {
        assert_eq!(
            check(SRC, "Entering the Way of the Bodhisattva.", &[]),
            None
        );
    }

    #[test]
    fn unusable_answers() {
        assert_eq!(check(SRC, "  ", &[]), Some(QualityIssue::Empty));
        assert!(matches!(
            check(SRC, SRC, &[]),
            Some(QualityIssue::StillTibetan(_))
        ));
        assert!(check(SRC, "", &[]).is_some_and(|i| i.is_unusable()));
    }

    #[test]
    fn implausible_lengths() {
        assert!(matches!(
            check(SRC, "Ok", &[]),
            Some(QualityIssue::LengthRatio(_))
        ));
        let long = "word ".repeat(200);
        assert!(matches!(
            check(SRC, &long, &[]),
            Some(QualityIssue::LengthRatio(_))
        ));
    }

    #[test]
    fn glossary_terms_must_appear() {
        let g = vec![GlossaryEntry {
            bo: "བྱང་ཆུབ་སེམས་དཔའ".into(),
            en: "bodhisattva".into(),
        }];
        assert_eq!(check(SRC, "Entering the Way of the Bodhisattva.", &g), None);
        let issue = check(SRC, "Entering the way of the awakening hero.", &g);
        assert!(
            matches!(issue, Some(QualityIssue::GlossaryIgnored { .. })),
            "{issue:?}"
        );
    }

    #[test]
    fn scores_follow_the_checks() {
        let g = [GlossaryEntry {
            bo: "བྱང་ཆུབ".into(),
            en: "awakening".into(),
        }];
        let good = "Entering the conduct of the bodhisattvas of awakening";
        assert_eq!(score(SRC, good, &g), 1.0);
        let missed = "Entering the conduct of the bodhisattvas";
        assert_eq!(score(SRC, missed, &g), 0.5);
        assert_eq!(score(SRC, "", &g), 0.0);
        assert!(score(SRC, SRC, &[]) < 0.5);
    }
}
