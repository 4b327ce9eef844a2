//! Which engines and models a deployment offers, and the check of a job's
//! choice against them.

use super::*;

/// The engines a deployment offers.
#[derive(Debug, Clone)]
pub struct EngineChoice {
    /// Names a job may ask for.
    pub names: Vec<String>,
    /// The one used when a job names none.
    pub default: String,
    /// Where they run, for messages ("server", "deployment").
    pub place: &'static str,
    /// Models an engine accepts (a deployment's rights may cover only
    /// these); an engine not listed takes any model.
    pub models: Vec<(String, Vec<String>)>,
}

/// Parse an allowlist of models (`LOTSAWA_MODELS`): comma-separated
/// `engine:model` entries (a model id may itself hold `:`, as Bedrock's do).
pub fn parse_model_list(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once(':') {
            Some((engine, model)) if !engine.trim().is_empty() && !model.trim().is_empty() => {
                out.push((engine.trim().to_owned(), model.trim().to_owned()));
            }
            _ => {
                return Err(format!(
                    "expected comma-separated engine:model entries (openai:gpt-4o-mini), got '{entry}'"
                ));
            }
        }
    }
    Ok(out)
}

/// The models each model engine accepts. `engines` are (name, default
/// model) of the engines that call a model. With `restrict` false and no
/// list, any model goes; otherwise an engine accepts the models listed for
/// it, or only its default model when none are.
pub fn model_allowlists(
    listed: &[(String, String)],
    engines: &[(String, String)],
    restrict: bool,
) -> Vec<(String, Vec<String>)> {
    if listed.is_empty() && !restrict {
        return Vec::new();
    }
    engines
        .iter()
        .map(|(engine, default)| {
            let mut models: Vec<String> = listed
                .iter()
                .filter(|(e, _)| e == engine)
                .map(|(_, m)| m.clone())
                .collect();
            if models.is_empty() {
                models.push(default.clone());
            }
            (engine.clone(), models)
        })
        .collect()
}

impl EngineChoice {
    /// The engine a submission runs on, or why it cannot.
    pub fn resolve(&self, asked: Option<&EngineName>) -> Result<EngineName, ServiceError> {
        let engine = match asked {
            Some(e) => e.clone(),
            None => EngineName::parse(&self.default).map_err(|e| ServiceError::Invalid(e.0))?,
        };
        if !self.names.iter().any(|n| n == engine.as_str()) {
            return Err(ServiceError::Invalid(format!(
                "engine '{engine}' is not available on this {} (available: {})",
                self.place,
                self.names.join(", ")
            )));
        }
        Ok(engine)
    }

    /// Whether `engine` accepts `model` (a job without a model uses the
    /// engine's default, which is always allowed).
    pub fn check_model(
        &self,
        engine: &EngineName,
        model: Option<&str>,
    ) -> Result<(), ServiceError> {
        let Some(model) = model else { return Ok(()) };
        match self.models.iter().find(|(e, _)| e == engine.as_str()) {
            Some((_, allowed)) if !allowed.iter().any(|m| m == model) => {
                Err(ServiceError::Invalid(format!(
                    "model '{model}' is not allowed for engine '{engine}' on this {} (allowed: {})",
                    self.place,
                    allowed.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_checked_against_the_engine_allowlist() {
        let choice = EngineChoice {
            names: vec!["bedrock".into(), "openai".into()],
            default: "bedrock".into(),
            place: "deployment",
            models: vec![("bedrock".into(), vec!["anthropic.claude-3-haiku".into()])],
        };
        let bedrock = EngineName::parse("bedrock").expect("name");
        let openai = EngineName::parse("openai").expect("name");
        assert!(choice.check_model(&bedrock, None).is_ok());
        assert!(
            choice
                .check_model(&bedrock, Some("anthropic.claude-3-haiku"))
                .is_ok()
        );
        let err = choice
            .check_model(&bedrock, Some("anthropic.claude-3-opus"))
            .expect_err("not allowed");
        assert!(
            err.to_string()
                .contains("allowed: anthropic.claude-3-haiku"),
            "{err}"
        );
        assert!(choice.check_model(&openai, Some("anything")).is_ok());
    }

    #[test]
    fn model_lists_parse_engine_model_pairs() {
        let l = parse_model_list(
            " openai:gpt-4o-mini, bedrock:anthropic.claude-3-haiku-20240307-v1:0,,",
        )
        .expect("valid");
        assert_eq!(
            l,
            vec![
                ("openai".to_owned(), "gpt-4o-mini".to_owned()),
                (
                    "bedrock".to_owned(),
                    "anthropic.claude-3-haiku-20240307-v1:0".to_owned()
                ),
            ]
        );
        assert!(parse_model_list("").expect("empty").is_empty());
        for bad in ["gpt-4o", "openai:", ":gpt-4o"] {
            let e = parse_model_list(bad).expect_err(bad);
            assert!(e.contains("engine:model"), "{e}");
        }
    }

    #[test]
    fn allowlists_hold_listed_models_or_the_default() {
        let engines = vec![
            ("openai".to_owned(), "gpt-4o-mini".to_owned()),
            ("bedrock".to_owned(), "haiku".to_owned()),
        ];
        assert!(model_allowlists(&[], &engines, false).is_empty(), "open");
        assert_eq!(
            model_allowlists(&[], &engines, true),
            vec![
                ("openai".to_owned(), vec!["gpt-4o-mini".to_owned()]),
                ("bedrock".to_owned(), vec!["haiku".to_owned()]),
            ],
            "keys required: defaults only"
        );
        let listed = vec![
            ("openai".to_owned(), "gpt-4o".to_owned()),
            ("openai".to_owned(), "gpt-4o-mini".to_owned()),
        ];
        assert_eq!(
            model_allowlists(&listed, &engines, false),
            vec![
                (
                    "openai".to_owned(),
                    vec!["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()]
                ),
                ("bedrock".to_owned(), vec!["haiku".to_owned()]),
            ]
        );
    }
}
