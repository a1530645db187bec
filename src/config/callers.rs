//! Callers and their limits: `PROXY_API_KEYS` (who may call, each in a namespace of its
//! own), `CORS_ALLOW_ORIGINS`, `RATE_LIMIT_PER_MINUTE`, `TOKEN_LIMIT_PER_DAY` and
//! `MAX_BODY_BYTES`.

use secrecy::{ExposeSecret, SecretString};

use super::reader::Reader;
use crate::cors::Cors;

/// One configured caller.
#[derive(Debug, Clone)]
pub struct CallerKey {
    pub name: String,
    pub secret: SecretString,
}

/// The configured callers; empty means the API is open.
#[derive(Debug, Clone, Default)]
pub struct Callers {
    keys: Vec<CallerKey>,
}

impl Callers {
    pub fn new(keys: Vec<CallerKey>) -> Self {
        Callers { keys }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses `name:secret,name:secret`. Names are 1 to 64 of `A-Z a-z 0-9 _ . -` (they
    /// become part of Redis keys); names and secrets must be unique. Problems never quote a
    /// secret.
    pub fn parse(raw: &str) -> Result<Callers, Vec<String>> {
        let mut keys: Vec<CallerKey> = Vec::new();
        let mut problems = Vec::new();
        for (index, entry) in raw.split(',').map(str::trim).enumerate() {
            let position = index + 1;
            if entry.is_empty() {
                continue;
            }
            let Some((name, secret)) = entry.split_once(':') else {
                problems.push(format!(
                    "PROXY_API_KEYS entry {position} is not name:secret"
                ));
                continue;
            };
            let (name, secret) = (name.trim(), secret.trim());
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid_name {
                problems.push(format!(
                    "PROXY_API_KEYS entry {position}: the name must be 1 to 64 of A-Z a-z 0-9 _ . -"
                ));
            } else if secret.is_empty() {
                problems.push(format!(
                    "PROXY_API_KEYS entry {position} ({name}) has an empty secret"
                ));
            } else if keys.iter().any(|k| k.name == name) {
                problems.push(format!("PROXY_API_KEYS names {name} twice"));
            } else if keys.iter().any(|k| k.secret.expose_secret() == secret) {
                problems.push(format!(
                    "PROXY_API_KEYS entry {position} ({name}) reuses another caller's secret"
                ));
            } else {
                keys.push(CallerKey {
                    name: name.to_owned(),
                    secret: SecretString::from(secret.to_owned()),
                });
            }
        }
        if problems.is_empty() {
            Ok(Callers { keys })
        } else {
            Err(problems)
        }
    }

    /// The configured keys, for the guard that checks a request's.
    pub fn keys(&self) -> &[CallerKey] {
        &self.keys
    }
}

const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the callers' part of the environment says.
pub(super) struct CallersAndLimits {
    pub callers: Callers,
    pub cors: Cors,
    pub rate_limit_per_minute: Option<u64>,
    pub token_limit_per_day: Option<u64>,
    pub max_body_bytes: usize,
}

pub(super) fn read(env: &mut Reader<'_>) -> CallersAndLimits {
    let callers = env
        .parsed("PROXY_API_KEYS", Callers::parse, Callers::default)
        .unwrap_or_default();
    let cors = env
        .parsed(
            "CORS_ALLOW_ORIGINS",
            |raw| Cors::parse(raw).map_err(|problem| vec![problem]),
            || Cors::Off,
        )
        .unwrap_or(Cors::Off);
    let rate_limit = env.number("RATE_LIMIT_PER_MINUTE", 0, 0..=1_000_000);
    let token_limit = env.number("TOKEN_LIMIT_PER_DAY", 0, 0..=u64::from(u32::MAX) * 1_000);
    CallersAndLimits {
        callers,
        cors,
        rate_limit_per_minute: (rate_limit > 0).then_some(rate_limit),
        token_limit_per_day: (token_limit > 0).then_some(token_limit),
        max_body_bytes: env.number(
            "MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES,
            64..=6 * 1024 * 1024,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_lists_are_refused_without_quoting_secrets() {
        let problems = Callers::parse("alice:sk-1,alice:sk-2,bad name:sk-3,carol,dave:,erin:sk-1")
            .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        let text = problems.join(" ");
        assert!(!text.contains("sk-"), "{text}");
    }
}
