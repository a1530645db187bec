//! Cold start: logging, then everything built once, then invocations until Lambda stops us.

use chat_proxy::telemetry::{self, LogFormat};
use chat_proxy::{init_error, lambda, startup};

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
    // Built once and kept for the life of the process: streamed turns run on their own
    // tasks and borrow it.
    let app: &'static _ = Box::leak(Box::new(app));
    lambda::run(app).await
}
