//! One `Config`, read once from the environment at cold start.
//!
//! Every variable is checked before anything is built, and every problem is reported
//! together, so a broken deployment is fixed in one round instead of one variable at a time.
//! Secret values are held as [`SecretString`] and never appear in a message.

use std::fmt;
use std::time::Duration;

use lambda_http::http::HeaderValue;
use secrecy::SecretString;

use crate::auth::Callers;
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
    /// `TOKEN_LIMIT_PER_DAY`: tokens a caller (an address, when open) may spend a UTC day.
    pub token_limit_per_day: Option<u64>,
    /// `PLAYGROUND`: serve the playground page (default true).
    pub playground: bool,
}

/// The models callers may name in OpenAI's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedModels {
    /// `*`: any model upstream serves.
    Any,
    /// These, in the order given.
    Only(Vec<String>),
}

impl AllowedModels {
    /// Parses `ALLOWED_MODELS`: `*`, or model names separated by commas.
    pub fn parse(raw: &str) -> Result<AllowedModels, String> {
        let names: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        match names.as_slice() {
            [star] if star == "*" => Ok(AllowedModels::Any),
            _ if names.iter().any(|n| n == "*") => {
                Err("ALLOWED_MODELS is either * or a list of model names, not both".to_owned())
            }
            [] => Err("ALLOWED_MODELS names no model".to_owned()),
            _ => Ok(AllowedModels::Only(names)),
        }
    }

    pub fn allows(&self, model: &str) -> bool {
        match self {
            AllowedModels::Any => true,
            AllowedModels::Only(models) => models.iter().any(|m| m == model),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Empty for the echo upstream, which needs none.
    pub api_key: SecretString,
    /// An OpenAI-compatible API, or [`ECHO`] for the built-in echo upstream.
    pub base_url: String,
    pub chat_model: String,
    pub vision_model: String,
    pub moderation_model: String,
    /// The whole budget of one upstream call answered whole, retries included.
    pub timeout: Duration,
}

/// `OPENAI_BASE_URL` that selects the built-in echo upstream: no key, no network.
pub const ECHO: &str = "echo";

impl OpenAiConfig {
    pub fn is_echo(&self) -> bool {
        self.base_url == ECHO
    }
}

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
}

impl StoreSettings {
    /// The most turns a read needs to fetch to find `max_history_messages` messages: every
    /// turn holds at least two (a question and its answer).
    pub fn read_turns(&self) -> usize {
        self.max_history_messages.div_ceil(2)
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            key_prefix: "chat-proxy".to_owned(),
            chat_ttl: Some(Duration::from_secs(30 * 24 * 3600)),
            max_history_messages: 100,
            max_chat_bytes: 1024 * 1024,
        }
    }
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

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_MODEL: &str = "gpt-4o-mini";
const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";
const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// A buffered answer sends nothing until it is whole, and API Gateway drops a response that
/// stays silent for 5 minutes (regional endpoint): a whole upstream call fits in 290 s.
const MAX_TIMEOUT_SECONDS: u64 = 290;
/// A stream may last as long as the function (15 minutes), less the time to store the turn.
const DEFAULT_STREAM_TIMEOUT_SECONDS: u64 = 840;
const MAX_STREAM_TIMEOUT_SECONDS: u64 = 890;
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The longest `CHAT_TTL_SECONDS`: ten years. Longer is "forever", which is `0`.
pub const MAX_CHAT_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// `MAX_CHAT_BYTES` stays under Lambda's 6 MB buffered response, so a whole chat can always
/// be read back with `GET /<chat_id>/chat`.
pub const MAX_CHAT_BYTES_LIMIT: usize = 5 * 1024 * 1024;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    /// An empty value counts as unset, as it does in most `.env` tooling, and surrounding
    /// whitespace is dropped: a secret written with `--value file://key.txt` ends in a newline.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Reader {
            lookup: |name: &str| {
                lookup(name)
                    .map(|value| value.trim().to_owned())
                    .filter(|value| !value.is_empty())
            },
            problems: Vec::new(),
        };

        let base_url = env
            .get("OPENAI_BASE_URL")
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let echo = base_url.eq_ignore_ascii_case(ECHO);
        if !(echo || base_url.starts_with("http://") || base_url.starts_with("https://")) {
            env.problem("OPENAI_BASE_URL must start with http:// or https://, or be echo");
        }
        let api_key = match env.get("GPT_API_KEY").or_else(|| env.get("OPENAI_API_KEY")) {
            // The key goes out in `Authorization: Bearer <key>`; one that cannot be a header
            // value would fail every call, so it stops the start instead (never quoted).
            Some(key) if HeaderValue::from_str(&format!("Bearer {key}")).is_err() => {
                env.problem(
                    "GPT_API_KEY holds characters an HTTP header cannot carry (a line break or \
                     another control character inside it?)",
                );
                SecretString::from(String::new())
            }
            Some(key) => SecretString::from(key),
            None if echo => SecretString::from(String::new()),
            None => {
                env.problem(
                    "GPT_API_KEY is required (or OPENAI_API_KEY, or GPT_API_KEY_SSM_PARAMETER / \
                     GPT_API_KEY_SECRET_ARN to read it from AWS)",
                );
                SecretString::from(String::new())
            }
        };
        let openai = OpenAiConfig {
            api_key,
            base_url: if echo {
                ECHO.to_owned()
            } else {
                base_url.trim_end_matches('/').to_owned()
            },
            chat_model: env.text("CHAT_MODEL", DEFAULT_MODEL),
            vision_model: env.text("VISION_MODEL", DEFAULT_MODEL),
            moderation_model: env.text("MODERATION_MODEL", DEFAULT_MODERATION_MODEL),
            timeout: Duration::from_secs(env.number(
                "OPENAI_TIMEOUT_SECONDS",
                MAX_TIMEOUT_SECONDS,
                1..=MAX_TIMEOUT_SECONDS,
            )),
        };

        let redis = redis_target(&mut env);
        let redis_timeout =
            Duration::from_millis(env.number("REDIS_TIMEOUT_MS", 1500, 50..=30_000));
        let redis_ca_file = env.get("REDIS_TLS_CA_FILE").map(std::path::PathBuf::from);
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
        let store = StoreSettings {
            key_prefix,
            chat_ttl: (ttl_seconds > 0).then(|| Duration::from_secs(ttl_seconds)),
            max_history_messages,
            max_chat_bytes,
        };

        let callers = match env.get("PROXY_API_KEYS").map(|raw| Callers::parse(&raw)) {
            None => Callers::default(),
            Some(Ok(callers)) => callers,
            Some(Err(problems)) => {
                env.problems.extend(problems);
                Callers::default()
            }
        };
        let cors = match env.get("CORS_ALLOW_ORIGINS").map(|raw| Cors::parse(&raw)) {
            None => Cors::Off,
            Some(Ok(cors)) => cors,
            Some(Err(problem)) => {
                env.problems.push(problem);
                Cors::Off
            }
        };
        let rate_limit = env.number("RATE_LIMIT_PER_MINUTE", 0, 0..=1_000_000);
        let rate_limit_per_minute = (rate_limit > 0).then_some(rate_limit);

        let stream_timeout = Duration::from_secs(env.number(
            "STREAM_TIMEOUT_SECONDS",
            DEFAULT_STREAM_TIMEOUT_SECONDS,
            1..=MAX_STREAM_TIMEOUT_SECONDS,
        ));
        let keep_alive = Duration::from_secs(env.number("KEEP_ALIVE_SECONDS", 15, 1..=15));
        let allowed_models = match env
            .get("ALLOWED_MODELS")
            .map(|raw| AllowedModels::parse(&raw))
        {
            Some(Ok(allowed)) => allowed,
            Some(Err(problem)) => {
                env.problems.push(problem);
                AllowedModels::Any
            }
            None => {
                let mut models = vec![openai.chat_model.clone()];
                if openai.vision_model != openai.chat_model {
                    models.push(openai.vision_model.clone());
                }
                AllowedModels::Only(models)
            }
        };

        let max_prompt_tokens = env.number("MAX_PROMPT_TOKENS", 32_000, 1_000..=2_000_000);
        let token_limit = env.number("TOKEN_LIMIT_PER_DAY", 0, 0..=u64::from(u32::MAX) * 1_000);
        let token_limit_per_day = (token_limit > 0).then_some(token_limit);

        let playground = env.flag("PLAYGROUND", true);

        let default_system_prompt = env.text("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT);
        let max_body_bytes = env.number(
            "MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES,
            64..=6 * 1024 * 1024,
        );

        if !env.problems.is_empty() {
            return Err(ConfigError {
                problems: env.problems,
            });
        }
        Ok(Config {
            openai,
            redis,
            redis_timeout,
            redis_ca_file,
            store,
            default_system_prompt,
            max_body_bytes,
            callers,
            cors,
            rate_limit_per_minute,
            stream_timeout,
            keep_alive,
            allowed_models,
            max_prompt_tokens,
            token_limit_per_day,
            playground,
        })
    }
}

fn redis_target<F: Fn(&str) -> Option<String>>(env: &mut Reader<F>) -> Option<RedisTarget> {
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

struct Reader<F> {
    lookup: F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn problem(&mut self, message: &str) {
        self.problems.push(message.to_owned());
    }

    /// `true`/`false` (or `1`/`0`, `yes`/`no`), `default` when unset.
    fn flag(&mut self, name: &str, default: bool) -> bool {
        match self
            .get(name)
            .map(|raw| raw.to_ascii_lowercase())
            .as_deref()
        {
            None => default,
            Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(_) => {
                self.problems.push(format!("{name} must be true or false"));
                default
            }
        }
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn number<N>(&mut self, name: &str, default: N, range: std::ops::RangeInclusive<N>) -> N
    where
        N: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.trim().parse::<N>() {
            Ok(value) if range.contains(&value) => value,
            _ => {
                self.problems.push(format!(
                    "{name} must be a whole number from {} to {}, got {raw:?}",
                    range.start(),
                    range.end()
                ));
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_key_is_set() {
        let config = config(&[("GPT_API_KEY", "sk-test")]).unwrap();
        assert_eq!(config.openai.base_url, "https://api.openai.com/v1");
        assert_eq!(config.openai.chat_model, "gpt-4o-mini");
        assert_eq!(config.openai.vision_model, "gpt-4o-mini");
        assert_eq!(config.openai.moderation_model, "omni-moderation-latest");
        assert_eq!(config.openai.timeout, Duration::from_secs(290));
        assert_eq!(config.stream_timeout, Duration::from_secs(840));
        assert_eq!(config.keep_alive, Duration::from_secs(15));
        assert_eq!(config.default_system_prompt, "You are a helpful assistant.");
        assert_eq!(config.store, StoreSettings::default());
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.max_prompt_tokens, 32_000);
        assert_eq!(config.token_limit_per_day, None);
        assert!(config.redis.is_none());
    }

    #[test]
    fn the_echo_upstream_needs_no_key() {
        let config = config(&[("OPENAI_BASE_URL", "echo")]).unwrap();
        assert!(config.openai.is_echo());
        assert!(config.openai.api_key.expose_secret().is_empty());
        let err = config_err(&[("OPENAI_BASE_URL", "ftp://x")]);
        assert!(err.contains("OPENAI_BASE_URL"), "{err}");
    }

    fn config_err(vars: &[(&str, &str)]) -> String {
        config(vars).unwrap_err().to_string()
    }

    #[test]
    fn openai_api_key_is_accepted_in_place_of_gpt_api_key() {
        let config = config(&[("OPENAI_API_KEY", "sk-other")]).unwrap();
        assert_eq!(config.openai.api_key.expose_secret(), "sk-other");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = config(&[
            ("CHAT_TTL_SECONDS", "soon"),
            ("MAX_HISTORY_MESSAGES", "1"),
            ("REDIS_URL", "http://user:hunter2@host"),
            ("REDIS_KEY_PREFIX", "a{b}"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 5, "{text}");
        assert!(text.contains("GPT_API_KEY"));
        assert!(text.contains("CHAT_TTL_SECONDS"));
        assert!(text.contains("MAX_HISTORY_MESSAGES"));
        assert!(text.contains("REDIS_URL"));
        assert!(text.contains("REDIS_KEY_PREFIX"));
        assert!(
            !text.contains("hunter2"),
            "the Redis password leaked: {text}"
        );
    }

    #[test]
    fn callers_cors_and_rate_limit_are_read() {
        let config = config(&[
            ("GPT_API_KEY", "k"),
            ("PROXY_API_KEYS", "alice:sk-a1,bob:sk-b2"),
            ("CORS_ALLOW_ORIGINS", "https://app.example.com"),
            ("RATE_LIMIT_PER_MINUTE", "60"),
        ])
        .unwrap();
        assert!(!config.callers.is_open());
        assert!(config.cors.is_on());
        assert_eq!(config.rate_limit_per_minute, Some(60));
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-a1"), "{debug}");
    }

    #[test]
    fn by_default_the_api_is_open_unlimited_and_without_cors() {
        let config = config(&[("GPT_API_KEY", "k")]).unwrap();
        assert!(config.callers.is_open());
        assert!(!config.cors.is_on());
        assert_eq!(config.rate_limit_per_minute, None);
    }

    #[test]
    fn secrets_lose_a_trailing_newline_from_any_source() {
        let config = config(&[
            ("GPT_API_KEY", "sk-from-file\n"),
            ("REDIS_URL", " redis://localhost:6379\r\n"),
        ])
        .unwrap();
        assert_eq!(config.openai.api_key.expose_secret(), "sk-from-file");
        match config.redis {
            Some(RedisTarget::Url(url)) => {
                assert_eq!(url.expose_secret(), "redis://localhost:6379")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_key_that_cannot_be_a_header_stops_the_start_without_being_quoted() {
        let err = config(&[("GPT_API_KEY", "sk-line-one\nsk-line-two")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("GPT_API_KEY"), "{text}");
        assert!(!text.contains("sk-line"), "the key leaked: {text}");
    }

    #[test]
    fn chat_ttl_is_bounded_at_ten_years() {
        let ten_years = MAX_CHAT_TTL_SECONDS.to_string();
        let config_at_bound = config(&[("GPT_API_KEY", "k"), ("CHAT_TTL_SECONDS", &ten_years)]);
        assert_eq!(
            config_at_bound.unwrap().store.chat_ttl,
            Some(Duration::from_secs(MAX_CHAT_TTL_SECONDS))
        );
        for over in ["315360001", "100000000000000", "18446744073709551615"] {
            let err = config(&[("GPT_API_KEY", "k"), ("CHAT_TTL_SECONDS", over)]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("CHAT_TTL_SECONDS"), "{text}");
            assert!(text.contains(&ten_years), "names the bound: {text}");
        }
    }

    #[test]
    fn max_chat_bytes_is_read_and_bounded() {
        let config_set = config(&[("GPT_API_KEY", "k"), ("MAX_CHAT_BYTES", "65536")]).unwrap();
        assert_eq!(config_set.store.max_chat_bytes, 65536);
        let err = config(&[("GPT_API_KEY", "k"), ("MAX_CHAT_BYTES", "99999999")]).unwrap_err();
        assert!(err.to_string().contains("MAX_CHAT_BYTES"));
    }

    #[test]
    fn allowed_models_default_to_the_configured_ones() {
        let config = config(&[("GPT_API_KEY", "k"), ("VISION_MODEL", "gpt-4o")]).unwrap();
        assert_eq!(
            config.allowed_models,
            AllowedModels::Only(vec!["gpt-4o-mini".into(), "gpt-4o".into()])
        );
        let any = super::tests::config(&[("GPT_API_KEY", "k"), ("ALLOWED_MODELS", "*")]).unwrap();
        assert!(any.allowed_models.allows("o3"));
        let listed =
            super::tests::config(&[("GPT_API_KEY", "k"), ("ALLOWED_MODELS", "a, b")]).unwrap();
        assert!(listed.allowed_models.allows("b") && !listed.allowed_models.allows("c"));
        assert!(AllowedModels::parse("*, a").is_err());
        assert!(AllowedModels::parse(" , ").is_err());
    }

    #[test]
    fn ttl_zero_keeps_chats_forever() {
        let config = config(&[("GPT_API_KEY", "k"), ("CHAT_TTL_SECONDS", "0")]).unwrap();
        assert_eq!(config.store.chat_ttl, None);
    }

    #[test]
    fn redis_parts_default_to_tls_as_upstash_needs() {
        let config = config(&[
            ("GPT_API_KEY", "k"),
            ("REDIS_HOST", "eu1-x.upstash.io"),
            ("REDIS_PASSWORD", "pw"),
        ])
        .unwrap();
        match config.redis {
            Some(RedisTarget::Parts {
                host, port, tls, ..
            }) => {
                assert_eq!(host, "eu1-x.upstash.io");
                assert_eq!(port, 6379);
                assert!(tls);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn redis_tls_false_turns_tls_off() {
        let config = config(&[
            ("GPT_API_KEY", "k"),
            ("REDIS_HOST", "localhost"),
            ("REDIS_PORT", "6380"),
            ("REDIS_TLS", "false"),
        ])
        .unwrap();
        assert!(matches!(
            config.redis,
            Some(RedisTarget::Parts {
                port: 6380,
                tls: false,
                ..
            })
        ));
    }

    #[test]
    fn redis_url_wins_over_parts() {
        let config = config(&[
            ("GPT_API_KEY", "k"),
            ("REDIS_URL", "rediss://default:pw@host:6380"),
            ("REDIS_HOST", "ignored"),
        ])
        .unwrap();
        assert!(matches!(config.redis, Some(RedisTarget::Url(_))));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = config(&[
            ("GPT_API_KEY", "sk-very-secret"),
            ("REDIS_URL", "redis://:hunter2@localhost:6379"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-very-secret"));
        assert!(!debug.contains("hunter2"));
    }
}
