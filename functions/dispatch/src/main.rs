//! The `dispatch` function: job-queue messages → executions; execution
//! status changes (EventBridge) → slot reconciliation.

#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    lotsawa_aws::runtime::keep_running(app.config.emulator, || {
        lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
            let app = app.clone();
            async move {
                if event.payload.get("Records").is_some() {
                    let sqs = serde_json::from_value(event.payload)?;
                    Ok::<Value, Error>(serde_json::to_value(app.on_job_messages(sqs).await)?)
                } else {
                    let released = app.on_execution_event(event.payload).await?;
                    Ok(serde_json::json!({"released": released}))
                }
            }
        }))
    })
    .await
}
