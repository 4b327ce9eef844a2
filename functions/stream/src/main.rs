//! The `stream` function: `GET /api/jobs/{id}/stream` with response
//! streaming (Function URL, `InvokeMode: RESPONSE_STREAM`).

#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    lambda_http::run_with_streaming_response(app.router()).await
}
