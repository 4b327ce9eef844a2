//! The `bedrock` engine: Amazon Bedrock's Converse API through the AWS SDK.
//! Region and credentials come from the standard AWS chain; the SDK's own
//! retries are off because the job system owns retry and backoff.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message,
    SystemContentBlock,
};
use lotsawa_core::{
    Engine, EngineError, EngineKind, EngineOutput, ReviewRequest, TranslateRequest,
};

use lotsawa_core::usage::Usage;

use crate::openai::{
    REVIEW_PROMPT, parse_confidence, review_message, system_message, with_examples, with_preceding,
};

/// Bedrock settings.
#[derive(Debug, Clone)]
pub struct BedrockSettings {
    /// Model id used when a job names none.
    pub model: String,
    /// Per-call timeout.
    pub timeout: Duration,
}

/// Converse API client.
#[derive(Debug, Clone)]
pub struct BedrockEngine {
    client: Client,
    model: String,
}

impl BedrockEngine {
    /// An engine from an SDK configuration (region, credentials, endpoint).
    pub fn new(sdk: &aws_config::SdkConfig, settings: BedrockSettings) -> Self {
        let conf = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(settings.timeout)
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(conf),
            model: settings.model,
        }
    }

    /// An engine on the standard AWS configuration chain.
    pub async fn from_env(settings: BedrockSettings) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&sdk, settings)
    }

    async fn converse(
        &self,
        model: &str,
        system: String,
        messages: Vec<(ConversationRole, String)>,
        max_tokens: u32,
    ) -> Result<(String, Option<Usage>), EngineError> {
        let mut request = self
            .client
            .converse()
            .model_id(model)
            .system(SystemContentBlock::Text(system))
            .inference_config(
                InferenceConfiguration::builder()
                    .temperature(0.2)
                    .max_tokens(i32::try_from(max_tokens).unwrap_or(i32::MAX))
                    .build(),
            );
        for (role, text) in messages {
            let message = Message::builder()
                .role(role)
                .content(ContentBlock::Text(text))
                .build()
                .map_err(|e| EngineError::permanent(format!("invalid Bedrock request: {e}")))?;
            request = request.messages(message);
        }
        let output = request.send().await.map_err(classify)?;
        let usage = output.usage().map(|u| {
            Usage::call(
                u64::try_from(u.input_tokens()).unwrap_or(0),
                u64::try_from(u.output_tokens()).unwrap_or(0),
            )
        });
        let text = match output.output() {
            Some(ConverseOutput::Message(m)) => m
                .content()
                .iter()
                .filter_map(|c| c.as_text().ok())
                .cloned()
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err(
                EngineError::permanent("Bedrock sent no text in the output message")
                    .coded(lotsawa_core::engine::codes::PROVIDER_INVALID_RESPONSE),
            );
        }
        Ok((text, usage))
    }
}

/// Throttling, timeouts, 5xx and transport failures are transient; the
/// rest (validation, access, unknown model) permanent.
fn classify(err: SdkError<ConverseError>) -> EngineError {
    use lotsawa_core::engine::codes;
    match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.into_err();
            // The error's name is safe to show; its message can name the
            // account, a role or a model ARN: logged only.
            let name = e.code().unwrap_or("an error").to_owned();
            let detail = e.message().unwrap_or("no message").to_owned();
            let message = format!("Bedrock answered {name}");
            match e {
                ConverseError::ThrottlingException(_) => EngineError::throttled(message, None),
                ConverseError::ModelTimeoutException(_)
                | ConverseError::ServiceUnavailableException(_)
                | ConverseError::InternalServerException(_)
                | ConverseError::ModelNotReadyException(_) => EngineError::transient(message),
                ConverseError::AccessDeniedException(_) => {
                    EngineError::permanent(message).coded(codes::PROVIDER_AUTH)
                }
                _ => EngineError::permanent(message).coded(codes::PROVIDER_REJECTED),
            }
            .with_detail(detail)
        }
        SdkError::TimeoutError(_) => EngineError::transient("the Bedrock request timed out"),
        SdkError::DispatchFailure(_) => EngineError::transient("cannot connect to Bedrock"),
        SdkError::ResponseError(_) => EngineError::transient("Bedrock sent an unreadable response"),
        other => EngineError::permanent("the Bedrock request failed")
            .coded(codes::PROVIDER_REJECTED)
            .with_detail(other.to_string()),
    }
}

#[async_trait]
impl Engine for BedrockEngine {
    fn name(&self) -> &str {
        "bedrock"
    }
    fn default_model(&self) -> Option<&str> {
        Some(&self.model)
    }
    fn kind(&self) -> EngineKind {
        EngineKind::Model
    }

    #[tracing::instrument(skip_all, fields(chars = req.text.chars().count()))]
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        let model = req.model.as_deref().unwrap_or(&self.model);
        let mut messages = Vec::new();
        for turn in req.context.iter().filter(|t| !t.translation.is_empty()) {
            messages.push((ConversationRole::User, turn.source.clone()));
            messages.push((ConversationRole::Assistant, turn.translation.clone()));
        }
        messages.push((ConversationRole::User, req.text.clone()));
        let system = with_examples(
            with_preceding(
                system_message(&req.glossary, req.rejected_because.as_deref()),
                &req.context,
            ),
            &req.examples,
        );
        let (text, usage) = self
            .converse(model, system, messages, req.max_tokens())
            .await?;
        Ok(EngineOutput {
            text,
            confidence: None,
            usage,
        })
    }

    async fn review(
        &self,
        req: &ReviewRequest,
    ) -> Result<lotsawa_core::engine::Reviewed, EngineError> {
        let model = req.model.as_deref().unwrap_or(&self.model);
        let user = review_message(req);
        let answer = self
            .converse(
                model,
                REVIEW_PROMPT.to_owned(),
                vec![(ConversationRole::User, user)],
                lotsawa_core::engine::REVIEW_MAX_TOKENS,
            )
            .await?;
        Ok(lotsawa_core::engine::Reviewed {
            confidence: parse_confidence(&answer.0)?,
            usage: answer.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lotsawa_core::{ContextTurn, ErrorClass, GlossaryEntry};
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

    fn engine(server: &MockServer) -> BedrockEngine {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(server.uri())
            .credentials_provider(
                aws_sdk_bedrockruntime::config::SharedCredentialsProvider::new(
                    aws_sdk_bedrockruntime::config::Credentials::new(
                        "AKIDTEST", "secret", None, None, "test",
                    ),
                ),
            )
            .build();
        BedrockEngine::new(
            &sdk,
            BedrockSettings {
                model: MODEL.into(),
                timeout: Duration::from_secs(2),
            },
        )
    }

    fn converse_path() -> String {
        format!("/model/{}/converse", MODEL.replace(':', "%3A"))
    }

    #[tokio::test]
    async fn converse_sends_system_context_and_the_chunk_last() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(converse_path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "output": {"message": {"role": "assistant", "content": [{"text": " Homage. "}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 10, "outputTokens": 2, "totalTokens": 12},
                "metrics": {"latencyMs": 5}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let req = TranslateRequest {
            text: "ཕྱག་འཚལ་ལོ།".into(),
            context: vec![ContextTurn {
                source: "ཀ".into(),
                translation: "ka".into(),
            }],
            glossary: vec![GlossaryEntry {
                bo: "ཕྱག".into(),
                en: "homage".into(),
            }],
            ..Default::default()
        };
        let out = engine(&server).translate(&req).await.expect("ok");
        assert_eq!(out.text, "Homage.");
        assert_eq!(out.usage, Some(Usage::call(10, 2)));
        let received = server.received_requests().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&received[0].body).expect("json");
        assert!(
            body["system"][0]["text"]
                .as_str()
                .is_some_and(|s| s.contains(r#"{"bo":"ཕྱག","en":"homage"}"#)),
            "{body}"
        );
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(messages[2]["content"][0]["text"], "ཕྱག་འཚལ་ལོ།");
        assert_eq!(
            body["inferenceConfig"]["maxTokens"].as_u64(),
            Some(u64::from(req.max_tokens())),
            "{body}"
        );
        assert!(
            received[0].headers.get("authorization").is_some(),
            "requests are signed"
        );
    }

    #[tokio::test]
    async fn throttling_is_transient_and_validation_permanent() {
        for (status, kind, class) in [
            (429, "ThrottlingException", ErrorClass::Transient),
            (503, "ServiceUnavailableException", ErrorClass::Transient),
            (400, "ValidationException", ErrorClass::Permanent),
            (403, "AccessDeniedException", ErrorClass::Permanent),
        ] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(
                    ResponseTemplate::new(status)
                        .insert_header("x-amzn-errortype", kind)
                        .set_body_json(json!({"message": format!(
                            "injected {kind} for arn:aws:iam::123456789012:role/secret"
                        )})),
                )
                .mount(&server)
                .await;
            let err = engine(&server)
                .translate(&TranslateRequest {
                    text: "ཀ".into(),
                    ..Default::default()
                })
                .await
                .expect_err(kind);
            assert_eq!(err.class, class, "{kind}: {}", err.message);
            assert!(err.message.contains(kind), "{}", err.message);
            assert!(
                !err.public().contains("123456789012"),
                "no account id in what users see: {}",
                err.public()
            );
            assert!(
                err.detail
                    .as_deref()
                    .is_some_and(|d| d.contains("arn:aws:iam"))
            );
        }
    }

    #[tokio::test]
    async fn empty_output_is_permanent() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "output": {"message": {"role": "assistant", "content": []}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 1, "outputTokens": 0, "totalTokens": 1},
                "metrics": {"latencyMs": 1}
            })))
            .mount(&server)
            .await;
        let err = engine(&server)
            .translate(&TranslateRequest {
                text: "ཀ".into(),
                ..Default::default()
            })
            .await
            .expect_err("empty");
        assert_eq!(err.class, ErrorClass::Permanent);
    }
}
