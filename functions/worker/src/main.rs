//! The `worker` function: answers the state machine's task tokens.

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
            async move { Ok::<_, Error>(app.on_tasks(event.payload).await) }
        }))
    })
    .await
}
