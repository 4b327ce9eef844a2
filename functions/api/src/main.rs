//! The `api` function: the HTTP API behind API Gateway.

#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    lambda_http::run(app.router()).await
}
