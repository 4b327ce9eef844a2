//! Translation memory keys: content addresses of a chunk's translation.
//!
//! A key covers everything that decides the output: the normalized chunk
//! text, the engine, the model, the prompt version and the glossary entries
//! that apply to the chunk. The same key in any job means the same request,
//! so its stored translation is served without calling the provider. The key
//! is a hex SHA-256: a SQLite primary key locally, a DynamoDB partition key
//! in the cloud.

use sha2::{Digest, Sha256};

use crate::glossary::GlossaryEntry;

/// Bump when the prompt changes: old memory entries then stop matching.
pub const PROMPT_VERSION: &str = "translate-v1";

/// Normalize a chunk for the memory: Unicode whitespace runs become one
/// space, and the ends are trimmed.
pub fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The memory key of a request.
pub fn key(
    tenant: &crate::auth::Tenant,
    text: &str,
    engine: &str,
    model: Option<&str>,
    glossary: &[GlossaryEntry],
) -> String {
    let mut h = Sha256::new();
    // Each tenant has a memory of its own, so a hit never tells one tenant
    // what another translated; the default tenant's keys are those of a
    // server without tenants, so its memory carries over.
    if tenant.as_str() != crate::auth::Tenant::DEFAULT_NAME {
        h.update(b"tenant\0");
        h.update(tenant.as_str().as_bytes());
        h.update([0u8]);
    }
    for part in [
        normalize(text).as_str(),
        engine,
        model.unwrap_or(""),
        PROMPT_VERSION,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let mut entries: Vec<(&str, &str)> = glossary
        .iter()
        .map(|e| (e.bo.as_str(), e.en.as_str()))
        .collect();
    entries.sort_unstable();
    for (bo, en) in entries {
        h.update(bo.as_bytes());
        h.update([1u8]);
        h.update(en.as_bytes());
        h.update([2u8]);
    }
    crate::digest::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_what_decides_the_output() {
        let g = vec![GlossaryEntry {
            bo: "ཆོས".into(),
            en: "Dharma".into(),
        }];
        let t = crate::auth::Tenant::default();
        let key = |text: &str, engine: &str, model: Option<&str>, g: &[GlossaryEntry]| {
            key(&t, text, engine, model, g)
        };
        let base = key("ཆོས་ཀྱི། ", "openai", Some("m"), &[]);
        assert_eq!(base.len(), 64);
        assert_eq!(base, key("  ཆོས་ཀྱི།\n", "openai", Some("m"), &[]));
        assert_ne!(base, key("ཆོས་ཀྱི།", "bedrock", Some("m"), &[]));
        assert_ne!(base, key("ཆོས་ཀྱི།", "openai", Some("n"), &[]));
        assert_ne!(base, key("ཆོས་ཀྱི།", "openai", Some("m"), &g));
        let other = crate::auth::Tenant::parse("other").expect("tenant");
        assert_ne!(
            base,
            super::key(&other, "ཆོས་ཀྱི།", "openai", Some("m"), &[]),
            "another tenant has its own memory"
        );
    }
}
