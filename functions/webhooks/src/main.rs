//! The `webhooks` function: webhook-queue messages → one signed delivery
//! attempt each; a retry goes back to the queue with its wait as delay.

#![recursion_limit = "256"]

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    let delivery = app.webhook_delivery().await?;
    lotsawa_aws::runtime::keep_running(app.config.emulator, || {
        lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
            let (app, delivery) = (app.clone(), delivery.clone());
            async move { Ok::<_, Error>(app.on_webhooks(&delivery, event.payload).await) }
        }))
    })
    .await
}
