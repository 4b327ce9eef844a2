//! The `ingest` function: S3 `ObjectCreated` under `incoming/` → jobs.

#![recursion_limit = "256"]

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    lotsawa_aws::runtime::keep_running(app.config.emulator, || {
        lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
            let app = app.clone();
            async move { Ok::<_, Error>(app.on_uploads(event.payload).await) }
        }))
    })
    .await
}
