//! The `echo` engine: its output is its input. For load tests and smoke runs
//! of the job machinery; it translates nothing.

use async_trait::async_trait;
use lotsawa_core::{Engine, EngineError, EngineOutput, TranslateRequest};

/// Returns each chunk unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoEngine;

#[async_trait]
impl Engine for EchoEngine {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        // Nothing was translated: the honest confidence is zero.
        Ok(EngineOutput {
            text: req.text.clone(),
            confidence: Some(0.0),
            usage: None,
        })
    }
}
