//! The Redis store (fred): one pipelined read and one atomic script per turn.
//!
//! Key scheme, with `P` = `REDIS_KEY_PREFIX` and `ID` = the chat id:
//! - `P:global:system`        string: the global system prompt
//! - `P:chat:{ID}:system`     string: the chat's system prompt
//! - `P:chat:{ID}:turns`      list of JSON [`Turn`]s, oldest first
//!
//! A chat's keys share the hash tag `{ID}`, so they live in one Cluster slot and one script
//! can write both. Every chat write is a single `EVAL`: atomic like `MULTI`/`EXEC`, but one
//! command on the wire, so a turn costs exactly one round trip to write whatever the client
//! library does with buffering, and no partial write can be left behind by a dropped link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::interfaces::{ClientLike, KeysInterface, ListInterface, LuaInterface};
use fred::prelude::{Builder, Client, Expiration, ReconnectPolicy};
use fred::types::config::{
    Config as FredConfig, ServerConfig, TcpConfig, TlsConnector, UnresponsiveConfig,
};
use secrecy::ExposeSecret;

use super::{Store, StoreError, Turn, TurnContext};
use crate::config::{RedisTarget, StoreSettings};
use crate::routes::ChatId;

/// Renews the expiry of every key named in KEYS, or removes it when ARGV[1] is 0.
/// Prepended to each script below, which pass their TTL as ARGV[1].
const TOUCH: &str = r#"
local function touch()
  local ttl = tonumber(ARGV[1])
  for _, key in ipairs(KEYS) do
    if ttl > 0 then redis.call('EXPIRE', key, ttl) else redis.call('PERSIST', key) end
  end
end
"#;

/// KEYS: turns, system. ARGV: ttl, turn JSON, max turns kept.
const APPEND_TURN: &str = r#"
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
touch()
return 1
"#;

/// KEYS: system, turns. ARGV: ttl, prompt.
const SET_CHAT_PROMPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[2])
touch()
return 1
"#;

/// KEYS: turns, system. ARGV: ttl.
const CLEAR: &str = r#"
redis.call('DEL', KEYS[1])
touch()
return 1
"#;

pub struct RedisStore {
    client: Client,
    settings: StoreSettings,
    global_key: String,
    scripts: Scripts,
    round_trips: AtomicU64,
}

struct Scripts {
    append_turn: String,
    set_chat_prompt: String,
    clear: String,
}

struct ChatKeys {
    system: String,
    turns: String,
}

impl RedisStore {
    /// Builds the client and starts connecting in the background, so a cold start does not
    /// wait for Redis and an unreachable Redis answers 503 instead of failing the init.
    ///
    /// `timeout` bounds every command, connect and TLS handshake included: with Redis down a
    /// request fails within it, and fred keeps reconnecting so the next request succeeds as
    /// soon as Redis is back.
    pub fn connect(
        target: &RedisTarget,
        settings: StoreSettings,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let config = fred_config(target)?;
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = timeout;
                connection.internal_command_timeout = timeout;
                // Reads are retried on a fresh connection after a cut; writes are not (see
                // `write_options`).
                connection.max_command_attempts = 3;
                connection.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
                connection.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(timeout),
                    interval: Duration::from_millis(250),
                };
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 500, 2))
            .build()
            .map_err(|e| StoreError::new(format!("invalid Redis configuration: {e}")))?;
        // The handle is dropped on purpose: the connection task lives as long as the client.
        let _connection = client.connect();

        let prefix = &settings.key_prefix;
        Ok(RedisStore {
            client,
            global_key: format!("{prefix}:global:system"),
            settings,
            scripts: Scripts {
                append_turn: format!("{TOUCH}{APPEND_TURN}"),
                set_chat_prompt: format!("{TOUCH}{SET_CHAT_PROMPT}"),
                clear: format!("{TOUCH}{CLEAR}"),
            },
            round_trips: AtomicU64::new(0),
        })
    }

    /// Waits until the client is connected, or `timeout` passes. For tests and benchmarks.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.client.wait_for_connect())
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// How many requests this store has sent to Redis and waited for: a pipeline or a
    /// script counts once. Benchmarks and tests read it to prove the per-turn cost.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn keys(&self, chat: &ChatId) -> ChatKeys {
        let prefix = &self.settings.key_prefix;
        let id = chat.as_str();
        ChatKeys {
            system: format!("{prefix}:chat:{{{id}}}:system"),
            turns: format!("{prefix}:chat:{{{id}}}:turns"),
        }
    }

    fn ttl_arg(&self) -> u64 {
        self.settings.chat_ttl.map_or(0, |ttl| ttl.as_secs())
    }

    fn max_turns(&self) -> i64 {
        i64::try_from(self.settings.max_turns()).unwrap_or(i64::MAX)
    }

    fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a chat-writing script once: a write whose link drops mid-flight may or may not
    /// have run, and running it again could store a turn twice.
    async fn write(
        &self,
        script: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<(), StoreError> {
        self.count_round_trip();
        let options = fred::types::config::Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        let _: i64 = self
            .client
            .with_options(&options)
            .eval(script, keys, args)
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

fn fred_config(target: &RedisTarget) -> Result<FredConfig, StoreError> {
    match target {
        RedisTarget::Url(url) => FredConfig::from_url(url.expose_secret())
            .map_err(|_| StoreError::new("REDIS_URL is not a valid Redis URL")),
        RedisTarget::Parts {
            host,
            port,
            password,
            tls,
        } => {
            let tls = if *tls {
                let connector = TlsConnector::default_rustls()
                    .map_err(|e| StoreError::new(format!("cannot set up TLS for Redis: {e}")))?;
                Some(connector.into())
            } else {
                None
            };
            Ok(FredConfig {
                server: ServerConfig::new_centralized(host.clone(), *port),
                password: password.as_ref().map(|p| p.expose_secret().to_owned()),
                tls,
                ..FredConfig::default()
            })
        }
    }
}

fn redis_error(error: fred::error::Error) -> StoreError {
    StoreError::new(format!("redis: {error}"))
}

fn decode_turns(raw: Vec<String>) -> Result<Vec<Turn>, StoreError> {
    raw.iter()
        .map(|json| {
            serde_json::from_str(json)
                .map_err(|e| StoreError::new(format!("a stored turn is not valid JSON: {e}")))
        })
        .collect()
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn global_prompt(&self) -> Result<Option<String>, StoreError> {
        self.count_round_trip();
        self.client.get(&self.global_key).await.map_err(redis_error)
    }

    async fn set_global_prompt(&self, content: &str) -> Result<(), StoreError> {
        self.count_round_trip();
        self.client
            .set(&self.global_key, content, None::<Expiration>, None, false)
            .await
            .map_err(redis_error)
    }

    async fn chat_prompt(&self, chat: &ChatId) -> Result<Option<String>, StoreError> {
        self.count_round_trip();
        self.client
            .get(self.keys(chat).system)
            .await
            .map_err(redis_error)
    }

    async fn set_chat_prompt(&self, chat: &ChatId, content: &str) -> Result<(), StoreError> {
        let ChatKeys { system, turns } = self.keys(chat);
        let args = vec![self.ttl_arg().to_string(), content.to_owned()];
        self.write(&self.scripts.set_chat_prompt, vec![system, turns], args)
            .await
    }

    async fn turn_context(&self, chat: &ChatId) -> Result<TurnContext, StoreError> {
        let ChatKeys { system, turns } = self.keys(chat);
        self.count_round_trip();
        let pipeline = self.client.pipeline();
        let queued: Result<(), _> = async {
            let () = pipeline.get(&self.global_key).await?;
            let () = pipeline.get(&system).await?;
            pipeline.lrange(&turns, -self.max_turns(), -1).await
        }
        .await;
        queued.map_err(redis_error)?;
        let (global_prompt, chat_prompt, history): (Option<String>, Option<String>, Vec<String>) =
            pipeline.all().await.map_err(redis_error)?;
        Ok(TurnContext {
            global_prompt,
            chat_prompt,
            history: decode_turns(history)?,
        })
    }

    async fn append_turn(&self, chat: &ChatId, turn: &Turn) -> Result<(), StoreError> {
        let ChatKeys { system, turns } = self.keys(chat);
        let json = serde_json::to_string(turn)
            .map_err(|e| StoreError::new(format!("cannot encode a turn: {e}")))?;
        let args = vec![
            self.ttl_arg().to_string(),
            json,
            self.max_turns().to_string(),
        ];
        self.write(&self.scripts.append_turn, vec![turns, system], args)
            .await
    }

    async fn turns(&self, chat: &ChatId) -> Result<Vec<Turn>, StoreError> {
        self.count_round_trip();
        let raw: Vec<String> = self
            .client
            .lrange(self.keys(chat).turns, -self.max_turns(), -1)
            .await
            .map_err(redis_error)?;
        decode_turns(raw)
    }

    async fn clear(&self, chat: &ChatId) -> Result<(), StoreError> {
        let ChatKeys { system, turns } = self.keys(chat);
        self.write(
            &self.scripts.clear,
            vec![turns, system],
            vec![self.ttl_arg().to_string()],
        )
        .await
    }
}
