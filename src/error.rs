//! `ApiError`: every way a request can fail, and the one place each failure gets its status.
//!
//! The body is OpenAI's error shape, `{"error": {"message", "type", "code"}}`, so clients
//! written against OpenAI read it unchanged. Client faults carry their own message; server
//! faults say only what failed, and their cause is logged once, never sent.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::Response;
use serde::Serialize;

use crate::chat::InvalidChatId;
use crate::http::{ResponseBody, INTERNAL_ERROR_BODY};

/// The cause of a server fault, for the log line only.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; `code` is stable, `message` says how to fix it.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{reason}")]
    Unauthorized { reason: &'static str },
    #[error("no route for this path")]
    NotFound,
    /// What the request names does not exist (for this caller): a model, a response.
    #[error("{message}")]
    Missing {
        code: &'static str,
        param: Option<&'static str>,
        message: String,
    },
    /// A request parameter is wrong: a 400 that names it (`param`), as OpenAI's do.
    #[error("{message}")]
    BadParam {
        code: &'static str,
        param: &'static str,
        message: String,
    },
    /// The request does not fit what is stored; `code` says how (a resent history that
    /// differs from the chat's).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("method not allowed; this path accepts {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// Upstream refused the request with a 4xx (an image URL it cannot fetch, an unknown
    /// model, ...): answered with that status, and upstream's code, message and param, which
    /// carry no key or account id. Upstream refusing the operator's own key is a 403.
    #[error("OpenAI rejected the request: {message}")]
    UpstreamRefused {
        status: StatusCode,
        message: String,
        code: Option<String>,
        param: Option<String>,
    },
    #[error("OpenAI rate limit reached; retry later")]
    RateLimited { retry_after: Option<u64> },
    /// This caller made more than `RATE_LIMIT_PER_MINUTE` requests this minute.
    #[error("rate limit of {limit} requests per minute reached; retry in {retry_after} s")]
    CallerRateLimited { limit: u64, retry_after: u64 },
    /// This caller (or address, on an open API) spent `TOKEN_LIMIT_PER_DAY` today.
    #[error(
        "the daily limit of {limit} tokens is spent; it resets at 00:00 UTC, in {retry_after} s"
    )]
    TokenLimitExceeded { limit: u64, retry_after: u64 },
    /// A request with the same `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is in progress; retry when it has finished")]
    RequestInProgress,
    /// The `Idempotency-Key` was used for a request with another body.
    #[error(
        "this Idempotency-Key was used for a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    #[error("OpenAI did not answer in time")]
    UpstreamTimeout,
    #[error("OpenAI request failed")]
    Upstream(#[source] Cause),
    #[error("chat storage is unavailable; retry shortly")]
    Storage(#[source] Cause),
    /// A background response could not be handed to another invocation (Lambda's Invoke
    /// API refused or failed).
    #[error("the background response could not be started; retry shortly")]
    Handoff(#[source] Cause),
    /// A sealed value did not open with the proxy's `SEAL_KEYS`: it is left as it was.
    #[error(
        "this chat's stored data cannot be opened with the proxy's keys; it is left as it was"
    )]
    Unreadable(#[source] Cause),
    /// A bug: the handler panicked. The panic itself is logged where it happened.
    #[error("something went wrong")]
    Internal,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::UpstreamRefused { status, .. } => *status,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::Missing { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. }
            | ApiError::CallerRateLimited { .. }
            | ApiError::TokenLimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestInProgress => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Storage(_) | ApiError::Handoff(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable code; clients may match on it. Upstream's refusals carry
    /// upstream's own code when it sent one.
    pub fn code(&self) -> &str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::BadParam { code, .. }
            | ApiError::Missing { code, .. }
            | ApiError::Conflict { code, .. } => code,
            ApiError::UpstreamRefused { code, .. } => {
                code.as_deref().unwrap_or("upstream_rejected")
            }
            ApiError::PayloadTooLarge { .. } => "body_too_large",
            ApiError::Unauthorized { .. } => "invalid_api_key",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::CallerRateLimited { .. } => "rate_limit_exceeded",
            ApiError::TokenLimitExceeded { .. } => "token_limit_exceeded",
            ApiError::RequestInProgress => "request_in_progress",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Storage(_) => "storage_unavailable",
            ApiError::Handoff(_) => "background_unavailable",
            ApiError::Unreadable(_) => "chat_unreadable",
            ApiError::Internal => "internal_error",
        }
    }

    /// OpenAI's error `type` for this family of failure.
    fn kind(&self) -> &'static str {
        match self.status() {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            status if status.is_client_error() => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// Logs the failure, once: at WARN for the client's faults and ERROR for ours or
    /// upstream's, with the cause chain (which never reaches the client).
    pub fn log(&self) {
        let status = self.status();
        // Upstream's rate limit and its refusal of the proxy's own key are the operator's to
        // see, like any server fault.
        let operators = matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::UpstreamRefused {
                    status: StatusCode::FORBIDDEN,
                    ..
                }
        );
        if status.is_server_error() || operators {
            tracing::error!(status = status.as_u16(), code = self.code(), error = %ErrorChain(self), "request failed");
        } else {
            tracing::warn!(status = status.as_u16(), code = self.code(), error = %self, "request rejected");
        }
    }

    /// The JSON body the client sees, in OpenAI's error shape.
    pub fn body(&self) -> Vec<u8> {
        let message = self.to_string();
        let body = ErrorBody {
            error: ErrorFields {
                message: &message,
                kind: self.kind(),
                param: match self {
                    ApiError::UpstreamRefused { param, .. } => param.as_deref(),
                    ApiError::BadParam { param, .. } => Some(param),
                    ApiError::Missing { param, .. } => *param,
                    _ => None,
                },
                code: self.code(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| INTERNAL_ERROR_BODY.to_vec())
    }

    /// The response the client sees; the failure is logged here, so every failure is logged
    /// exactly once.
    pub fn into_response(self) -> Response<ResponseBody> {
        self.log();
        let mut response = Response::new(ResponseBody::from(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited {
                retry_after: Some(seconds),
            }
            | ApiError::CallerRateLimited {
                retry_after: seconds,
                ..
            }
            | ApiError::TokenLimitExceeded {
                retry_after: seconds,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            ApiError::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"chat-proxy\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// OpenAI's error object, fields in OpenAI's order.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'a str,
}

impl From<InvalidChatId> for ApiError {
    fn from(invalid: InvalidChatId) -> Self {
        ApiError::bad_request("invalid_chat_id", invalid.to_string())
    }
}

/// Formats an error with its sources, for the log line only.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body_of(response: &Response<ResponseBody>) -> serde_json::Value {
        match response.body() {
            ResponseBody::Whole(bytes) => serde_json::from_slice(bytes).unwrap(),
            ResponseBody::Stream(_) => panic!("an error is never streamed"),
        }
    }

    #[test]
    fn errors_use_openai_shape_and_json_content_type() {
        let response =
            ApiError::bad_request("invalid_content", "`content` must be a string").into_response();
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_of(&response),
            json!({"error": {
                "message": "`content` must be a string",
                "type": "invalid_request_error",
                "param": null,
                "code": "invalid_content"
            }})
        );
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let response = ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }

    #[test]
    fn rate_limit_passes_retry_after_on() {
        let response = ApiError::RateLimited {
            retry_after: Some(7),
        }
        .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(body_of(&response)["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn server_faults_do_not_leak_their_cause() {
        let cause = "connection to redis://:hunter2@10.0.0.1 refused".into();
        let response = ApiError::Storage(cause).into_response();
        assert_eq!(response.status(), 503);
        let text = body_of(&response).to_string();
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("10.0.0.1"));
    }
}
