//! Cold start: logging, then everything built once, then invocations until Lambda stops us.

use chat_proxy::telemetry::{self, LogFormat};
use chat_proxy::{handle, init_error, startup};
use lambda_http::{service_fn, Request};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    chat_proxy::install_tls_provider();
    telemetry::init(LogFormat::from_env());

    let app = match startup::app_from_env().await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            init_error::report(&error).await;
            return Err(error.into());
        }
    };
    let app = &app;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(app, request).await)
    }))
    .await
}
