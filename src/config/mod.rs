//! One `Config`, read once from the environment at cold start, by concern: upstream
//! (`upstream.rs`), the store (`store.rs`), callers and their limits (`callers.rs`); the
//! secrets some of them name are read from AWS first (`secrets.rs`).
//!
//! Every variable is checked before anything is built, and every problem is reported
//! together, so a broken deployment is fixed in one round instead of one variable at a time.
//! Secret values are held as [`SecretString`](secrecy::SecretString) and never appear in a
//! message.

mod callers;
mod reader;
pub mod secrets;
mod store;
mod upstream;

use std::fmt;
use std::time::Duration;

pub use self::callers::{CallerKey, Callers};
use self::reader::Reader;
pub use self::store::{RedisTarget, StoreSettings, MAX_CHAT_BYTES_LIMIT, MAX_CHAT_TTL_SECONDS};
pub use self::upstream::{AllowedModels, Compaction, OpenAiConfig, DEFAULT_COMPACT_PROMPT, ECHO};
use crate::cors::Cors;

/// Everything the function needs to start, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub openai: OpenAiConfig,
    /// `None` runs on the in-memory store: for local runs only.
    pub redis: Option<RedisTarget>,
    /// Bounds every Redis command, connect included: Redis down answers 503 within it.
    pub redis_timeout: Duration,
    /// `REDIS_TLS_CA_FILE`: a PEM bundle to trust for Redis TLS instead of the system's roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    pub store: StoreSettings,
    /// The global system prompt used until `POST /system` sets one.
    pub default_system_prompt: String,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// `PROXY_API_KEYS`: who may call, each with its own namespace; empty means open.
    pub callers: Callers,
    /// `CORS_ALLOW_ORIGINS`: browser origins allowed to call.
    pub cors: Cors,
    /// `RATE_LIMIT_PER_MINUTE`: requests a caller may make per minute; `None` is no limit.
    pub rate_limit_per_minute: Option<u64>,
    /// `STREAM_TIMEOUT_SECONDS`: the longest a streamed turn may take, start to end.
    pub stream_timeout: Duration,
    /// `KEEP_ALIVE_SECONDS`: how long a stream may stay silent before a comment line is
    /// sent, so that API Gateway and browsers keep it open.
    pub keep_alive: Duration,
    /// `ALLOWED_MODELS`: the models callers of `/v1/chat/completions` may name.
    pub allowed_models: AllowedModels,
    /// `MAX_PROMPT_TOKENS`: the most tokens one turn sends upstream.
    pub max_prompt_tokens: u32,
    /// `COMPACT_AT_TOKENS` (with `COMPACT_MODEL`, `COMPACT_PROMPT`): stored chats compact
    /// what their window moves past; `None`, they only cut it.
    pub compaction: Option<Compaction>,
    /// `TOKEN_LIMIT_PER_DAY`: tokens a caller (an address, when open) may spend a UTC day.
    pub token_limit_per_day: Option<u64>,
    /// `SHARE_TTL_SECONDS`, `SHARE_MAX_TTL_SECONDS`: how long a chat's read-only link lives
    /// by default, and at most.
    pub share_ttl: (u64, u64),
    /// `PLAYGROUND`: serve the playground page (default true).
    pub playground: bool,
    /// `SEAL_KEYS`: the keys that seal what a chat says at rest; `None` keeps it plain.
    pub seal_keys: Option<std::sync::Arc<crate::seal::SealKeys>>,
}

/// Every problem found in the environment, reported at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    /// An empty value counts as unset, as it does in most `.env` tooling, and surrounding
    /// whitespace is dropped: a secret written with `--value file://key.txt` ends in a newline.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let trimmed = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let mut env = Reader::new(&trimmed);
        let upstream = upstream::read(&mut env);
        let store = store::read(&mut env);
        let callers = callers::read(&mut env);
        let playground = env.flag("PLAYGROUND", true);
        let default_system_prompt = env.text("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT);
        let seal_keys =
            env.get("SEAL_KEYS")
                .and_then(|text| match crate::seal::SealKeys::parse(&text) {
                    Ok(keys) => Some(std::sync::Arc::new(keys)),
                    Err(problem) => {
                        env.problem(&format!("SEAL_KEYS: {problem}"));
                        None
                    }
                });
        if !env.problems.is_empty() {
            return Err(ConfigError {
                problems: env.problems,
            });
        }
        Ok(Config {
            openai: upstream.openai,
            redis: store.redis,
            redis_timeout: store.redis_timeout,
            redis_ca_file: store.redis_ca_file,
            store: store.store,
            share_ttl: store.share_ttl,
            default_system_prompt,
            max_body_bytes: callers.max_body_bytes,
            callers: callers.callers,
            cors: callers.cors,
            rate_limit_per_minute: callers.rate_limit_per_minute,
            stream_timeout: upstream.stream_timeout,
            keep_alive: upstream.keep_alive,
            allowed_models: upstream.allowed_models,
            max_prompt_tokens: upstream.max_prompt_tokens,
            compaction: upstream.compaction,
            token_limit_per_day: callers.token_limit_per_day,
            playground,
            seal_keys,
        })
    }
}

#[cfg(test)]
mod tests;
