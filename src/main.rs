//! Cold start: logging, then everything built once, then invocations until Lambda stops us.

use chat_proxy::telemetry::{self, LogFormat};
use chat_proxy::{init_error, lambda, startup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    // `cargo lambda watch` sets AWS_LAMBDA_MAX_CONCURRENCY=1, and lambda_runtime warns about
    // any value as if it were a misconfiguration. One invocation at a time is what this
    // function runs anyway, so a 1 says nothing: it is dropped here, first thing, while no
    // other thread reads the environment. (A larger value, a Lambda Managed Instance's,
    // is kept, and its warning is a real one.)
    if std::env::var("AWS_LAMBDA_MAX_CONCURRENCY").as_deref() == Ok("1") {
        std::env::remove_var("AWS_LAMBDA_MAX_CONCURRENCY");
    }
    chat_proxy::install_tls_provider();
    telemetry::init(LogFormat::from_env());

    // `bootstrap reseal` (`make reseal`): a one-off run from an operator's machine.
    if std::env::args().nth(1).as_deref() == Some("reseal") {
        let resealed = startup::reseal_from_env().await.map_err(|error| {
            tracing::error!(%error, "cannot reseal");
            error
        })?;
        println!(
            "resealed: {} values sealed again under the first key, {} already were, {} do not open (left as they are)",
            resealed.rewritten, resealed.current, resealed.unreadable
        );
        return Ok(());
    }

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
