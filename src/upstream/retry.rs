//! Retries bounded by the caller's deadline, in place of async-openai's own loop.
//!
//! The library's default retries a 429 or 5xx with backoff and sleeps for whatever
//! `Retry-After` says, which can outlast API Gateway's 30 s. Here a retry happens only when
//! its wait, plus time for one more attempt, fits before the deadline of the call in flight;
//! otherwise the last answer is returned, and a final 429 carries its `Retry-After` on to
//! our client (async-openai's error type has no room for headers).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::error::{OpenAIError, WrappedError};
use async_openai::middleware::HttpRequestFactory;
use reqwest::{header, Response, StatusCode};
use tokio::time::Instant;

tokio::task_local! {
    /// When the upstream call in flight must be answered by. Set by `Upstream` per call.
    pub static DEADLINE: Instant;
}

/// Retries after a 429, a 5xx or a failed connect, at most this many times.
const MAX_RETRIES: u32 = 2;
/// The least time worth starting another attempt with.
const MIN_ATTEMPT: Duration = Duration::from_millis(1500);
/// First backoff step; each retry doubles it, with full jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` taken from upstream, waited on or passed on to our client.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A final 429 from upstream, with its `Retry-After` in seconds when it sent one.
#[derive(Debug, thiserror::Error)]
#[error("rate limited by upstream: {message}")]
pub struct RateLimited {
    pub retry_after: Option<u64>,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct DeadlineRetry<S> {
    inner: S,
}

impl<S> DeadlineRetry<S> {
    pub fn new(inner: S) -> Self {
        DeadlineRetry { inner }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send>>;

impl<S> tower::Service<HttpRequestFactory> for DeadlineRetry<S>
where
    S: tower::Service<HttpRequestFactory, Response = Response, Error = OpenAIError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = OpenAIError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        // Without a deadline in scope (never the case through `Upstream`) nothing is retried.
        let deadline = DEADLINE
            .try_with(|deadline| *deadline)
            .unwrap_or_else(|_| Instant::now());
        Box::pin(send_with_retries(service, request, deadline))
    }
}

async fn send_with_retries<S>(
    mut service: S,
    request: HttpRequestFactory,
    deadline: Instant,
) -> Result<Response, OpenAIError>
where
    S: tower::Service<HttpRequestFactory, Response = Response, Error = OpenAIError>,
{
    use tower::ServiceExt;

    let mut retries = 0;
    loop {
        let result = service.ready().await?.call(request.clone()).await;
        let retry_after = match &result {
            Ok(response) if is_retryable_status(response.status()) => retry_after(response),
            Err(OpenAIError::Reqwest(error))
                if error.is_connect() || is_stale_connection(error) =>
            {
                None
            }
            _ => return result,
        };
        let wait = retry_after.unwrap_or_else(|| backoff(retries));
        let fits = Instant::now()
            .checked_add(wait)
            .and_then(|at| at.checked_add(MIN_ATTEMPT))
            .is_some_and(|at| at <= deadline);
        if retries >= MAX_RETRIES || !fits {
            return match result {
                Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    Err(rate_limited(response).await)
                }
                other => other,
            };
        }
        // A 429 for an exhausted quota will not clear up by waiting.
        if let Ok(response) = result {
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let (headers, body) = into_parts(response).await?;
                if is_quota_exhausted(&body) {
                    return Err(rate_limited_from(&headers, &body));
                }
            }
        }
        tracing::warn!(
            retry = retries + 1,
            wait_ms = wait.as_millis() as u64,
            "retrying upstream call"
        );
        tokio::time::sleep(wait).await;
        retries += 1;
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A pooled connection that the server (or a NAT) closed while the function was frozen: the
/// request failed before any answer came back, as with a failed connect.
fn is_stale_connection(error: &reqwest::Error) -> bool {
    use std::io::ErrorKind;

    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// `Retry-After` as seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`]; a value that
/// is neither is ignored.
fn retry_after_of(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `Retry-After` in whole seconds, rounded up, for our own client.
fn retry_after_seconds(headers: &header::HeaderMap) -> Option<u64> {
    retry_after_of(headers).map(|wait| wait.as_millis().div_ceil(1000) as u64)
}

fn retry_after(response: &Response) -> Option<Duration> {
    retry_after_of(response.headers())
}

fn backoff(retries: u32) -> Duration {
    let ceiling = BASE_BACKOFF.saturating_mul(2u32.saturating_pow(retries));
    let jittered = fastrand::u64(0..=ceiling.as_millis() as u64);
    Duration::from_millis(jittered.max(10))
}

async fn into_parts(response: Response) -> Result<(header::HeaderMap, bytes::Bytes), OpenAIError> {
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    Ok((headers, body))
}

fn is_quota_exhausted(body: &[u8]) -> bool {
    serde_json::from_slice::<WrappedError>(body)
        .is_ok_and(|wrapped| wrapped.error.r#type.as_deref() == Some("insufficient_quota"))
}

fn rate_limited_from(headers: &header::HeaderMap, body: &[u8]) -> OpenAIError {
    let message = serde_json::from_slice::<WrappedError>(body)
        .map(|wrapped| wrapped.error.message)
        .unwrap_or_else(|_| "rate limited".to_owned());
    OpenAIError::Boxed(Box::new(RateLimited {
        retry_after: retry_after_seconds(headers),
        message,
    }))
}

async fn rate_limited(response: Response) -> OpenAIError {
    match into_parts(response).await {
        Ok((headers, body)) => rate_limited_from(&headers, &body),
        Err(error) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> header::HeaderMap {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, retry_after.parse().unwrap());
        headers
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_clamped() {
        assert_eq!(retry_after_seconds(&headers("7")), Some(7));
        assert_eq!(retry_after_seconds(&headers(" 0 ")), Some(0));
        // Larger than any Duration added to an Instant: clamped, no overflow.
        assert_eq!(
            retry_after_seconds(&headers("10000000000000000000")),
            Some(3600)
        );
        assert_eq!(retry_after_seconds(&headers("soon")), None);
        assert_eq!(retry_after_seconds(&headers("-5")), None);
    }

    #[test]
    fn retry_after_as_an_http_date_is_read() {
        let in_30s = std::time::SystemTime::now() + Duration::from_secs(30);
        let seconds = retry_after_seconds(&headers(&httpdate::fmt_http_date(in_30s))).unwrap();
        assert!((29..=31).contains(&seconds), "{seconds}");
        let past = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(retry_after_seconds(&headers(&past)), Some(0));
        let far = std::time::SystemTime::now() + Duration::from_secs(10 * 86_400);
        assert_eq!(
            retry_after_seconds(&headers(&httpdate::fmt_http_date(far))),
            Some(3600)
        );
    }
}
