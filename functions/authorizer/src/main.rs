//! The `authorizer` function: `Authorization: Bearer <key>` → allow (with
//! the key's tenant) or deny, for the HTTP API.

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
            async move { app.on_authorize(event.payload).await }
        }))
    })
    .await
}
