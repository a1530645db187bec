//! Callers and their keys (`PROXY_API_KEYS`), and the namespace each caller's chats live in.
//!
//! With keys configured every route but `GET /` needs `Authorization: Bearer <secret>` or
//! `x-api-key: <secret>`, and each caller sees only its own chats and global prompt. With
//! none the API is open, as the older proxy was, and every caller shares one namespace.

use lambda_http::http::{header, HeaderMap};
use secrecy::{ExposeSecret, SecretString};

use crate::error::ApiError;

/// Whose data a request reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// No keys are configured: one shared namespace, the keys the older proxy used.
    Open,
    /// An authenticated caller, by its configured name.
    Caller(String),
}

impl Tenant {
    /// The name to log and to count requests under; never a secret.
    pub fn name(&self) -> &str {
        match self {
            Tenant::Open => "open",
            Tenant::Caller(name) => name,
        }
    }
}

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

    /// Who is calling. Every configured secret is compared, in constant time, whatever
    /// matches first, so the time taken says nothing about which key or how much of it
    /// was right.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Tenant, ApiError> {
        if self.is_open() {
            return Ok(Tenant::Open);
        }
        let presented = presented_key(headers).ok_or(ApiError::Unauthorized {
            reason: "missing API key: send Authorization: Bearer <key> or x-api-key: <key>",
        })?;
        let mut found: Option<&CallerKey> = None;
        for key in &self.keys {
            if constant_time_eq(key.secret.expose_secret().as_bytes(), presented.as_bytes()) {
                found = Some(key);
            }
        }
        found
            .map(|key| Tenant::Caller(key.name.clone()))
            .ok_or(ApiError::Unauthorized {
                reason: "invalid API key",
            })
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        })
        .filter(|key| !key.is_empty())
}

/// Compares without stopping at the first difference.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut difference = expected.len() ^ presented.len();
    for (index, byte) in presented.iter().enumerate() {
        let wanted = expected.get(index).copied().unwrap_or(!byte);
        difference |= usize::from(wanted ^ byte);
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;

    fn callers() -> Callers {
        Callers::parse("alice:sk-a1, bob:sk-b2").unwrap()
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_and_x_api_key_both_authenticate() {
        let callers = callers();
        assert_eq!(
            callers
                .authenticate(&headers("authorization", "Bearer sk-a1"))
                .unwrap(),
            Tenant::Caller("alice".into())
        );
        assert_eq!(
            callers
                .authenticate(&headers("authorization", "bearer  sk-b2 "))
                .unwrap(),
            Tenant::Caller("bob".into())
        );
        assert_eq!(
            callers
                .authenticate(&headers("x-api-key", "sk-b2"))
                .unwrap(),
            Tenant::Caller("bob".into())
        );
    }

    #[test]
    fn wrong_missing_and_partial_keys_are_refused() {
        let callers = callers();
        for (name, value) in [
            ("authorization", "Bearer sk-a"),
            ("authorization", "Bearer sk-a1x"),
            ("authorization", "Basic sk-a1"),
            ("authorization", "Bearer "),
            ("x-api-key", "SK-A1"),
            ("x-other", "sk-a1"),
        ] {
            assert!(
                matches!(
                    callers.authenticate(&headers(name, value)),
                    Err(ApiError::Unauthorized { .. })
                ),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn no_keys_means_open() {
        assert_eq!(
            Callers::default().authenticate(&HeaderMap::new()).unwrap(),
            Tenant::Open
        );
    }

    #[test]
    fn bad_key_lists_are_refused_without_quoting_secrets() {
        let problems = Callers::parse("alice:sk-1,alice:sk-2,bad name:sk-3,carol,dave:,erin:sk-1")
            .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        let text = problems.join(" ");
        assert!(!text.contains("sk-"), "{text}");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
