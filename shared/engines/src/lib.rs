//! Translation engines behind the one [`Engine`] trait of `lotsawa-core`:
//! `echo` (identity, for load tests and smoke runs) and `openai` (any
//! OpenAI-compatible chat-completions endpoint), plus [`EngineSet`], the
//! registry a server builds once from its configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lotsawa_core::Engine;

#[cfg(feature = "bedrock")]
mod bedrock;
mod echo;
mod limited;
mod offline;
mod openai;

#[cfg(feature = "bedrock")]
pub use bedrock::{BedrockEngine, BedrockSettings};
pub use echo::EchoEngine;
pub use limited::{Limited, LocalGate};
pub use offline::{
    BUILTIN_GLOSSARY, BUILTIN_VOCABULARY, EwtsEngine, OfflineEngine, builtin_glossary,
};
pub use openai::{OpenAiEngine, OpenAiSettings, SYSTEM_PROMPT, parse_confidence, system_message};

use lotsawa_core::settings::{self, ConfigError, Source};

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
    /// Bedrock was asked for, but this build does not include it.
    #[error(
        "the bedrock engine is configured but this build lacks it; build with `--features bedrock`"
    )]
    BedrockNotBuilt,
    /// A setting has a bad value.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
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
    /// Bedrock model id; enables the `bedrock` engine (builds with the
    /// `bedrock` feature only).
    pub bedrock_model: Option<String>,
    /// Per-call provider timeout.
    pub timeout: Duration,
    /// One translation memory for all tenants (LOTSAWA_SHARED_MEMORY=1):
    /// a tenant's memory hit may then come from another tenant's text.
    pub shared_memory: bool,
    /// Provider limits shared by every job (LOTSAWA_LIMITS).
    pub limits: lotsawa_core::limits::ProviderLimits,
    /// Dollars per million tokens (LOTSAWA_PRICES).
    pub prices: lotsawa_core::usage::Prices,
}

impl EngineSettings {
    /// Read the engine variables (LOTSAWA_ENGINE, OPENAI_BASE_URL,
    /// OPENAI_API_KEY, LOTSAWA_MODEL, LOTSAWA_BEDROCK_MODEL,
    /// LOTSAWA_PROVIDER_TIMEOUT_MS) from `get`; `engine_flag` wins over
    /// LOTSAWA_ENGINE. Glossary files are the caller's business.
    pub fn from_source(
        src: &dyn Source,
        engine_flag: Option<String>,
    ) -> Result<Self, EngineConfigError> {
        let src = |k: &str| src.var(k).filter(|v| !v.trim().is_empty());
        let get = |k: &str| src(k);
        let timeout_ms = settings::number(
            &src,
            "LOTSAWA_PROVIDER_TIMEOUT_MS",
            120_000u64,
            1,
            3_600_000,
        )?;
        let timeout = Duration::from_millis(timeout_ms);
        let api_key = get("OPENAI_API_KEY");
        let base_url = get("OPENAI_BASE_URL").or_else(|| {
            api_key
                .as_ref()
                .map(|_| "https://api.openai.com/v1".to_owned())
        });
        if let Some(u) = &base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "OPENAI_BASE_URL",
                format!("expected an http:// or https:// URL, got '{u}'"),
            )
            .into());
        }
        let openai = base_url.map(|base_url| OpenAiSettings {
            base_url,
            api_key,
            model: get("LOTSAWA_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
            timeout,
        });
        let default_engine = engine_flag.or_else(|| get("LOTSAWA_ENGINE"));
        let bedrock_model = get("LOTSAWA_BEDROCK_MODEL").or_else(|| {
            (default_engine.as_deref() == Some("bedrock")).then(|| DEFAULT_BEDROCK_MODEL.to_owned())
        });
        let shared_memory = settings::flag(&src, "LOTSAWA_SHARED_MEMORY")?;
        let limits = match get("LOTSAWA_LIMITS") {
            Some(text) => lotsawa_core::limits::ProviderLimits::parse(&text)
                .map_err(|e| ConfigError::new("LOTSAWA_LIMITS", e))?,
            None => Default::default(),
        };
        let prices = match get("LOTSAWA_PRICES") {
            Some(text) => lotsawa_core::usage::Prices::parse(&text)
                .map_err(|e| ConfigError::new("LOTSAWA_PRICES", e))?,
            None => Default::default(),
        };
        Ok(Self {
            limits,
            prices,
            default_engine,
            openai,
            glossary: lotsawa_core::Glossary::default(),
            bedrock_model,
            timeout,
            shared_memory,
        })
    }
}

/// The Bedrock model used when only `LOTSAWA_ENGINE=bedrock` is set.
pub const DEFAULT_BEDROCK_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

/// The engines a server offers, by name.
#[derive(Clone)]
pub struct EngineSet {
    engines: BTreeMap<String, Arc<dyn Engine>>,
    default: String,
    glossary: Arc<lotsawa_core::Glossary>,
    shared_memory: bool,
    prices: Arc<lotsawa_core::usage::Prices>,
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
    /// A provider engine (`openai`, else `bedrock`), because one is configured.
    OpenAiConfigured,
    /// `offline`, because no provider is configured.
    Fallback,
}

impl EngineSet {
    /// Build every engine the settings allow, the provider limits kept in
    /// process.
    pub async fn build(
        settings: &EngineSettings,
    ) -> Result<(Self, DefaultChoice), EngineConfigError> {
        Self::build_with_gate(settings, Arc::new(LocalGate::new())).await
    }

    /// Build every engine the settings allow; engines with provider limits
    /// take their share through `gate`.
    pub async fn build_with_gate(
        settings: &EngineSettings,
        gate: Arc<dyn lotsawa_core::limits::ProviderGate>,
    ) -> Result<(Self, DefaultChoice), EngineConfigError> {
        let mut engines: BTreeMap<String, Arc<dyn Engine>> = BTreeMap::new();
        if let Some(model) = &settings.bedrock_model {
            #[cfg(feature = "bedrock")]
            {
                let e = BedrockEngine::from_env(BedrockSettings {
                    model: model.clone(),
                    timeout: settings.timeout,
                })
                .await;
                engines.insert("bedrock".into(), Arc::new(e));
            }
            #[cfg(not(feature = "bedrock"))]
            {
                let _ = model;
                return Err(EngineConfigError::BedrockNotBuilt);
            }
        }
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
            None if engines.contains_key("bedrock") => {
                ("bedrock".to_owned(), DefaultChoice::OpenAiConfigured)
            }
            None => ("offline".to_owned(), DefaultChoice::Fallback),
        };
        if !engines.contains_key(&default) {
            return Err(EngineConfigError::UnknownDefault {
                name: default,
                available: engines.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let set = Self {
            engines,
            default,
            glossary: Arc::new(settings.glossary.clone()),
            shared_memory: settings.shared_memory,
            prices: Arc::new(settings.prices.clone()),
        };
        Ok((set.with_limits(settings.limits.clone(), gate), choice))
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
            shared_memory: false,
            prices: Arc::default(),
        }
    }

    /// The price table (LOTSAWA_PRICES).
    pub fn prices(&self) -> &lotsawa_core::usage::Prices {
        &self.prices
    }

    /// The same set with a price table.
    pub fn with_prices(mut self, prices: lotsawa_core::usage::Prices) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// The same set with every engine called through `limits`, shared
    /// through `gate`.
    pub fn with_limits(
        mut self,
        limits: lotsawa_core::limits::ProviderLimits,
        gate: Arc<dyn lotsawa_core::limits::ProviderGate>,
    ) -> Self {
        if limits.is_empty() {
            return self;
        }
        let limits = Arc::new(limits);
        for engine in self.engines.values_mut() {
            *engine = Arc::new(Limited::new(engine.clone(), limits.clone(), gate.clone()));
        }
        self
    }

    /// The same set with one translation memory for every tenant.
    pub fn with_shared_memory(mut self, shared: bool) -> Self {
        self.shared_memory = shared;
        self
    }

    /// The server's glossary (from its glossary files).
    pub fn glossary(&self) -> &lotsawa_core::Glossary {
        &self.glossary
    }

    /// Add an engine built elsewhere (e.g. one that needs async set-up).
    pub fn insert(&mut self, engine: Arc<dyn Engine>) {
        self.engines.insert(engine.name().to_owned(), engine);
    }

    /// Make `name` the default engine, if it exists.
    pub fn set_default(&mut self, name: &str) -> bool {
        let ok = self.engines.contains_key(name);
        if ok {
            self.default = name.to_owned();
        }
        ok
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

impl lotsawa_core::EngineCatalog for EngineSet {
    fn engine(&self, name: &str) -> Option<Arc<dyn Engine>> {
        self.get(name)
    }
    fn default_engine(&self) -> &str {
        self.default_name()
    }
    fn engine_names(&self) -> Vec<String> {
        self.names()
    }
    fn server_glossary(&self) -> Vec<lotsawa_core::GlossaryEntry> {
        self.glossary.entries()
    }
    fn shared_memory(&self) -> bool {
        self.shared_memory
    }
    fn price(&self, engine: &str, model: Option<&str>) -> Option<lotsawa_core::usage::Price> {
        self.prices.price(engine, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offline_is_the_default_without_a_provider() {
        let (set, choice) = EngineSet::build(&EngineSettings::default())
            .await
            .expect("build");
        assert_eq!(set.default_name(), "offline");
        assert_eq!(choice, DefaultChoice::Fallback);
        assert_eq!(set.names(), vec!["echo", "ewts", "offline"]);
    }

    #[tokio::test]
    async fn an_unknown_default_engine_is_refused_with_the_list() {
        let settings = EngineSettings {
            default_engine: Some("babelfish".into()),
            ..Default::default()
        };
        let err = EngineSet::build(&settings).await.expect_err("unknown");
        assert!(err.to_string().contains("echo, ewts, offline"), "{err}");
    }

    #[cfg(not(feature = "bedrock"))]
    #[tokio::test]
    async fn bedrock_needs_the_feature() {
        let settings = EngineSettings {
            bedrock_model: Some(DEFAULT_BEDROCK_MODEL.into()),
            ..Default::default()
        };
        let err = EngineSet::build(&settings).await.expect_err("not built");
        assert!(err.to_string().contains("--features bedrock"), "{err}");
    }

    #[test]
    fn settings_come_from_the_environment_with_named_errors() {
        let env = |k: &str| match k {
            "OPENAI_BASE_URL" => Some("http://127.0.0.1:1/v1".to_owned()),
            "LOTSAWA_ENGINE" => Some("bedrock".to_owned()),
            _ => None,
        };
        let s = EngineSettings::from_source(&env, None).expect("ok");
        assert_eq!(s.bedrock_model.as_deref(), Some(DEFAULT_BEDROCK_MODEL));
        assert!(s.openai.is_some());
        let bad = |k: &str| (k == "LOTSAWA_PROVIDER_TIMEOUT_MS").then(|| "soon".to_owned());
        let err = EngineSettings::from_source(&bad, None).expect_err("bad");
        assert!(
            err.to_string().starts_with("LOTSAWA_PROVIDER_TIMEOUT_MS"),
            "{err}"
        );
    }
}
