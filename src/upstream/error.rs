//! How an upstream call fails, and what the caller is told of it: upstream's own refusals
//! keep their status and code, its faults become 502 or 504, and nothing that reaches a
//! log or a caller holds the key or the operator's organization or project ids.

use async_openai::error::OpenAIError;
use lambda_http::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::retry::RateLimited;
use crate::error::ApiError;

/// Why an upstream call failed. Messages are for logs; `ApiError` decides what clients see.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("rate limited by OpenAI")]
    RateLimited { retry_after: Option<u64> },
    #[error("OpenAI did not answer before the deadline")]
    Timeout,
    /// Upstream refused the request with a 4xx other than 408 and 429: an invalid request
    /// (400, e.g. an image URL it cannot fetch), an unknown model (404), the operator's key
    /// refused (401, 403), ... `code` and `param` are OpenAI's, when it sent them; `message`
    /// has the key and any organization or project id cut out.
    #[error("OpenAI refused the request (HTTP {status}): {message}")]
    Refused {
        status: u16,
        message: String,
        code: Option<String>,
        param: Option<String>,
    },
    #[error("OpenAI answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot reach OpenAI: {0}")]
    Transport(String),
    #[error("OpenAI's answer could not be read: {0}")]
    Unreadable(String),
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            UpstreamError::Timeout => ApiError::UpstreamTimeout,
            // The operator's key or its account refused: nothing the caller can fix, and
            // never a 401, which would tell the caller its own key is wrong. OpenAI's message
            // would quote part of the key, so only the code is kept.
            UpstreamError::Refused {
                status: 401, code, ..
            } => ApiError::UpstreamRefused {
                status: StatusCode::FORBIDDEN,
                message: format!(
                    "the proxy's OpenAI key was refused{}; the proxy's operator must fix it \
                     (nothing is wrong with this request)",
                    code.map(|code| format!(" ({code})")).unwrap_or_default()
                ),
                code: Some("upstream_auth_failed".to_owned()),
                param: None,
            },
            UpstreamError::Refused {
                status,
                message,
                code,
                param,
            } => ApiError::UpstreamRefused {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
                code,
                param,
            },
            other => ApiError::Upstream(Box::new(other)),
        }
    }
}

/// Upstream's error messages can quote the key that was sent (OpenAI's 401 does, in part)
/// and name the operator's organization or project (its 429s and 403s do); they reach logs
/// and, for a 4xx, the client, so the key and those ids are cut out of them first.
pub(super) fn redact(message: String, api_key: &SecretString) -> String {
    let key = api_key.expose_secret();
    let message = if key.is_empty() || !message.contains(key) {
        message
    } else {
        message.replace(key, "[redacted]")
    };
    redact_account_ids(&message)
}

/// `org-...` and `proj_...` ids replaced by `org-[redacted]` and `proj_[redacted]`.
fn redact_account_ids(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, prefix)) = ["org-", "proj_"]
        .iter()
        .filter_map(|prefix| rest.find(prefix).map(|at| (at, *prefix)))
        .min()
    {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let after = &rest[at + prefix.len()..];
        let id_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        out.push_str(&rest[..at + prefix.len()]);
        if starts_word && id_len > 0 {
            out.push_str("[redacted]");
            rest = &after[id_len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn classify(error: OpenAIError, api_key: &SecretString) -> UpstreamError {
    match error {
        OpenAIError::ApiError(response) => {
            let status = response.status_code.as_u16();
            let error = response.api_error;
            let message = redact(error.message, api_key);
            match status {
                429 => UpstreamError::RateLimited { retry_after: None },
                408 => UpstreamError::Timeout,
                400..=499 => UpstreamError::Refused {
                    status,
                    message,
                    code: error.code,
                    param: error.param,
                },
                _ => UpstreamError::Status { status, message },
            }
        }
        OpenAIError::Reqwest(error) if error.is_timeout() => UpstreamError::Timeout,
        OpenAIError::Reqwest(error) if error.is_decode() => {
            UpstreamError::Unreadable(error.to_string())
        }
        OpenAIError::Reqwest(error) => UpstreamError::Transport(error.without_url().to_string()),
        OpenAIError::JSONDeserialize(error, _body) => UpstreamError::Unreadable(error.to_string()),
        OpenAIError::Boxed(boxed) => match boxed.downcast::<RateLimited>() {
            Ok(limited) => UpstreamError::RateLimited {
                retry_after: limited.retry_after,
            },
            Err(other) => UpstreamError::Transport(other.to_string()),
        },
        other => UpstreamError::Transport(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_account_ids_are_cut_out_of_upstream_messages() {
        let key = SecretString::from("sk-secret-123".to_owned());
        let cases = [
            (
                "Incorrect API key provided: sk-secret-123.",
                "Incorrect API key provided: [redacted].",
            ),
            (
                "Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min.",
                "Rate limit reached for gpt-4o in organization org-[redacted] on tokens per min.",
            ),
            (
                "Project `proj_x9Y` does not have access to model `gpt-5`",
                "Project `proj_[redacted]` does not have access to model `gpt-5`",
            ),
            ("a cyborg-7 and org- alone", "a cyborg-7 and org- alone"),
            ("nothing to hide", "nothing to hide"),
        ];
        for (message, redacted) in cases {
            assert_eq!(redact(message.to_owned(), &key), redacted);
        }
    }
}
