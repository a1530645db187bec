//! Cold start: read the configuration, build the clients once, then serve invocations.

use chat_proxy::config::{Config, LogFormat};
use chat_proxy::{handle, init_error, telemetry, App};
use lambda_http::{service_fn, Request};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    chat_proxy::install_tls_provider();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            // The subscriber is not set up yet (its format is part of the configuration).
            telemetry::init(LogFormat::Json);
            tracing::error!(%error, "cannot start");
            init_error::report(&error).await;
            return Err(error.into());
        }
    };
    telemetry::init(config.log_format);
    if config.redis.is_none() {
        tracing::warn!(
            "NO REDIS CONFIGURED: chats are kept in this process's memory only and are lost \
             when it stops. Set REDIS_URL (or REDIS_HOST) for anything but a local run."
        );
    }

    let app = match App::build(&config) {
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
