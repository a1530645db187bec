//! `App`: everything a request needs, built once per cold start and borrowed by every
//! invocation. It knows no front door; the router hands it to them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::config::{AllowedModels, Config};
use crate::cors::Cors;
use crate::guard::Guard;
use crate::handoff::Handoff;
use crate::store::{MemoryStore, RedisStore, Store, StoreError};
use crate::turn::{TurnEngine, TurnSettings};
use crate::upstream::{Upstream, UpstreamError};

/// Everything a request needs, built once and borrowed by every invocation.
pub struct App {
    pub store: Arc<dyn Store>,
    pub upstream: Arc<Upstream>,
    pub turns: TurnEngine,
    /// The checks every door makes first: the caller, the rate limit, deadlines.
    pub guard: Guard,
    pub cors: Cors,
    /// Lambda's Invoke API, which hands a background response to another invocation.
    pub handoff: Handoff,
    /// Whether background responses can run: their run is another invocation, on any
    /// instance, so the store must be one they share (Redis), not this process's memory.
    pub background: bool,
    pub default_system_prompt: String,
    pub max_body_bytes: usize,
    /// `MAX_HISTORY_MESSAGES` and `MAX_CHAT_BYTES`: what a chat holds at most.
    pub chat_caps: (usize, usize),
    /// How long a chat's read-only link lives by default, and at most (seconds).
    pub share_ttl: (u64, u64),
    /// `TEMPORARY_CHAT_SECONDS`: how long a temporary chat is kept after each write.
    pub temporary_ttl: Duration,
    pub allowed_models: AllowedModels,
    /// `PLAYGROUND`: whether `GET /playground` is served.
    pub playground: bool,
    /// How long a streaming client may leave a full buffer untouched before it is taken as
    /// gone: two keep-alive intervals.
    pub stream_stall: Duration,
    /// Streamed turns still running: the invocation that started one waits for it before
    /// Lambda may freeze the process, even when the client has gone.
    in_flight: TaskTracker,
}

/// Why the clients could not be built. Every variant names what is wrong and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot set up the Redis client: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up the OpenAI client: {0}")]
    Upstream(#[from] UpstreamError),
}

impl App {
    /// Builds the clients from `config`: Redis when configured, else the in-memory store.
    /// Redis connects in the background; nothing here waits on the network.
    pub fn build(config: &Config) -> Result<App, BuildError> {
        let store: Arc<dyn Store> = match &config.redis {
            Some(target) => Arc::new(
                RedisStore::connect(
                    target,
                    config.store.clone(),
                    config.redis_timeout,
                    config.redis_ca_file.as_deref(),
                )?
                .sealed(config.seal_keys.clone()),
            ),
            None => Arc::new(MemoryStore::new(config.store.clone())),
        };
        Ok(App::with_store(config, store)?)
    }

    /// An app over a store the caller built: tests and benchmarks use it to keep a handle
    /// on the store.
    pub fn with_store(config: &Config, store: Arc<dyn Store>) -> Result<App, UpstreamError> {
        let upstream = Arc::new(Upstream::new(&config.openai)?);
        Ok(App {
            turns: TurnEngine::new(
                store.clone(),
                upstream.clone(),
                TurnSettings {
                    default_system_prompt: config.default_system_prompt.clone(),
                    keep_alive: config.keep_alive,
                    max_prompt_tokens: config.max_prompt_tokens,
                    token_limit_per_day: config.token_limit_per_day,
                    seal_keys: config.seal_keys.clone(),
                    compaction: config.compaction.clone(),
                },
            ),
            guard: Guard::new(config, store.clone()),
            store,
            upstream,
            cors: config.cors.clone(),
            handoff: Handoff::default(),
            background: config.redis.is_some(),
            default_system_prompt: config.default_system_prompt.clone(),
            max_body_bytes: config.max_body_bytes,
            chat_caps: (
                config.store.max_history_messages,
                config.store.max_chat_bytes,
            ),
            allowed_models: config.allowed_models.clone(),
            share_ttl: config.share_ttl,
            temporary_ttl: config.store.temporary_ttl,
            playground: config.playground,
            stream_stall: config.keep_alive * 2,
            in_flight: TaskTracker::new(),
        })
    }

    /// Runs `work` (a streamed turn) beside the response that streams it; [`App::settle`]
    /// waits for it.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.in_flight.spawn(work);
    }

    /// Waits until every streamed turn started so far has finished (and been stored).
    /// The Lambda runtime calls it after each invocation, before asking for the next one.
    pub async fn settle(&self) {
        self.in_flight.close();
        self.in_flight.wait().await;
        self.in_flight.reopen();
    }
}
