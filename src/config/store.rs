//! The store's settings: where Redis is and how to reach it, and how chats are kept.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::reader::Reader;

/// Where Redis is. The URL form may carry a password, so it is a secret as a whole.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// `redis://`, `rediss://`, `redis-cluster://` or `rediss-cluster://`.
    Url(SecretString),
    /// The older proxy's `REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD` form.
    Parts {
        host: String,
        port: u16,
        password: Option<SecretString>,
        tls: bool,
    },
}

impl RedisTarget {
    /// Where it is, as a log line may say it: the address without its password or user.
    pub fn describe(&self) -> String {
        use secrecy::ExposeSecret;
        match self {
            RedisTarget::Url(url) => match url::Url::parse(url.expose_secret()) {
                Ok(url) => {
                    let host = url.host_str().unwrap_or("?");
                    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                    let hidden = if url.password().is_some() { "***@" } else { "" };
                    format!("{}://{hidden}{host}{port}", url.scheme())
                }
                Err(_) => "an unreadable REDIS_URL".to_owned(),
            },
            RedisTarget::Parts {
                host,
                port,
                password,
                tls,
            } => {
                let scheme = if *tls { "rediss" } else { "redis" };
                let hidden = if password.is_some() { "***@" } else { "" };
                format!("{scheme}://{hidden}{host}:{port}")
            }
        }
    }
}

/// How chats are kept, whichever store keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Prefix of every key; never contains `{` or `}` (they would break the hash tag).
    pub key_prefix: String,
    /// A chat's keys expire this long after its last write; `None` keeps chats forever.
    pub chat_ttl: Option<Duration>,
    /// How many messages (user and assistant) a chat keeps and sends upstream.
    pub max_history_messages: usize,
    /// How many bytes of turns a chat keeps: the oldest turns go first, the newest stays.
    pub max_chat_bytes: usize,
    /// A temporary chat's keys expire this long after its last write (never longer than
    /// `chat_ttl`).
    pub temporary_ttl: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            key_prefix: "chat-proxy".to_owned(),
            chat_ttl: Some(Duration::from_secs(30 * 24 * 3600)),
            max_history_messages: 100,
            max_chat_bytes: 1024 * 1024,
            temporary_ttl: Duration::from_secs(TEMPORARY_CHAT_SECONDS),
        }
    }
}

/// The longest `CHAT_TTL_SECONDS`: ten years. Longer is "forever", which is `0`.
pub const MAX_CHAT_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// `MAX_CHAT_BYTES` stays under Lambda's 6 MB buffered response, so a whole chat can always
/// be read back with `GET /<chat_id>/chat`.
pub const MAX_CHAT_BYTES_LIMIT: usize = 5 * 1024 * 1024;

/// What the store's part of the environment says.
pub(super) struct Store {
    pub redis: Option<RedisTarget>,
    pub redis_timeout: Duration,
    pub redis_ca_file: Option<PathBuf>,
    pub store: StoreSettings,
    /// `SHARE_TTL_SECONDS` and `SHARE_MAX_TTL_SECONDS`: how long a read-only link lives by
    /// default, and at most.
    pub share_ttl: (u64, u64),
}

/// A temporary chat lives an hour after its last write unless configured otherwise.
const TEMPORARY_CHAT_SECONDS: u64 = 3600;

/// A link lives 30 days unless asked otherwise, and at most a year.
const SHARE_TTL_SECONDS: u64 = 30 * 24 * 3600;
const SHARE_MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

pub(super) fn read(env: &mut Reader<'_>) -> Store {
    let redis = redis_target(env);
    let redis_timeout = Duration::from_millis(env.number("REDIS_TIMEOUT_MS", 1500, 50..=30_000));
    let redis_ca_file = env.get("REDIS_TLS_CA_FILE").map(PathBuf::from);
    if let Some(path) = &redis_ca_file {
        if !path.is_file() {
            env.problem("REDIS_TLS_CA_FILE does not name a readable file");
        }
    }

    let defaults = StoreSettings::default();
    let key_prefix = env.text("REDIS_KEY_PREFIX", &defaults.key_prefix);
    if key_prefix.contains(['{', '}']) {
        env.problem(
            "REDIS_KEY_PREFIX must not contain '{' or '}' (they are Redis Cluster hash tags)",
        );
    }
    let default_ttl = defaults.chat_ttl.map_or(0, |ttl| ttl.as_secs());
    let ttl_seconds = env.number("CHAT_TTL_SECONDS", default_ttl, 0..=MAX_CHAT_TTL_SECONDS);
    let max_history_messages = env.number(
        "MAX_HISTORY_MESSAGES",
        defaults.max_history_messages,
        2..=100_000,
    );
    let max_chat_bytes = env.number(
        "MAX_CHAT_BYTES",
        defaults.max_chat_bytes,
        4096..=MAX_CHAT_BYTES_LIMIT,
    );
    let share_max = env.number(
        "SHARE_MAX_TTL_SECONDS",
        SHARE_MAX_TTL_SECONDS,
        60..=MAX_CHAT_TTL_SECONDS,
    );
    let share_ttl = env.number(
        "SHARE_TTL_SECONDS",
        SHARE_TTL_SECONDS.min(share_max),
        60..=share_max,
    );
    // A temporary chat never outlives the chats that are kept.
    let temporary_seconds = env
        .number(
            "TEMPORARY_CHAT_SECONDS",
            TEMPORARY_CHAT_SECONDS,
            1..=MAX_CHAT_TTL_SECONDS,
        )
        .min(if ttl_seconds > 0 {
            ttl_seconds
        } else {
            u64::MAX
        });
    Store {
        redis,
        redis_timeout,
        redis_ca_file,
        share_ttl: (share_ttl, share_max),
        store: StoreSettings {
            key_prefix,
            chat_ttl: (ttl_seconds > 0).then(|| Duration::from_secs(ttl_seconds)),
            max_history_messages,
            max_chat_bytes,
            temporary_ttl: Duration::from_secs(temporary_seconds),
        },
    }
}

fn redis_target(env: &mut Reader<'_>) -> Option<RedisTarget> {
    if let Some(url) = env.get("REDIS_URL") {
        let known = [
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
        ];
        if !known.iter().any(|scheme| url.starts_with(scheme)) {
            // The URL may hold a password: name the variable, never echo it.
            env.problem("REDIS_URL must start with redis://, rediss://, redis-cluster:// or rediss-cluster://");
        } else if fred::types::config::Config::from_url(&url).is_err() {
            env.problem("REDIS_URL is not a valid Redis URL");
        }
        return Some(RedisTarget::Url(SecretString::from(url)));
    }
    let host = env.get("REDIS_HOST")?;
    let port = env.number("REDIS_PORT", 6379, 1..=u16::MAX);
    let tls = env.flag("REDIS_TLS", true);
    Some(RedisTarget::Parts {
        host,
        port,
        password: env.get("REDIS_PASSWORD").map(SecretString::from),
        tls,
    })
}
