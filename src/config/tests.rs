//! The configuration as the environment gives it: defaults, bounds, every problem at once.

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
    let listed = super::tests::config(&[("GPT_API_KEY", "k"), ("ALLOWED_MODELS", "a, b")]).unwrap();
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

#[test]
fn seal_keys_are_read_and_a_malformed_one_stops_the_start_without_being_quoted() {
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let both = format!("new:{key},old:{key}");
    let sealed = config(&[("GPT_API_KEY", "sk-x"), ("SEAL_KEYS", &both)]).unwrap();
    assert_eq!(sealed.seal_keys.unwrap().sealing_id(), "new");
    assert!(config(&[("GPT_API_KEY", "sk-x")])
        .unwrap()
        .seal_keys
        .is_none());
    let short = "c2hvcnQ=";
    for (keys, problem) in [
        (format!("k1:{short}"), "5 bytes"),
        (format!("k1:{key},k1:{key}"), "given twice"),
        ("k1:%%%".to_owned(), "not valid base64"),
    ] {
        let error = config_err(&[("GPT_API_KEY", "sk-x"), ("SEAL_KEYS", &keys)]);
        assert!(
            error.contains("SEAL_KEYS") && error.contains(problem),
            "{error}"
        );
        assert!(!error.contains(key) && !error.contains(short), "{error}");
    }
}

#[test]
fn redis_is_described_by_its_address_never_its_password() {
    let described = |vars: &[(&str, &str)]| {
        let config = config(vars).unwrap();
        config.redis.map(|redis| redis.describe())
    };
    let key = ("GPT_API_KEY", "sk-test");
    assert_eq!(
        described(&[
            key,
            ("REDIS_URL", "rediss://default:hunter2@cache.example:6380")
        ]),
        Some("rediss://***@cache.example:6380".to_owned())
    );
    assert_eq!(
        described(&[key, ("REDIS_URL", "redis-cluster://127.0.0.1:7000")]),
        Some("redis-cluster://127.0.0.1:7000".to_owned())
    );
    assert_eq!(
        described(&[
            key,
            ("REDIS_HOST", "cache.example"),
            ("REDIS_PASSWORD", "hunter2"),
        ]),
        Some("rediss://***@cache.example:6379".to_owned())
    );
}

#[test]
fn compaction_is_off_unless_compact_at_tokens_is_set_within_the_budget() {
    let off = config(&[("GPT_API_KEY", "k")]).unwrap();
    assert_eq!(off.compaction, None);
    let zero = config(&[("GPT_API_KEY", "k"), ("COMPACT_AT_TOKENS", "0")]).unwrap();
    assert_eq!(zero.compaction, None);
    let on = config(&[
        ("GPT_API_KEY", "k"),
        ("MAX_PROMPT_TOKENS", "8000"),
        ("COMPACT_AT_TOKENS", "6000"),
        ("COMPACT_MODEL", "gpt-4.1-nano"),
    ])
    .unwrap();
    let compaction = on.compaction.unwrap();
    assert_eq!(compaction.at_tokens, 6000);
    assert_eq!(compaction.model.as_deref(), Some("gpt-4.1-nano"));
    assert_eq!(compaction.prompt, crate::config::DEFAULT_COMPACT_PROMPT);
    for (at, bound) in [("100", "500"), ("9000", "8000"), ("many", "8000")] {
        let err = config(&[
            ("GPT_API_KEY", "k"),
            ("MAX_PROMPT_TOKENS", "8000"),
            ("COMPACT_AT_TOKENS", at),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("COMPACT_AT_TOKENS"), "{err}");
        assert!(err.contains(bound), "names the bound: {err}");
    }
}

#[test]
fn share_links_live_30_days_by_default_and_at_most_the_maximum() {
    let defaults = config(&[("GPT_API_KEY", "k")]).unwrap();
    assert_eq!(defaults.share_ttl, (30 * 24 * 3600, 365 * 24 * 3600));
    let set = config(&[
        ("GPT_API_KEY", "k"),
        ("SHARE_TTL_SECONDS", "3600"),
        ("SHARE_MAX_TTL_SECONDS", "86400"),
    ])
    .unwrap();
    assert_eq!(set.share_ttl, (3600, 86400));
    // A maximum below the default lowers the default with it; a default above it is refused.
    let low = config(&[("GPT_API_KEY", "k"), ("SHARE_MAX_TTL_SECONDS", "600")]).unwrap();
    assert_eq!(low.share_ttl, (600, 600));
    let err = config(&[
        ("GPT_API_KEY", "k"),
        ("SHARE_TTL_SECONDS", "9000"),
        ("SHARE_MAX_TTL_SECONDS", "600"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("SHARE_TTL_SECONDS") && err.contains("600"),
        "{err}"
    );
}

#[test]
fn temporary_chats_live_an_hour_by_default_and_never_longer_than_kept_chats() {
    let temporary = |vars: &[(&str, &str)]| {
        let mut all = vec![("GPT_API_KEY", "k")];
        all.extend_from_slice(vars);
        config(&all).map(|config| config.store.temporary_ttl)
    };
    assert_eq!(temporary(&[]).unwrap(), Duration::from_secs(3600));
    assert_eq!(
        temporary(&[("TEMPORARY_CHAT_SECONDS", "120")]).unwrap(),
        Duration::from_secs(120)
    );
    // Chats kept 60 seconds: a temporary one is kept no longer.
    assert_eq!(
        temporary(&[("CHAT_TTL_SECONDS", "60")]).unwrap(),
        Duration::from_secs(60)
    );
    // Chats kept forever: a temporary one still goes.
    assert_eq!(
        temporary(&[("CHAT_TTL_SECONDS", "0"), ("TEMPORARY_CHAT_SECONDS", "300")]).unwrap(),
        Duration::from_secs(300)
    );
    for bad in ["0", "soon", "-5"] {
        let err = temporary(&[("TEMPORARY_CHAT_SECONDS", bad)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TEMPORARY_CHAT_SECONDS"), "{err}");
    }
}
