//! The `stream` function: `GET /api/jobs/{id}/stream` with response
//! streaming (Function URL, `InvokeMode: RESPONSE_STREAM`).

#![recursion_limit = "256"]

use axum::http::header::CONTENT_LENGTH;
use axum::response::Response;

/// A streamed response is sent chunked. Under the local Lambda emulator a
/// response with a Content-Length header breaks the runtime client's
/// connection (`IncompleteMessage`), so the emulator setting drops it.
async fn unsized_body(mut res: Response) -> Response {
    res.headers_mut().remove(CONTENT_LENGTH);
    res
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lotsawa_aws::runtime::init_logging();
    let app = lotsawa_aws::runtime::App::from_env().await?;
    let router = if app.config.emulator {
        app.stream_router()
            .layer(axum::middleware::map_response(unsized_body))
    } else {
        app.stream_router()
    };
    lotsawa_aws::runtime::keep_running(app.config.emulator, || {
        lambda_http::run_with_streaming_response(router.clone())
    })
    .await
}
