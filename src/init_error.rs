//! Tells Lambda why the function could not start.
//!
//! lambda_runtime only reports init errors of its own (SnapStart hooks); an error in our
//! cold start would otherwise surface as a bare "Runtime exited" with the reason buried in
//! the logs. Posting it to `/runtime/init/error` puts the message where the caller sees it.

use std::fmt::Display;
use std::time::Duration;

/// Reports `error` to the Lambda Runtime API; does nothing outside Lambda. Best effort: a
/// failure to report is logged and the function exits all the same.
pub async fn report(error: &dyn Display) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let url = format!("http://{api}/2018-06-01/runtime/init/error");
    let body = serde_json::json!({
        "errorMessage": error.to_string(),
        "errorType": "Runtime.ConfigurationError",
    });
    let sent = reqwest::Client::new()
        .post(url)
        .header(
            "Lambda-Runtime-Function-Error-Type",
            "Runtime.ConfigurationError",
        )
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!(error = %e.without_url(), "could not report the init error to Lambda");
    }
}
