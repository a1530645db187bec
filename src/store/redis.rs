//! The Redis store (fred): one pipelined read and one atomic script per turn.
//!
//! Key scheme, with `P` = `REDIS_KEY_PREFIX`, `ID` = the chat id, and `N` = `P` for an open
//! API or `P:caller:<name>` for a caller of `PROXY_API_KEYS`:
//! - `N:global:system`          string: the global system prompt
//! - `N:chat:{ID}:system`       string: the chat's system prompt
//! - `N:chat:{ID}:turns`        list of JSON [`Turn`]s, oldest first
//! - `N:chat:{ID}:meta`         hash: `bytes`, the size of the turns list
//! - `N:chat:{ID}:turn:<turn>`  marker that turn `<turn>` was stored (one hour)
//! - `P:rate:<who>`             integer: requests in the current window of `RATE_LIMIT_PER_MINUTE`
//!
//! A chat's keys share the hash tag `{ID}`, so they live in one Cluster slot and one script
//! can write them all. Every chat write is a single `EVAL`: atomic like `MULTI`/`EXEC`, but one
//! command on the wire, so a turn costs exactly one round trip to write whatever the client
//! library does with buffering, and no partial write can be left behind by a dropped link.
//! Every script can run twice to the same effect (the turn's marker sees to it for appends),
//! so fred may send any of them again on a fresh connection after a cut, as it does reads.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::interfaces::{ClientLike, EventInterface, KeysInterface, ListInterface, LuaInterface};
use fred::prelude::{Builder, Client, Expiration, FromValue, ReconnectPolicy};
use fred::types::config::{
    Config as FredConfig, ServerConfig, TcpConfig, TlsConnector, UnresponsiveConfig,
};
use secrecy::ExposeSecret;

use super::{RequestCount, Store, StoreError, Turn, TurnContext, RATE_WINDOW};
use crate::auth::Tenant;
use crate::config::{RedisTarget, StoreSettings};
use crate::routes::ChatId;

/// Renews the expiry of every key named in KEYS, or removes it when ARGV[1] is "0".
/// Prepended to each chat script below, which pass their TTL as ARGV[1]. The TTL reaches
/// EXPIRE as the string it was given: a Lua number can be formatted as `1e+08`, which some
/// Redis versions (7.2.0 to 7.2.4) refuse.
const TOUCH: &str = r#"
local function touch(first, last)
  for i = first, last do
    if ARGV[1] ~= '0' then redis.call('EXPIRE', KEYS[i], ARGV[1]) else redis.call('PERSIST', KEYS[i]) end
  end
end
"#;

/// KEYS: turns, system, meta, the turn's marker. ARGV: ttl, turn JSON, max turns, max bytes,
/// marker ttl. Returns 1 when stored, 0 when the turn's marker says it already was.
///
/// A chat stored before `meta` existed has no `bytes` yet: it is counted once, here.
const APPEND_TURN: &str = r#"
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[5]) then return 0 end
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes'))
local length = redis.call('RPUSH', KEYS[1], ARGV[2])
if bytes == nil then
  bytes = 0
  for _, turn in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do bytes = bytes + #turn end
else
  bytes = bytes + #ARGV[2]
end
local max_turns, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
while length > 1 and (length > max_turns or bytes > max_bytes) do
  bytes = bytes - #redis.call('LPOP', KEYS[1])
  length = length - 1
end
redis.call('HSET', KEYS[3], 'bytes', bytes)
touch(1, 3)
return 1
"#;

/// KEYS: system, turns, meta. ARGV: ttl, prompt.
const SET_CHAT_PROMPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[2])
touch(1, 3)
return 1
"#;

/// KEYS: turns, system, meta. ARGV: ttl.
const CLEAR: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[3], 'bytes', 0)
touch(1, 3)
return 1
"#;

/// KEYS: the caller's counter. ARGV: the window in milliseconds. The first request opens a
/// window; returns the count including this one and the milliseconds left in the window.
const COUNT_REQUEST: &str = r#"
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"#;

/// How long a turn's marker lives: far longer than any retry of its write, which happens
/// within the invocation that made the turn (at most 15 minutes).
const TURN_MARKER_SECONDS: u64 = 3600;

pub struct RedisStore {
    client: Client,
    settings: StoreSettings,
    scripts: Scripts,
    /// The newest connection failure (refused, TLS, auth), so that a command that times out
    /// while Redis is unreachable can say why.
    last_connection_error: Arc<Mutex<Option<String>>>,
}

struct Scripts {
    append_turn: String,
    set_chat_prompt: String,
    clear: String,
    count_request: String,
}

struct ChatKeys {
    system: String,
    turns: String,
    meta: String,
    /// `N:chat:{ID}`, the start of every key of the chat.
    base: String,
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
        ca_file: Option<&Path>,
    ) -> Result<RedisStore, StoreError> {
        let mut config = fred_config(target)?;
        if let Some(path) = ca_file {
            config.tls = Some(tls_trusting(path)?.into());
        }
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = timeout;
                connection.internal_command_timeout = timeout;
                // Any command may be sent again on a fresh connection after a cut: reads, and
                // writes, which are all idempotent scripts.
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
        let last_connection_error = Arc::new(Mutex::new(None));
        let remember = last_connection_error.clone();
        // Event handlers run on their own task; the handles are dropped on purpose, the tasks
        // live as long as the client.
        let _errors = client.on_error(move |(error, server)| {
            let at = server
                .map(|s| format!(" ({}:{})", s.host, s.port))
                .unwrap_or_default();
            tracing::warn!(error = %error, "Redis connection failed{at}");
            if let Ok(mut last) = remember.lock() {
                *last = Some(error.to_string());
            }
            async { Ok(()) }
        });
        let forget = last_connection_error.clone();
        let _reconnects = client.on_reconnect(move |_server| {
            if let Ok(mut last) = forget.lock() {
                *last = None;
            }
            async { Ok(()) }
        });
        let _connection = client.connect();

        Ok(RedisStore {
            client,
            settings,
            last_connection_error,
            scripts: Scripts {
                append_turn: format!("{TOUCH}{APPEND_TURN}"),
                set_chat_prompt: format!("{TOUCH}{SET_CHAT_PROMPT}"),
                clear: format!("{TOUCH}{CLEAR}"),
                count_request: COUNT_REQUEST.to_owned(),
            },
        })
    }

    /// Waits until the client is connected, or `timeout` passes. For tests and benchmarks.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.client.wait_for_connect())
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// The first part of every key of `tenant`'s data.
    fn namespace(&self, tenant: &Tenant) -> String {
        let prefix = &self.settings.key_prefix;
        match tenant {
            Tenant::Open => prefix.clone(),
            Tenant::Caller(name) => format!("{prefix}:caller:{name}"),
        }
    }

    fn global_key(&self, tenant: &Tenant) -> String {
        format!("{}:global:system", self.namespace(tenant))
    }

    fn keys(&self, tenant: &Tenant, chat: &ChatId) -> ChatKeys {
        let namespace = self.namespace(tenant);
        let id = chat.as_str();
        let base = format!("{namespace}:chat:{{{id}}}");
        ChatKeys {
            system: format!("{base}:system"),
            turns: format!("{base}:turns"),
            meta: format!("{base}:meta"),
            base,
        }
    }

    /// A failed command's error, with the last connection failure when there was one: a
    /// timeout alone does not say that the certificate was refused.
    fn error(&self, error: fred::error::Error) -> StoreError {
        let last = self
            .last_connection_error
            .lock()
            .ok()
            .and_then(|last| last.clone());
        match last {
            Some(cause) => {
                StoreError::new(format!("redis: {error} (last connection error: {cause})"))
            }
            None => StoreError::new(format!("redis: {error}")),
        }
    }

    fn ttl_arg(&self) -> String {
        self.settings
            .chat_ttl
            .map_or(0, |ttl| ttl.as_secs())
            .to_string()
    }

    fn max_turns(&self) -> i64 {
        i64::try_from(self.settings.max_turns()).unwrap_or(i64::MAX)
    }

    async fn eval<R: FromValue>(
        &self,
        script: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        self.client
            .eval(script, keys, args)
            .await
            .map_err(|e| self.error(e))
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

/// A TLS setup that trusts exactly the certificates in the PEM file at `path`.
fn tls_trusting(path: &Path) -> Result<TlsConnector, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let unreadable =
        |e: &dyn std::fmt::Display| StoreError::new(format!("cannot read REDIS_TLS_CA_FILE: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        roots
            .add(certificate.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(StoreError::new("REDIS_TLS_CA_FILE holds no certificate"));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config))
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
    async fn global_prompt(&self, tenant: &Tenant) -> Result<Option<String>, StoreError> {
        self.client
            .get(self.global_key(tenant))
            .await
            .map_err(|e| self.error(e))
    }

    async fn set_global_prompt(&self, tenant: &Tenant, content: &str) -> Result<(), StoreError> {
        self.client
            .set(
                self.global_key(tenant),
                content,
                None::<Expiration>,
                None,
                false,
            )
            .await
            .map_err(|e| self.error(e))
    }

    async fn chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError> {
        self.client
            .get(self.keys(tenant, chat).system)
            .await
            .map_err(|e| self.error(e))
    }

    async fn set_chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        content: &str,
    ) -> Result<(), StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys(tenant, chat);
        let args = vec![self.ttl_arg(), content.to_owned()];
        self.eval(
            &self.scripts.set_chat_prompt,
            vec![system, turns, meta],
            args,
        )
        .await
    }

    async fn turn_context(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<TurnContext, StoreError> {
        let ChatKeys { system, turns, .. } = self.keys(tenant, chat);
        // Sent together without waiting for each other: one round trip. As concurrent
        // commands fred writes all three in a single socket write (seen with strace); this
        // measured 3-4% faster per turn than a fred pipeline (BENCHMARKS.md).
        let global_key = self.global_key(tenant);
        let (global_prompt, chat_prompt, history) = tokio::join!(
            self.client.get::<Option<String>, _>(&global_key),
            self.client.get::<Option<String>, _>(&system),
            self.client
                .lrange::<Vec<String>, _>(&turns, -self.max_turns(), -1),
        );
        let (global_prompt, chat_prompt, history) = (
            global_prompt.map_err(|e| self.error(e))?,
            chat_prompt.map_err(|e| self.error(e))?,
            history.map_err(|e| self.error(e))?,
        );
        Ok(TurnContext {
            global_prompt,
            chat_prompt,
            history: decode_turns(history)?,
        })
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            base,
        } = self.keys(tenant, chat);
        let json = serde_json::to_string(turn)
            .map_err(|e| StoreError::new(format!("cannot encode a turn: {e}")))?;
        // A turn without an id (never made by this version) gets one for its marker alone.
        let id = turn.id.clone().unwrap_or_else(Turn::new_id);
        let marker = format!("{base}:turn:{id}");
        let keys = vec![turns, system, meta, marker];
        let args = vec![
            self.ttl_arg(),
            json,
            self.max_turns().to_string(),
            self.settings.max_chat_bytes.to_string(),
            TURN_MARKER_SECONDS.to_string(),
        ];
        // The answer behind this turn is paid for: a write that timed out (and may yet run)
        // is sent once more, which the marker makes safe.
        let first = self
            .eval::<i64>(&self.scripts.append_turn, keys.clone(), args.clone())
            .await;
        match first {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "storing a turn failed; sending the write once more");
                self.eval::<i64>(&self.scripts.append_turn, keys, args)
                    .await
                    .map(drop)
            }
        }
    }

    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError> {
        let raw: Vec<String> = self
            .client
            .lrange(self.keys(tenant, chat).turns, -self.max_turns(), -1)
            .await
            .map_err(|e| self.error(e))?;
        decode_turns(raw)
    }

    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys(tenant, chat);
        self.eval(
            &self.scripts.clear,
            vec![turns, system, meta],
            vec![self.ttl_arg()],
        )
        .await
    }

    async fn count_request(&self, who: &str) -> Result<RequestCount, StoreError> {
        let key = format!("{}:rate:{who}", self.settings.key_prefix);
        let window = RATE_WINDOW.as_millis().to_string();
        let (count, left_ms): (u64, u64) = self
            .eval(&self.scripts.count_request, vec![key], vec![window])
            .await?;
        Ok(RequestCount {
            count,
            // Whole seconds, rounded up: a window in its last half second still says 1.
            resets_in: left_ms.div_ceil(1000).max(1),
        })
    }
}
