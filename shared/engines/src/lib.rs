//! Translation engines behind the one [`Engine`] trait of `lotsawa-core`:
//! `echo` (identity, for load tests and smoke runs) and `openai` (any
//! OpenAI-compatible chat-completions endpoint), plus [`EngineSet`], the
//! registry a server builds once from its configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lotsawa_core::Engine;

mod echo;
mod offline;
mod openai;

pub use echo::EchoEngine;
pub use offline::{BUILTIN_GLOSSARY, EwtsEngine, OfflineEngine, builtin_glossary};
pub use openai::{OpenAiEngine, OpenAiSettings, SYSTEM_PROMPT, parse_confidence, system_message};

/// A misconfiguration found when building engines.
#[derive(Debug, thiserror::Error)]
pub enum EngineConfigError {
    /// The default engine is not one that can be built.
    #[error("LOTSAWA_ENGINE='{name}' is not available; available engines: {available}")]
    UnknownDefault {
        /// What was asked.
        name: String,
        /// What exists.
        available: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Settings for every engine, read once by the binary's config.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Engine used when a job names none.
    pub default_engine: Option<String>,
    /// OpenAI-compatible endpoint; enables the `openai` engine.
    pub openai: Option<OpenAiSettings>,
    /// Terms from the server's glossary files (LOTSAWA_GLOSSARY).
    pub glossary: lotsawa_core::Glossary,
}

/// The engines a server offers, by name.
#[derive(Clone)]
pub struct EngineSet {
    engines: BTreeMap<String, Arc<dyn Engine>>,
    default: String,
    glossary: Arc<lotsawa_core::Glossary>,
}

impl std::fmt::Debug for EngineSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSet")
            .field("engines", &self.names())
            .field("default", &self.default)
            .finish()
    }
}

/// Why the default engine is what it is, for the start-up message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultChoice {
    /// Named by configuration.
    Configured,
    /// `openai`, because an endpoint is configured.
    OpenAiConfigured,
    /// `offline`, because no provider is configured.
    Fallback,
}

impl EngineSet {
    /// Build every engine the settings allow.
    pub fn build(settings: &EngineSettings) -> Result<(Self, DefaultChoice), EngineConfigError> {
        let mut engines: BTreeMap<String, Arc<dyn Engine>> = BTreeMap::new();
        engines.insert("echo".into(), Arc::new(EchoEngine));
        engines.insert("ewts".into(), Arc::new(EwtsEngine));
        engines.insert(
            "offline".into(),
            Arc::new(OfflineEngine::new(&settings.glossary)),
        );
        if let Some(o) = &settings.openai {
            engines.insert("openai".into(), Arc::new(OpenAiEngine::new(o.clone())?));
        }
        let (default, choice) = match &settings.default_engine {
            Some(name) => (name.clone(), DefaultChoice::Configured),
            None if engines.contains_key("openai") => {
                ("openai".to_owned(), DefaultChoice::OpenAiConfigured)
            }
            None => ("offline".to_owned(), DefaultChoice::Fallback),
        };
        if !engines.contains_key(&default) {
            return Err(EngineConfigError::UnknownDefault {
                name: default,
                available: engines.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok((
            Self {
                engines,
                default,
                glossary: Arc::new(settings.glossary.clone()),
            },
            choice,
        ))
    }

    /// A set from explicit engines (tests, embedding).
    pub fn from_engines(engines: Vec<Arc<dyn Engine>>, default: &str) -> Self {
        let engines = engines
            .into_iter()
            .map(|e| (e.name().to_owned(), e))
            .collect();
        Self {
            engines,
            default: default.to_owned(),
            glossary: Arc::new(lotsawa_core::Glossary::default()),
        }
    }

    /// The server's glossary (from its glossary files).
    pub fn glossary(&self) -> &lotsawa_core::Glossary {
        &self.glossary
    }

    /// The engine called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Engine>> {
        self.engines.get(name).cloned()
    }

    /// The default engine's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every engine's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.engines.keys().cloned().collect()
    }
}

/// Default per-request timeout for provider calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
