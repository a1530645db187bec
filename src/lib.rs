//! chat-proxy: a stateful proxy in front of the OpenAI API, run as one AWS Lambda function.
//!
//! Callers pick a chat id; the proxy keeps each chat's history and system prompts in Redis,
//! sends the whole conversation upstream on every turn, and answers with the reply and its
//! token usage. `main.rs` builds an [`App`] once per cold start and serves [`handle`].

pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod budget;
pub mod clock;
pub mod config;
pub mod cors;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod init_error;
pub mod lambda;
mod request_log;
pub mod routes;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod turn;
pub mod upstream;

pub use app::{handle, App};
pub use config::Config;

/// Makes ring the process's one TLS provider, for HTTPS to OpenAI and `rediss://` alike.
/// Call before building any client; calling again is harmless (the first one stays).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
