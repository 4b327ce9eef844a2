//! The tenant's segment memory: every source a model engine translated
//! (its first answer) and every translation a person wrote (corrections,
//! imported XLIFF and TMX), searched by similarity for the examples a
//! model engine sees, and exactly for a person's translation of the same
//! source, which then wins over any engine's.
//!
//! A segment is named by its tenant, its normalized source and whether a
//! person wrote it, so a tenant has at most one of each per source: a
//! newer human translation replaces the older, and an engine's first
//! answer stays.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Tenant;

/// Most segments one memory import takes (split larger TMX files).
pub const MAX_IMPORT_SEGMENTS: usize = 2_000;

/// Keys one segment gets in a store that indexes by key items (the
/// DynamoDB table): the smallest of its [`crate::fuzzy::index_keys`], a
/// bottom-k sample, so similar texts share most of them.
pub const SKETCH_KEYS: usize = 16;

/// One segment of a tenant's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its id ([`segment_id`]).
    pub id: u64,
    /// The Tibetan source, as it was translated.
    pub source: String,
    /// The translation.
    pub target: String,
    /// A person wrote it.
    pub human: bool,
    /// When it was stored.
    pub at: DateTime<Utc>,
}

/// A segment given to a model as an example, with its similarity to the
/// chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    /// The example's source.
    pub source: String,
    /// Its translation.
    pub translation: String,
    /// [`crate::fuzzy::similarity`] to the chunk, in 0..=1.
    pub similarity: f64,
    /// A person wrote the translation.
    pub human: bool,
}

/// The id of `tenant`'s segment for `source` (normalized as the memory
/// normalizes), human or not.
pub fn segment_id(tenant: &Tenant, source: &str, human: bool) -> u64 {
    let mut h = Sha256::new();
    h.update(tenant.as_str().as_bytes());
    h.update([0u8]);
    h.update(crate::memory::normalize(source).as_bytes());
    h.update([0u8, u8::from(human)]);
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // Positive as an i64, so SQLite keeps it as it is.
    u64::from_be_bytes(b) >> 1
}

/// The keys a key-indexed store writes for a source.
pub fn sketch(source: &str) -> Vec<u64> {
    let mut keys = crate::fuzzy::index_keys(source);
    keys.truncate(SKETCH_KEYS);
    keys
}

/// Most bytes of examples one chunk is given (sources and translations):
/// they go into a prompt and are stored with the chunk.
pub const MAX_EXAMPLE_BYTES: usize = 24 * 1024;

/// The best `k` of `found` (the most similar first, people's first within
/// the margin, one per source and origin), within [`MAX_EXAMPLE_BYTES`]:
/// an example that would pass the bound is left out.
pub fn bounded(mut found: Vec<Example>, k: usize) -> Vec<Example> {
    let ranked = |e: &Example| {
        e.similarity
            + if e.human {
                crate::fuzzy::HUMAN_MARGIN
            } else {
                0.0
            }
    };
    found.sort_by(|a, b| ranked(b).total_cmp(&ranked(a)));
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    let mut out = Vec::new();
    for e in found {
        if out.len() == k {
            break;
        }
        let size = e.source.len() + e.translation.len();
        if bytes + size > MAX_EXAMPLE_BYTES
            || !seen.insert((crate::memory::normalize(&e.source), e.human))
        {
            continue;
        }
        bytes += size;
        out.push(e);
    }
    out
}

/// Encode the examples a chunk was given (JSON); `None` for none.
pub fn encode_examples(examples: &[Example]) -> Option<String> {
    if examples.is_empty() {
        return None;
    }
    serde_json::to_string(examples).ok()
}

/// Decode stored examples (none when they do not parse).
pub fn decode_examples(text: &str) -> Vec<Example> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The best `k` of `candidates` for `source` with similarity at least
/// `min`, ranked by [`crate::fuzzy::rank`] (human ones first within its
/// margin), a segment of the very same source left out.
pub fn best_examples(source: &str, candidates: Vec<Segment>, k: usize, min: f64) -> Vec<Example> {
    let same = crate::memory::normalize(source);
    let entries: Vec<crate::fuzzy::Entry> = candidates
        .iter()
        .filter(|c| crate::memory::normalize(&c.source) != same)
        .map(|c| crate::fuzzy::Entry {
            id: c.id,
            source: c.source.clone(),
            human: c.human,
        })
        .collect();
    let ranked = crate::fuzzy::rank(source, entries, k, min);
    ranked
        .into_iter()
        .filter_map(|m| {
            candidates.iter().find(|c| c.id == m.id).map(|c| Example {
                source: c.source.clone(),
                translation: c.target.clone(),
                similarity: (m.similarity * 1000.0).round() / 1000.0,
                human: c.human,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_tenant_source_and_origin() {
        let t = Tenant::default();
        let a = segment_id(&t, " ཆོས་ཀྱི། ", true);
        assert_eq!(a, segment_id(&t, "ཆོས་ཀྱི།", true), "normalized");
        assert_ne!(a, segment_id(&t, "ཆོས་ཀྱི།", false));
        let other = Tenant::parse("other").expect("tenant");
        assert_ne!(a, segment_id(&other, "ཆོས་ཀྱི།", true));
        assert!(i64::try_from(a).is_ok());
    }

    #[test]
    fn examples_leave_out_the_same_source_and_prefer_people() {
        let seg = |id: u64, source: &str, target: &str, human: bool| Segment {
            id,
            source: source.into(),
            target: target.into(),
            human,
            at: Utc::now(),
        };
        let q = "བྱང་ཆུབ་སེམས་དཔའ་སེམས་དཔའ་ཆེན་པོ་འཕགས་པ་སྤྱན་རས་གཟིགས་དབང་ཕྱུག";
        let near = "བྱང་ཆུབ་སེམས་དཔའ་སེམས་དཔའ་ཆེན་པོ་འཕགས་པ་སྤྱན་རས་གཟིགས";
        let far = "ཤེས་རབ་ཀྱི་ཕ་རོལ་ཏུ་ཕྱིན་པ";
        let got = best_examples(
            q,
            vec![
                seg(1, q, "itself", true),
                seg(2, near, "machine", false),
                seg(3, near, "person", true),
                seg(4, far, "far", false),
            ],
            3,
            crate::fuzzy::USEFUL,
        );
        let names: Vec<&str> = got.iter().map(|e| e.translation.as_str()).collect();
        assert_eq!(names, ["person", "machine"], "{got:?}");
        assert!(got[0].human && got[0].similarity > 0.6);
        let stored = encode_examples(&got).expect("json");
        // The bound keeps the order and leaves out what does not fit.
        let huge = Example {
            source: "ཀ".repeat(MAX_EXAMPLE_BYTES),
            translation: "x".into(),
            similarity: 0.99,
            human: false,
        };
        let mut with_huge = got.clone();
        with_huge.push(huge);
        assert_eq!(bounded(with_huge, 3), got);
        assert_eq!(decode_examples(&stored), got);
    }
}
