//! What every front door checks before its work: who is calling (`PROXY_API_KEYS`), whether
//! the caller is within `RATE_LIMIT_PER_MINUTE`, when its upstream call must be answered,
//! and where it came from.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::http::{header, HeaderMap};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use crate::chat::Tenant;
use crate::config::{CallerKey, Callers, Config};
use crate::error::ApiError;
use crate::store::Store;

/// Time kept back from the Lambda deadline to store a turn and answer before Lambda stops
/// the invocation: an answer of 504 beats a bare timeout from API Gateway. When less time
/// than that is left, a quarter of what is left is kept instead, so upstream still gets a try.
const LAMBDA_MARGIN: Duration = Duration::from_millis(2500);

/// The checks, with what they need, built once per cold start.
pub struct Guard {
    callers: Callers,
    rate_limit_per_minute: Option<u64>,
    store: Arc<dyn Store>,
    /// `OPENAI_TIMEOUT_SECONDS`: the whole of a buffered upstream call.
    upstream_timeout: Duration,
    /// `STREAM_TIMEOUT_SECONDS`: the whole of a streamed one.
    stream_timeout: Duration,
}

impl Guard {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Guard {
        Guard {
            callers: config.callers.clone(),
            rate_limit_per_minute: config.rate_limit_per_minute,
            store,
            upstream_timeout: config.openai.timeout,
            stream_timeout: config.stream_timeout,
        }
    }

    /// Who is calling. Every configured secret is compared, in constant time, whatever
    /// matches first, so the time taken says nothing about which key or how much of it
    /// was right.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Tenant, ApiError> {
        authenticate(&self.callers, headers)
    }

    /// Counts this request against `RATE_LIMIT_PER_MINUTE`: per caller, or per source IP
    /// when the API is open. Resolves at once when there is no limit. A turn awaits it in
    /// the same round trip as its read; other routes before their work.
    pub async fn rate_limit(&self, tenant: &Tenant, request: &Request) -> Result<(), ApiError> {
        let Some(limit) = self.rate_limit_per_minute else {
            return Ok(());
        };
        let who = match tenant {
            Tenant::Caller(name) => format!("caller:{name}"),
            Tenant::Open => format!("ip:{}", source_ip(request).unwrap_or("unknown")),
        };
        // The request's own id: a count sent twice after a cut counts it once.
        let request_id = format!("{:016x}", fastrand::u64(..));
        let counted = self.store.count_request(&who, &request_id, limit).await?;
        if counted.count > limit {
            return Err(ApiError::CallerRateLimited {
                limit,
                retry_after: counted.resets_in,
            });
        }
        Ok(())
    }

    /// When an upstream call of this request must be answered: the whole call for a
    /// buffered answer (`OPENAI_TIMEOUT_SECONDS`), the whole stream for a streamed one
    /// (`STREAM_TIMEOUT_SECONDS`), and in any case before the invocation's deadline less a
    /// margin.
    pub fn deadline(&self, request: &Request, streamed: bool) -> Instant {
        let own = Instant::now()
            + if streamed {
                self.stream_timeout
            } else {
                self.upstream_timeout
            };
        lambda_deadline(request).map_or(own, |limit| limit.min(own))
    }
}

impl Guard {
    /// The longest a background run may last once started: a streamed turn's limit.
    pub fn run_limit(&self) -> Duration {
        self.stream_timeout
    }

    /// When a background run's invocation must have made its turn: a streamed turn's limit,
    /// within the invocation's own deadline (`deadline_ms`, Unix milliseconds, as Lambda
    /// gives it) less a margin to keep how it ended; and when the invocation itself ends
    /// (Unix milliseconds), past which a reader takes the run as dead.
    pub fn run_deadline(&self, deadline_ms: u64) -> (Instant, u64) {
        let now = SystemTime::now();
        let lambda = (UNIX_EPOCH + Duration::from_millis(deadline_ms))
            .duration_since(now)
            .ok();
        let turn = lambda.map(|left| left - LAMBDA_MARGIN.min(left / 4));
        let turn = turn.map_or(self.stream_timeout, |left| left.min(self.stream_timeout));
        // Without Lambda's deadline (a local emulator's), the turn's and a margin.
        let ends = lambda.unwrap_or(turn + LAMBDA_MARGIN);
        let ends_at = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ends;
        (
            Instant::now() + turn,
            u64::try_from(ends_at.as_millis()).unwrap_or(u64::MAX),
        )
    }
}

/// The caller's address as API Gateway saw it.
pub fn source_ip(request: &Request) -> Option<&str> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref(),
        RequestContext::ApiGatewayV1(context) => context.identity.source_ip.as_deref(),
        _ => None,
    }
}

/// The invocation's deadline less a margin, when the request came through Lambda.
///
/// A deadline already past cannot come from Lambda (it would have stopped us); local
/// emulators send one (`cargo lambda watch` sends a duration, 600000, where Lambda sends
/// epoch milliseconds), so it is ignored and the configured timeout alone applies.
fn lambda_deadline(request: &Request) -> Option<Instant> {
    let deadline_ms = request.lambda_context_ref()?.deadline;
    let deadline = UNIX_EPOCH + Duration::from_millis(deadline_ms);
    let left = deadline.duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left - LAMBDA_MARGIN.min(left / 4))
}

/// Who is calling, by the key `headers` present; open when no keys are configured.
pub fn authenticate(callers: &Callers, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    if callers.is_open() {
        return Ok(Tenant::Open);
    }
    let presented = presented_key(headers).ok_or(ApiError::Unauthorized {
        reason: "missing API key: send Authorization: Bearer <key> or x-api-key: <key>",
    })?;
    let mut found: Option<&CallerKey> = None;
    for key in callers.keys() {
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
    use lambda_http::{Body, Context};

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
        for (name, value, who) in [
            ("authorization", "Bearer sk-a1", "alice"),
            ("authorization", "bearer  sk-b2 ", "bob"),
            ("x-api-key", "sk-b2", "bob"),
        ] {
            assert_eq!(
                authenticate(&callers, &headers(name, value)).unwrap(),
                Tenant::Caller(who.into())
            );
        }
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
                    authenticate(&callers, &headers(name, value)),
                    Err(ApiError::Unauthorized { .. })
                ),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn no_keys_means_open() {
        assert_eq!(
            authenticate(&Callers::default(), &HeaderMap::new()).unwrap(),
            Tenant::Open
        );
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

    fn request_with_deadline(deadline_ms: u64) -> Request {
        let mut context = Context::default();
        context.deadline = deadline_ms;
        lambda_http::http::Request::builder()
            .uri("/c1/chat")
            .body(Body::Empty)
            .unwrap()
            .with_lambda_context(context)
    }

    fn epoch_ms_in(from_now: Duration) -> u64 {
        (SystemTime::now() + from_now)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn budget(request: &Request) -> Option<Duration> {
        lambda_deadline(request).map(|at| at.saturating_duration_since(Instant::now()))
    }

    #[test]
    fn the_margin_is_kept_from_a_lambda_deadline() {
        let left = budget(&request_with_deadline(epoch_ms_in(Duration::from_secs(30)))).unwrap();
        assert!(
            left > Duration::from_millis(27_000) && left <= Duration::from_millis(27_500),
            "{left:?}"
        );
    }

    #[test]
    fn with_little_time_left_a_quarter_is_kept() {
        let left = budget(&request_with_deadline(epoch_ms_in(Duration::from_secs(2)))).unwrap();
        assert!(
            left > Duration::from_millis(1_400) && left <= Duration::from_millis(1_500),
            "{left:?}"
        );
    }

    #[test]
    fn a_deadline_already_past_is_ignored() {
        // What `cargo lambda watch` sends: a duration where Lambda sends epoch milliseconds.
        assert_eq!(budget(&request_with_deadline(600_000)), None);
        assert_eq!(budget(&request_with_deadline(0)), None);
    }

    #[test]
    fn without_a_lambda_context_there_is_no_deadline() {
        let request = lambda_http::http::Request::builder()
            .uri("/")
            .body(Body::Empty)
            .unwrap();
        assert_eq!(budget(&request), None);
    }
}
