//! The `api` function: the HTTP API behind API Gateway.

#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    let router = app.router();
    lotsawa_aws::runtime::keep_running(app.config.emulator, || lambda_http::run(router.clone()))
        .await
}
