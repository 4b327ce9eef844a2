//! Glossaries as resources: a tenant's named term lists, uploaded as TSV
//! (`bo<TAB>en`), TBX or JSON, and named by jobs in `config.glossaryIds`.
//!
//! A job takes its glossaries' terms when it is submitted (after its own
//! terms, which win): a glossary changed or deleted later does not change a
//! job that already has its terms, so a retried or resumed job translates
//! with the terms it started with.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::auth::Tenant;
use crate::glossary::{
    GlossaryEntry, MAX_JOB_GLOSSARY_BYTES, MAX_JOB_TERMS, check_term, normalize_term,
};
use crate::job::GlossaryId;

/// Most glossaries one tenant keeps.
pub const MAX_GLOSSARIES: usize = 100;
/// Most glossaries one job names.
pub const MAX_JOB_GLOSSARIES: usize = 10;
/// Longest glossary name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A stored glossary.
#[derive(Debug, Clone, PartialEq)]
pub struct GlossaryRecord {
    /// Its id.
    pub id: GlossaryId,
    /// Whose it is.
    pub tenant: Tenant,
    /// Its name.
    pub name: String,
    /// Its terms (empty in lists, which carry `terms`).
    pub entries: Vec<GlossaryEntry>,
    /// How many terms it has.
    pub terms: u32,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its terms or name last changed.
    pub updated_at: DateTime<Utc>,
}

/// The format of an uploaded glossary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlossaryFormat {
    /// `bo<TAB>en` (or `bo<TAB>ewts<TAB>en`) per line; `#` starts a comment.
    Tsv,
    /// TBX (TermBase eXchange, v2 `martif` or v3 `tbx`): per concept, its
    /// first Tibetan and first English term.
    Tbx,
    /// `{"name": …, "entries": [{"bo": …, "en": …}]}` or a bare array of
    /// entries.
    Json,
}

/// A glossary's name: trimmed, 1 to [`MAX_NAME_CHARS`] characters without
/// control characters.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name: a glossary needs a name".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("name: at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name: no control characters".into());
    }
    Ok(name.to_owned())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonGlossary {
    Named {
        #[serde(default)]
        name: Option<String>,
        entries: Vec<GlossaryEntry>,
    },
    Bare(Vec<GlossaryEntry>),
}

/// An uploaded glossary's name (when the file has one, JSON only) and
/// terms, each checked, in file order with later duplicates of a term left
/// out; within the bounds of one job's glossary.
pub fn parse(
    format: GlossaryFormat,
    text: &str,
) -> Result<(Option<String>, Vec<GlossaryEntry>), String> {
    let (name, raw) = match format {
        GlossaryFormat::Tsv => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let cols: Vec<&str> = line.split('\t').collect();
                let (bo, en) = match cols.as_slice() {
                    [bo, en] | [bo, _, en] => (*bo, *en),
                    _ => {
                        return Err(format!(
                            "line {}: expected bo<TAB>en (2 or 3 tab-separated columns)",
                            i + 1
                        ));
                    }
                };
                out.push((
                    format!("line {}", i + 1),
                    GlossaryEntry {
                        bo: bo.trim().to_owned(),
                        en: en.trim().to_owned(),
                    },
                ));
            }
            (None, out)
        }
        GlossaryFormat::Json => {
            let parsed: JsonGlossary = serde_json::from_str(text).map_err(|e| {
                format!(
                    "not a glossary in JSON ({{\"name\", \"entries\": [{{\"bo\", \"en\"}}]}}): {e}"
                )
            })?;
            let (name, entries) = match parsed {
                JsonGlossary::Named { name, entries } => (name, entries),
                JsonGlossary::Bare(entries) => (None, entries),
            };
            (
                name,
                entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (format!("entries[{i}]"), e))
                    .collect(),
            )
        }
        GlossaryFormat::Tbx => {
            let pairs = crate::exchange::parse_tbx(text, MAX_JOB_TERMS * 4)
                .map_err(|e| format!("the TBX file: {e}"))?;
            (
                None,
                pairs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (bo, en))| (format!("concept {}", i + 1), GlossaryEntry { bo, en }))
                    .collect(),
            )
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::new();
    for (place, e) in raw {
        check_term(&e.bo, &e.en).map_err(|why| format!("{place}: {why}"))?;
        if seen.insert(normalize_term(&e.bo)) {
            entries.push(GlossaryEntry {
                bo: e.bo.trim().to_owned(),
                en: e.en.trim().to_owned(),
            });
        }
    }
    if entries.is_empty() {
        return Err("the glossary has no terms".into());
    }
    check_bounds(&entries, "a glossary")?;
    Ok((name, entries))
}

fn check_bounds(entries: &[GlossaryEntry], what: &str) -> Result<(), String> {
    if entries.len() > MAX_JOB_TERMS {
        return Err(format!(
            "{what} holds at most {MAX_JOB_TERMS} terms; this one has {}",
            entries.len()
        ));
    }
    let bytes: usize = entries.iter().map(|e| e.bo.len() + e.en.len()).sum();
    if bytes > MAX_JOB_GLOSSARY_BYTES {
        return Err(format!(
            "{what} holds at most {MAX_JOB_GLOSSARY_BYTES} bytes of terms; this one has {bytes}"
        ));
    }
    Ok(())
}

/// A job's terms: its own first, then each named glossary's in order, the
/// first of a term winning; within one job's bounds.
pub fn merge(
    own: &[GlossaryEntry],
    glossaries: &[GlossaryRecord],
) -> Result<Vec<GlossaryEntry>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in own
        .iter()
        .chain(glossaries.iter().flat_map(|g| g.entries.iter()))
    {
        if seen.insert(normalize_term(&e.bo)) {
            out.push(e.clone());
        }
    }
    check_bounds(&out, "a job's terms with its glossaries")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_and_json_parse_with_duplicates_left_out() {
        let tsv = "# terms\nབྱང་ཆུབ་སེམས་དཔའ\tbodhisattva\r\nཆོས\tchos\tDharma\nཆོས\tdharma\n";
        let (name, e) = parse(GlossaryFormat::Tsv, tsv).expect("tsv");
        assert_eq!(name, None);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].en, "Dharma", "the first of a term wins");
        let json = r#"{"name": "Heart", "entries": [{"bo": "སྟོང་པ་ཉིད", "en": "emptiness"}]}"#;
        let (name, e) = parse(GlossaryFormat::Json, json).expect("json");
        assert_eq!((name.as_deref(), e.len()), (Some("Heart"), 1));
        let bare = r#"[{"bo": "ཆོས", "en": "Dharma"}]"#;
        assert_eq!(parse(GlossaryFormat::Json, bare).expect("bare").1.len(), 1);
    }

    #[test]
    fn bad_glossaries_say_where() {
        for (format, text, want) in [
            (GlossaryFormat::Tsv, "ཆོས\n", "line 1"),
            (GlossaryFormat::Tsv, "ཆོས\t\n", "line 1"),
            (GlossaryFormat::Tsv, "# only a comment\n", "no terms"),
            (GlossaryFormat::Json, "{", "not a glossary"),
            (
                GlossaryFormat::Json,
                r#"[{"bo": "ཆོས", "en": "a\nb"}]"#,
                "entries[0]",
            ),
        ] {
            let err = parse(format, text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(check_name("  ").is_err());
        assert_eq!(check_name(" Heart ").as_deref(), Ok("Heart"));
    }

    #[test]
    fn merging_keeps_the_job_terms_first_and_stays_in_bounds() {
        let own = vec![GlossaryEntry {
            bo: "ཆོས".into(),
            en: "Dharma".into(),
        }];
        let record = |entries: Vec<GlossaryEntry>| GlossaryRecord {
            id: GlossaryId::new(),
            tenant: Tenant::default(),
            name: "g".into(),
            terms: entries.len() as u32,
            entries,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let g = record(vec![
            GlossaryEntry {
                bo: "ཆོས་".into(),
                en: "phenomenon".into(),
            },
            GlossaryEntry {
                bo: "སྟོང་པ".into(),
                en: "empty".into(),
            },
        ]);
        let merged = merge(&own, &[g]).expect("merge");
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].en, "Dharma");
        let many: Vec<GlossaryEntry> = (0..MAX_JOB_TERMS)
            .map(|i| GlossaryEntry {
                bo: format!("ཀ{i}"),
                en: "x".into(),
            })
            .collect();
        let err = merge(&own, &[record(many)]).expect_err("too many");
        assert!(err.contains("at most"), "{err}");
    }
}
