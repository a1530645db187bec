//! Logging: JSON lines on Lambda (CloudWatch indexes their fields), readable text elsewhere.
//! `RUST_LOG` filters as usual; the default is `info`.
//!
//! The format is read from the environment on its own, before the configuration, so that
//! configuration errors are logged in the right format too.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// `LOG_FORMAT` (`json` or `text`) when set, else JSON on Lambda and text elsewhere.
    pub fn from_env() -> LogFormat {
        match std::env::var("LOG_FORMAT").as_deref().map(str::trim) {
            Ok("json") => LogFormat::Json,
            Ok("text") => LogFormat::Text,
            _ if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the global subscriber, writing to stderr. Call once, first thing at cold start.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
}

/// Installs the global subscriber with another writer (benchmarks write to a sink).
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    // An empty RUST_LOG (as .env.example leaves it) means "default", not "errors only".
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| EnvFilter::try_new(value).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // Lambda stamps each line itself, and its log lines carry the request id.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .with_ansi(false)
            .init(),
        // Colours only where a person reads them as they come, never into a file or a pipe.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
