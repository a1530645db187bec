//! The Redis store (fred): one pipelined read and one atomic script per turn.
//!
//! Key scheme, with `P` = `REDIS_KEY_PREFIX`, `ID` = the chat id, and `N` = `P` for an open
//! API or `P:caller:<name>` for a caller of `PROXY_API_KEYS`:
//! - `N:global:system`          string: the global system prompt
//! - `N:chat:{ID}:system`       string: the chat's system prompt
//! - `N:chat:{ID}:turns`        list of JSON [`Turn`]s, oldest first
//! - `N:chat:{ID}:meta`         hash: `bytes` and `messages` (the size of the turns list
//!   and the messages it holds), `window` (the context window's first turn), and the chat's
//!   usage: `turns`, `prompt_tokens`, `completion_tokens`, `cached_tokens`
//! - `N:chat:{ID}:turn:<turn>`  marker that turn `<turn>` was stored (one hour)
//! - `N:chat:{ID}:idem:<hash>`  an `Idempotency-Key` of the chat: held, or its answer (24 h)
//! - `N:usage:{T}:day:<date>`   hash: the caller's tokens that UTC day, overall and per model
//! - `N:usage:{T}:month:<month>` the same for the month
//! - `N:usage:{T}:ip:<ip>:<date>` integer: an open API's tokens from one address that day
//! - `N:usage:{T}:spent:<id>`   marker that request `<id>` was counted (one hour)
//! - `N:usage:{T}:idem:<hash>`  an `Idempotency-Key` of a stateless call
//! - `P:requests:<who>`         hash: the requests counted in the current window of
//!   `RATE_LIMIT_PER_MINUTE`, each by its id, with its place in the count
//!
//! `T` is the tenant's name (`open` for an open API). A chat's keys share the hash tag
//! `{ID}`, and a caller's counters the tag `{T}`, so each group lives in one Cluster slot and
//! one script can write it. Every chat write is a single `EVAL`: atomic like `MULTI`/`EXEC`, but one
//! command on the wire, so a turn costs exactly one round trip to write whatever the client
//! library does with buffering, and no partial write can be left behind by a dropped link.
//! Every script can run twice to the same effect, so fred may send any of them again on a
//! fresh connection after a cut, as it does reads: an append or a count of tokens by its
//! marker, set last so that a script that failed half-way is not taken as done; a claim or
//! a release by the claimant's token; a request's count by the request's id. Each script
//! says why it is safe in its comment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, ListInterface, LuaInterface,
};
use fred::prelude::{Builder, Client, Expiration, FromValue, ReconnectPolicy};
use fred::types::config::{
    Config as FredConfig, ServerConfig, TcpConfig, TlsConnector, UnresponsiveConfig,
};
use secrecy::ExposeSecret;

use super::{
    newest_within, CallerUsage, ChatUsage, Claim, Claimant, IdempotencyKey, KeptAnswer,
    PeriodUsage, RequestCount, Spent, Store, StoreError, Tokens, Turn, TurnContext, TurnExtras,
    ANSWER_SECONDS, RATE_WINDOW,
};
use crate::auth::Tenant;
use crate::clock::UtcDay;
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

/// KEYS: turns, system, meta, the turn's marker, and the idempotency key when ARGV[10] is
/// not empty. ARGV: ttl, turn JSON, max messages, max bytes, marker ttl, new window start
/// (or ''), prompt, completion and cached tokens, the kept answer (or ''), its ttl, the
/// turn's messages. Returns 1 when stored, 0 when the turn's marker says it already was.
///
/// Trims the oldest turns until the chat holds at most max messages and max bytes, keeping
/// the newest turn whole. A chat stored before `meta` had `bytes` and `messages` is counted
/// once, here. Safe to run twice: the marker, set last, says the turn was stored.
const APPEND_TURN: &str = r#"
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local function messages_of(turn)
  local ok, decoded = pcall(cjson.decode, turn)
  if ok and type(decoded) == 'table' and type(decoded.messages) == 'table' and #decoded.messages > 0 then
    return #decoded.messages + 1
  end
  return 2
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], 'window', ARGV[6]) end
redis.call('HINCRBY', KEYS[3], 'turns', 1)
redis.call('HINCRBY', KEYS[3], 'prompt_tokens', ARGV[7])
redis.call('HINCRBY', KEYS[3], 'completion_tokens', ARGV[8])
redis.call('HINCRBY', KEYS[3], 'cached_tokens', ARGV[9])
if ARGV[10] ~= '' then redis.call('SET', KEYS[5], ARGV[10], 'EX', ARGV[11]) end
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes'))
local messages = tonumber(redis.call('HGET', KEYS[3], 'messages'))
local length = redis.call('RPUSH', KEYS[1], ARGV[2])
if bytes == nil or messages == nil then
  bytes, messages = 0, 0
  for _, turn in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    bytes = bytes + #turn
    messages = messages + messages_of(turn)
  end
else
  bytes = bytes + #ARGV[2]
  messages = messages + tonumber(ARGV[12])
end
local max_messages, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
while length > 1 and (messages > max_messages or bytes > max_bytes) do
  local oldest = redis.call('LPOP', KEYS[1])
  bytes = bytes - #oldest
  messages = messages - messages_of(oldest)
  length = length - 1
end
redis.call('HSET', KEYS[3], 'bytes', bytes, 'messages', messages)
touch(1, 3)
redis.call('SET', KEYS[4], '1', 'EX', ARGV[5])
return 1
"#;

/// KEYS: system, turns, meta. ARGV: ttl, prompt. Safe to run twice: it sets the same
/// prompt and the same expiry again (a run sent again after another request set a prompt
/// meanwhile sets this one, as it would have if sent a moment later: the two overlapped).
const SET_CHAT_PROMPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[2])
touch(1, 3)
return 1
"#;

/// KEYS: turns, system, meta. ARGV: ttl. The chat's usage stays. Safe to run twice: the
/// chat is as empty after the second run as after the first (a run sent again after a turn
/// was stored meanwhile clears that turn too, as a clear sent a moment later would have:
/// the two overlapped).
const CLEAR: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[3], 'bytes', 0, 'messages', 0)
redis.call('HDEL', KEYS[3], 'window')
touch(1, 3)
return 1
"#;

/// KEYS: the caller's window. ARGV: the window in milliseconds, the request's id, the limit.
/// The first request opens a window; returns the count including this one and the
/// milliseconds left in the window. Each request is kept by its id with its place in the
/// count, so a run sent again finds it and answers the same count; past the limit nothing
/// more is kept (the window holds at most `limit` ids) and the count is `limit + 1`.
const COUNT_REQUEST: &str = r#"
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))
if count == nil then
  count = redis.call('HLEN', KEYS[1]) + 1
  if count <= tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], ARGV[2], count) end
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"#;

/// KEYS: the request's marker, the day's and the month's counters, then the address's day
/// counter when ARGV[7] is '1', then the idempotency key when ARGV[8] is not empty. ARGV:
/// model, prompt, completion and cached tokens, the day's and the month's ttl, the address
/// flag, the kept answer (or ''), its ttl, the marker's ttl. Safe to run twice: the marker,
/// set last, says the request was counted.
const ADD_USAGE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local total = tonumber(ARGV[2]) + tonumber(ARGV[3])
local model = 'model:' .. ARGV[1] .. ':'
for i = 2, 3 do
  for _, prefix in ipairs({'', model}) do
    redis.call('HINCRBY', KEYS[i], prefix .. 'prompt_tokens', ARGV[2])
    redis.call('HINCRBY', KEYS[i], prefix .. 'completion_tokens', ARGV[3])
    redis.call('HINCRBY', KEYS[i], prefix .. 'cached_tokens', ARGV[4])
    redis.call('HINCRBY', KEYS[i], prefix .. 'total_tokens', total)
  end
  redis.call('EXPIRE', KEYS[i], ARGV[i + 3])
end
local next = 4
if ARGV[7] == '1' then
  redis.call('INCRBY', KEYS[4], total)
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  next = 5
end
if ARGV[8] ~= '' then redis.call('SET', KEYS[next], ARGV[8], 'EX', ARGV[9]) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[10])
return 1
"#;

/// KEYS: the idempotency key. ARGV: the claim (`pending`, the request's fingerprint and its
/// token, a line each), how long to hold it. Returns '' when this request now holds the
/// key, else what the key holds. Safe to run twice: a run sent again finds its own claim
/// and answers '' again.
const CLAIM: &str = r#"
local found = redis.call('GET', KEYS[1])
if found == ARGV[1] then return '' end
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ''
"#;

/// KEYS: the idempotency key. ARGV: the claim to free. Deletes the key only while it holds
/// that claim: never another request's claim, nor an answer. Safe to run twice: the second
/// run finds the claim gone (or someone else's) and leaves it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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
    add_usage: String,
    claim: String,
    release: String,
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
                add_usage: ADD_USAGE.to_owned(),
                claim: CLAIM.to_owned(),
                release: RELEASE.to_owned(),
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

    /// `N:usage:{T}`, the start of every counter key of `tenant`.
    fn usage_base(&self, tenant: &Tenant) -> String {
        format!("{}:usage:{{{}}}", self.namespace(tenant), tenant.name())
    }

    fn idempotency_key(&self, tenant: &Tenant, key: &IdempotencyKey) -> String {
        match &key.chat {
            Some(chat) => format!("{}:idem:{}", self.keys(tenant, chat).base, key.hash),
            None => format!("{}:idem:{}", self.usage_base(tenant), key.hash),
        }
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

    /// How many of a chat's newest turns a read fetches (negated, for LRANGE).
    fn read_from(&self) -> i64 {
        -i64::try_from(self.settings.read_turns()).unwrap_or(i64::MAX)
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
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys(tenant, chat);
        // Sent together without waiting for each other: one round trip (the relay test
        // `a_turn_waits_for_two_round_trips_on_the_wire_whatever_the_history_length` measures
        // it); this measured 3-4% faster per turn than a fred pipeline (BENCHMARKS.md).
        let global_key = self.global_key(tenant);
        let (global_prompt, chat_prompt, history, window_start) = tokio::join!(
            self.client.get::<Option<String>, _>(&global_key),
            self.client.get::<Option<String>, _>(&system),
            self.client
                .lrange::<Vec<String>, _>(&turns, self.read_from(), -1),
            self.client.hget::<Option<String>, _, _>(&meta, "window"),
        );
        let (global_prompt, chat_prompt, history, window_start) = (
            global_prompt.map_err(|e| self.error(e))?,
            chat_prompt.map_err(|e| self.error(e))?,
            history.map_err(|e| self.error(e))?,
            window_start.map_err(|e| self.error(e))?,
        );
        Ok(TurnContext {
            global_prompt,
            chat_prompt,
            history: newest_within(decode_turns(history)?, self.settings.max_history_messages),
            window_start,
        })
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
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
        let tokens = turn.tokens.unwrap_or_default();
        let mut keys = vec![turns, system, meta, marker];
        let answer = match extras.answer {
            Some(kept) => {
                keys.push(self.idempotency_key(tenant, kept.key));
                answered(kept)
            }
            None => String::new(),
        };
        let args = vec![
            self.ttl_arg(),
            json,
            self.settings.max_history_messages.to_string(),
            self.settings.max_chat_bytes.to_string(),
            TURN_MARKER_SECONDS.to_string(),
            extras.window_start.unwrap_or_default().to_owned(),
            tokens.prompt.to_string(),
            tokens.completion.to_string(),
            tokens.cached.to_string(),
            answer,
            ANSWER_SECONDS.to_string(),
            turn.messages().to_string(),
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
            .lrange(self.keys(tenant, chat).turns, self.read_from(), -1)
            .await
            .map_err(|e| self.error(e))?;
        Ok(newest_within(
            decode_turns(raw)?,
            self.settings.max_history_messages,
        ))
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

    async fn chat_usage(&self, tenant: &Tenant, chat: &ChatId) -> Result<ChatUsage, StoreError> {
        let fields = [
            "turns",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
        ];
        let values: Vec<Option<u64>> = self
            .client
            .hmget(self.keys(tenant, chat).meta, fields.to_vec())
            .await
            .map_err(|e| self.error(e))?;
        let value = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
        Ok(ChatUsage {
            turns: value(0),
            prompt_tokens: value(1),
            completion_tokens: value(2),
            cached_tokens: value(3),
            total_tokens: value(1) + value(2),
        })
    }

    async fn add_usage(&self, tenant: &Tenant, spent: Spent<'_>) -> Result<(), StoreError> {
        let base = self.usage_base(tenant);
        let mut keys = vec![
            format!("{base}:spent:{}", spent.id),
            format!("{base}:day:{}", spent.day.date),
            format!("{base}:month:{}", spent.day.month),
        ];
        if let Some(ip) = spent.ip {
            keys.push(format!("{base}:ip:{ip}:{}", spent.day.date));
        }
        let answer = match spent.answer {
            Some(kept) => {
                keys.push(self.idempotency_key(tenant, kept.key));
                answered(kept)
            }
            None => String::new(),
        };
        // A day's counters outlive the day by a day, a month's by a month.
        let day_ttl = spent.day.seconds_left + 86_400;
        let month_ttl = 62 * 86_400;
        let args = vec![
            spent.model.to_owned(),
            spent.prompt_tokens.to_string(),
            spent.completion_tokens.to_string(),
            spent.cached_tokens.to_string(),
            day_ttl.to_string(),
            month_ttl.to_string(),
            if spent.ip.is_some() { "1" } else { "0" }.to_owned(),
            answer,
            ANSWER_SECONDS.to_string(),
            TURN_MARKER_SECONDS.to_string(),
        ];
        self.eval::<i64>(&self.scripts.add_usage, keys, args)
            .await
            .map(drop)
    }

    async fn caller_usage(&self, tenant: &Tenant, day: &UtcDay) -> Result<CallerUsage, StoreError> {
        let base = self.usage_base(tenant);
        let (today, month) = tokio::join!(
            self.client
                .hgetall::<HashMap<String, u64>, _>(format!("{base}:day:{}", day.date)),
            self.client
                .hgetall::<HashMap<String, u64>, _>(format!("{base}:month:{}", day.month)),
        );
        Ok(CallerUsage {
            day: period(today.map_err(|e| self.error(e))?),
            month: period(month.map_err(|e| self.error(e))?),
        })
    }

    async fn tokens_spent(
        &self,
        tenant: &Tenant,
        ip: Option<&str>,
        day: &UtcDay,
    ) -> Result<u64, StoreError> {
        let base = self.usage_base(tenant);
        let spent: Option<u64> = match ip {
            Some(ip) => {
                self.client
                    .get(format!("{base}:ip:{ip}:{}", day.date))
                    .await
            }
            None => {
                self.client
                    .hget(format!("{base}:day:{}", day.date), "total_tokens")
                    .await
            }
        }
        .map_err(|e| self.error(e))?;
        Ok(spent.unwrap_or(0))
    }

    async fn claim(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<Claim, StoreError> {
        let hold = claimant.hold.as_secs().max(1).to_string();
        let found: String = self
            .eval(
                &self.scripts.claim,
                vec![self.idempotency_key(tenant, key)],
                vec![pending(claimant), hold],
            )
            .await?;
        parse_claim(&found)
    }

    async fn release(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<(), StoreError> {
        self.eval::<i64>(
            &self.scripts.release,
            vec![self.idempotency_key(tenant, key)],
            vec![pending(claimant)],
        )
        .await
        .map(drop)
    }

    async fn count_request(
        &self,
        who: &str,
        request: &str,
        limit: u64,
    ) -> Result<RequestCount, StoreError> {
        let key = format!("{}:requests:{who}", self.settings.key_prefix);
        let args = vec![
            RATE_WINDOW.as_millis().to_string(),
            request.to_owned(),
            limit.to_string(),
        ];
        let (count, left_ms): (u64, u64) = self
            .eval(&self.scripts.count_request, vec![key], args)
            .await?;
        Ok(RequestCount {
            count,
            // Whole seconds, rounded up: a window in its last half second still says 1.
            resets_in: left_ms.div_ceil(1000).max(1),
        })
    }
}

/// An answered key's value: `answered`, the fingerprint and the answer, a line each (the
/// fingerprint is hex; the answer, JSON, may hold anything).
fn answered(kept: KeptAnswer<'_>) -> String {
    format!("answered\n{}\n{}", kept.fingerprint, kept.answer)
}

/// A held key's value: `pending`, the fingerprint and the claimant's token, a line each.
fn pending(claimant: Claimant<'_>) -> String {
    format!("pending\n{}\n{}", claimant.fingerprint, claimant.token)
}

fn parse_claim(found: &str) -> Result<Claim, StoreError> {
    if found.is_empty() {
        return Ok(Claim::Claimed);
    }
    let mut lines = found.splitn(3, '\n');
    match (lines.next(), lines.next(), lines.next()) {
        // Claims made before claims had tokens have no third line.
        (Some("pending"), Some(fingerprint), _) => Ok(Claim::InProgress {
            fingerprint: fingerprint.to_owned(),
        }),
        (Some("answered"), Some(fingerprint), Some(answer)) => Ok(Claim::Answered {
            fingerprint: fingerprint.to_owned(),
            answer: answer.to_owned(),
        }),
        _ => Err(StoreError::new(
            "an idempotency key holds something the proxy did not write",
        )),
    }
}

/// A period's counters from its hash: the totals, and `model:<name>:<counter>` per model.
fn period(fields: HashMap<String, u64>) -> PeriodUsage {
    let mut usage = PeriodUsage::default();
    for (field, value) in fields {
        let (tokens, counter) = match field
            .strip_prefix("model:")
            .and_then(|f| f.rsplit_once(':'))
        {
            Some((model, counter)) => (usage.models.entry(model.to_owned()).or_default(), counter),
            None => (&mut usage.total, field.as_str()),
        };
        add_counter(tokens, counter, value);
    }
    usage
}

fn add_counter(tokens: &mut Tokens, counter: &str, value: u64) {
    match counter {
        "prompt_tokens" => tokens.prompt_tokens = value,
        "completion_tokens" => tokens.completion_tokens = value,
        "cached_tokens" => tokens.cached_tokens = value,
        "total_tokens" => tokens.total_tokens = value,
        _ => {}
    }
}
