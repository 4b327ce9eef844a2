//! The offline engines: `ewts` (exact transliteration, used by
//! `transliteration` jobs) and `offline` (a word-by-word gloss from
//! glossaries, the default when no provider is configured).

use std::sync::Arc;

use async_trait::async_trait;
use lotsawa_core::ewts::to_ewts;
use lotsawa_core::glossary::gloss;
use lotsawa_core::{Engine, EngineError, EngineOutput, Glossary, TranslateRequest};

/// The built-in glossary file: curated terms, applied on top of the
/// vocabulary (see its header for the source of the meanings).
pub const BUILTIN_GLOSSARY: &str = include_str!("../data/glossary.tsv");

/// The built-in vocabulary file: classical words, particles and verb forms
/// (see its header for the source and licence).
pub const BUILTIN_VOCABULARY: &str = include_str!("../data/vocabulary.tsv");

/// The built-in dictionary: the vocabulary with the curated glossary on top.
pub fn builtin_glossary() -> Glossary {
    // Both files are part of the build and checked by tests.
    let mut g = Glossary::parse_tsv(BUILTIN_VOCABULARY).unwrap_or_default();
    g.extend(&Glossary::parse_tsv(BUILTIN_GLOSSARY).unwrap_or_default());
    g
}

/// Run CPU work on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::permanent(format!("the offline engine stopped: {e}")))
}

/// Tibetan Unicode to EWTS.
#[derive(Debug, Clone, Copy, Default)]
pub struct EwtsEngine;

#[async_trait]
impl Engine for EwtsEngine {
    fn name(&self) -> &str {
        "ewts"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        // An exact, rule-based conversion: CPU work, kept off the async
        // runtime's threads so requests and streams stay served.
        let text = req.text.clone();
        let out = off_runtime(move || to_ewts(&text)).await?;
        Ok(EngineOutput {
            text: out,
            confidence: Some(1.0),
            usage: None,
        })
    }
}

/// Word-by-word gloss: job glossary first, then the server's glossary files,
/// then the built-in glossary; unknown words in EWTS, in brackets. Its
/// confidence is the share of syllables the glossaries covered.
#[derive(Debug, Clone)]
pub struct OfflineEngine {
    glossary: Arc<Glossary>,
}

impl OfflineEngine {
    /// An engine over `extra` (server glossary files) on top of the built-in one.
    pub fn new(extra: &Glossary) -> Self {
        let mut g = builtin_glossary();
        g.extend(extra);
        Self {
            glossary: Arc::new(g),
        }
    }

    /// Terms known to this engine.
    pub fn len(&self) -> usize {
        self.glossary.len()
    }

    /// True without terms.
    pub fn is_empty(&self) -> bool {
        self.glossary.is_empty()
    }
}

#[async_trait]
impl Engine for OfflineEngine {
    fn name(&self) -> &str {
        "offline"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        let mut job = Glossary::default();
        for e in &req.glossary {
            job.insert(&e.bo, &e.en);
        }
        // Linear in the chunk (terms have at most MAX_TERM_SYLLABLES
        // syllables), and run off the async runtime's threads; a chunk is
        // the step between which cancel and shutdown take effect.
        let base = self.glossary.clone();
        let text = req.text.clone();
        let g = off_runtime(move || gloss(&text, &job, &base)).await?;
        Ok(EngineOutput {
            text: g.text,
            confidence: g.coverage,
            usage: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lotsawa_core::GlossaryEntry;

    #[test]
    fn builtin_glossary_loads_and_is_large() {
        let g = Glossary::parse_tsv(BUILTIN_GLOSSARY).expect("valid file");
        assert!(g.len() >= 400, "{}", g.len());
    }

    #[test]
    fn builtin_vocabulary_loads_and_is_large() {
        let g = Glossary::parse_tsv(BUILTIN_VOCABULARY).expect("valid file");
        assert!(g.len() >= 1500, "{}", g.len());
    }

    #[test]
    fn builtin_files_ewts_column_matches_the_transliteration() {
        for file in [BUILTIN_GLOSSARY, BUILTIN_VOCABULARY] {
            for line in file.lines().filter(|l| !l.starts_with('#')) {
                let cols: Vec<&str> = line.split('\t').collect();
                assert_eq!(cols.len(), 3, "{line}");
                assert_eq!(to_ewts(cols[0]), cols[1], "{line}");
            }
        }
    }

    #[test]
    fn the_curated_glossary_wins_over_the_vocabulary() {
        // Both files gloss bzhin du; the curated one decides.
        let curated = Glossary::parse_tsv(BUILTIN_GLOSSARY).expect("valid");
        let vocabulary = Glossary::parse_tsv(BUILTIN_VOCABULARY).expect("valid");
        let key = "བཞིན་དུ";
        assert_ne!(curated.get(key), vocabulary.get(key));
        assert_eq!(builtin_glossary().get(key), curated.get(key));
    }

    #[tokio::test]
    async fn glosses_a_verse() {
        let e = OfflineEngine::new(&Glossary::default());
        let req = TranslateRequest {
            text: "སངས་རྒྱས་ཆོས་དང་ཚོགས་ཀྱི་མཆོག་རྣམས་ལ། །སྤྲེའུ་ཡིས།".into(),
            ..Default::default()
        };
        let out = e.translate(&req).await.expect("gloss");
        // spre'u (monkey) is in neither file: it stays visible, in EWTS.
        assert_eq!(
            out.text,
            "Buddha Dharma and assembly of supreme (plural) to / [spre'u] by /"
        );
        let c = out.confidence.expect("confidence");
        assert!((c - 10.0 / 11.0).abs() < 1e-9, "{c}");
    }

    #[tokio::test]
    async fn job_glossary_wins() {
        let e = OfflineEngine::new(&Glossary::default());
        let req = TranslateRequest {
            text: "ཚོགས་ཀྱི་མཆོག".into(),
            glossary: vec![GlossaryEntry {
                bo: "ཚོགས".into(),
                en: "assembly".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            e.translate(&req).await.expect("gloss").text,
            "assembly of supreme"
        );
    }
}
