//! chat-proxy: a stateful proxy in front of the OpenAI API, run as one AWS Lambda function.
//!
//! Callers pick a chat id; the proxy keeps each chat's history and system prompts in Redis,
//! sends the whole conversation upstream on every turn, and answers with the reply and its
//! token usage. `main.rs` builds an [`App`] once per cold start and serves [`handle`].

pub mod api;
pub mod app;
pub mod body;
pub mod budget;
pub mod chat;
pub mod clock;
pub mod config;
pub mod cors;
pub mod error;
pub mod guard;
pub mod handoff;
pub mod http;
pub mod idempotency;
pub mod init_error;
pub mod lambda;
pub mod live;
pub mod paging;
mod request_log;
pub mod router;
pub mod routes;
pub mod seal;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod turn;
pub mod upstream;

pub use app::App;
pub use config::Config;
pub use router::handle;
pub use tls::install_provider as install_tls_provider;
