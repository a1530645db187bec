//! `App` holds what is built once per cold start; `handle` turns one request into one
//! response. Data flows one way: request -> route -> front door -> turn engine, store and
//! upstream -> response.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use lambda_http::http::{header, HeaderValue, Method};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt, Response};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::auth::{Callers, Tenant};
use crate::config::Config;
use crate::cors::Cors;
use crate::error::ApiError;
use crate::http::ResponseBody;
use crate::request_log::RequestLog;
use crate::routes::{request_path, OpenAiRoute, Route, UsageRoute};
use crate::store::{MemoryStore, RedisStore, Store};
use crate::turn::{TurnEngine, TurnSettings};
use crate::upstream::{Upstream, UpstreamError};

/// Time kept back from the Lambda deadline to store a turn and answer before Lambda stops
/// the invocation: an answer of 504 beats a bare timeout from API Gateway. When less time
/// than that is left, a quarter of what is left is kept instead, so upstream still gets a try.
const LAMBDA_MARGIN: Duration = Duration::from_millis(2500);

/// Everything a request needs, built once and borrowed by every invocation.
pub struct App {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) turns: TurnEngine,
    pub(crate) default_system_prompt: String,
    pub(crate) max_body_bytes: usize,
    /// The longest a streamed turn may take.
    pub(crate) stream_timeout: Duration,
    /// How long a streaming client may leave a full buffer untouched before it is taken as
    /// gone: two keep-alive intervals.
    pub(crate) stream_stall: Duration,
    pub(crate) allowed_models: crate::config::AllowedModels,
    /// `PLAYGROUND`: whether `GET /playground` is served.
    playground: bool,
    callers: Callers,
    cors: Cors,
    rate_limit_per_minute: Option<u64>,
    /// Streamed turns still running: the invocation that started one waits for it before
    /// Lambda may freeze the process, even when the client has gone.
    in_flight: TaskTracker,
}

impl App {
    /// Builds the clients from `config`: Redis when configured, else the in-memory store.
    /// Redis connects in the background; nothing here waits on the network.
    pub fn build(config: &Config) -> Result<App, crate::startup::StartupError> {
        let store: Arc<dyn Store> = match &config.redis {
            Some(target) => Arc::new(RedisStore::connect(
                target,
                config.store.clone(),
                config.redis_timeout,
                config.redis_ca_file.as_deref(),
            )?),
            None => Arc::new(MemoryStore::new(config.store.clone())),
        };
        Ok(App::with_store(config, store)?)
    }

    /// An app over a store the caller built: tests and benchmarks use it to keep a handle
    /// on the store.
    pub fn with_store(config: &Config, store: Arc<dyn Store>) -> Result<App, UpstreamError> {
        let upstream = Arc::new(Upstream::new(&config.openai)?);
        Ok(App {
            turns: TurnEngine::new(
                store.clone(),
                upstream.clone(),
                TurnSettings {
                    default_system_prompt: config.default_system_prompt.clone(),
                    keep_alive: config.keep_alive,
                    max_prompt_tokens: config.max_prompt_tokens,
                    token_limit_per_day: config.token_limit_per_day,
                },
            ),
            store,
            upstream,
            default_system_prompt: config.default_system_prompt.clone(),
            max_body_bytes: config.max_body_bytes,
            stream_timeout: config.stream_timeout,
            stream_stall: config.keep_alive * 2,
            allowed_models: config.allowed_models.clone(),
            playground: config.playground,
            callers: config.callers.clone(),
            cors: config.cors.clone(),
            rate_limit_per_minute: config.rate_limit_per_minute,
            in_flight: TaskTracker::new(),
        })
    }

    /// Runs `work` (a streamed turn) beside the response that streams it; [`App::settle`]
    /// waits for it.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.in_flight.spawn(work);
    }

    /// Waits until every streamed turn started so far has finished (and been stored).
    /// The Lambda runtime calls it after each invocation, before asking for the next one.
    pub async fn settle(&self) {
        self.in_flight.close();
        self.in_flight.wait().await;
        self.in_flight.reopen();
    }
}

/// Answers one request. Never fails: every error becomes its JSON response here, because an
/// `Err` from a Lambda handler reaches the client as API Gateway's bare 500, and a panic is
/// caught and answered as a JSON 500 for the same reason.
pub async fn handle(app: &App, request: Request) -> Response<ResponseBody> {
    let started = Instant::now();
    let mut log = RequestLog::default();
    let served = AssertUnwindSafe(serve(app, &request, &mut log))
        .catch_unwind()
        .await;
    let result = served.unwrap_or_else(|_panic| {
        tracing::error!("the handler panicked");
        Err(ApiError::Internal)
    });
    finish(app, &request, result, &log, started)
}

/// Answers, without serving it, a request that cannot be served as it came (one that held
/// a header lambda_http cannot hold, which was dropped from it): `error`, with the CORS
/// headers and the log line of every answer.
pub fn refuse(app: &App, request: &Request, error: ApiError) -> Response<ResponseBody> {
    let mut log = RequestLog::default();
    log.route = "refused";
    finish(app, request, Err(error), &log, Instant::now())
}

fn finish(
    app: &App,
    request: &Request,
    result: Result<Response<ResponseBody>, ApiError>,
    log: &RequestLog,
    started: Instant,
) -> Response<ResponseBody> {
    let mut response = result.unwrap_or_else(ApiError::into_response);
    app.cors.decorate(request.headers(), &mut response);
    if request.method() == Method::HEAD {
        *response.body_mut() = ResponseBody::empty();
    }
    log.emit(
        request,
        &response,
        response.body().is_stream(),
        started.elapsed(),
    );
    response
}

/// Route, preflight, authenticate, then the front door of the route.
async fn serve(
    app: &App,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    log.route = "none";
    let route = match Route::parse(request.method(), request_path(request)) {
        Ok(route) => route,
        Err(ApiError::MethodNotAllowed { allow })
            if request.method() == Method::OPTIONS && app.cors.is_on() =>
        {
            log.route = "preflight";
            return Ok(app.cors.preflight(request.headers(), allow));
        }
        Err(error) => return Err(error),
    };
    log.route = route.name();
    // Every route, whether it reads its body or not: nothing larger is taken in.
    if request.body().len() > app.max_body_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: app.max_body_bytes,
        });
    }
    // The routes that need no key.
    match route {
        Route::Hello => return Ok(hello()),
        Route::File(file) if file.is_playground() && !app.playground => {
            return Err(ApiError::NotFound)
        }
        Route::File(file) => return Ok(api::files::serve(file, request)),
        _ => {}
    }
    let tenant = app.callers.authenticate(request.headers())?;
    log.caller = Some(tenant.name().to_owned());
    match route {
        Route::Hello => Ok(hello()),
        Route::File(file) => Ok(api::files::serve(file, request)),
        Route::Seed(seed) => api::seed::serve(app, seed, &tenant, request, log).await,
        Route::OpenAi(OpenAiRoute::ChatCompletions) => {
            api::openai::completion(app, &tenant, request, log).await
        }
        Route::OpenAi(OpenAiRoute::Models) => api::openai::models(app, &tenant, request, log).await,
        Route::Usage(UsageRoute::Chat(chat)) => {
            api::usage::chat(app, &tenant, &chat, request, log).await
        }
        Route::Usage(UsageRoute::Caller) => api::usage::caller(app, &tenant, request, log).await,
    }
}

impl App {
    /// Counts this request against `RATE_LIMIT_PER_MINUTE`: per caller, or per source IP
    /// when the API is open. Resolves at once when there is no limit. A turn awaits it in
    /// the same round trip as its read; other routes before their work.
    pub(crate) async fn rate_limit(
        &self,
        tenant: &Tenant,
        request: &Request,
    ) -> Result<(), ApiError> {
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
    pub(crate) fn deadline(&self, request: &Request, streamed: bool) -> Instant {
        let invocation = lambda_deadline(request);
        if streamed {
            let own = Instant::now() + self.stream_timeout;
            invocation.map_or(own, |limit| limit.min(own))
        } else {
            self.upstream.deadline(invocation)
        }
    }
}

/// The caller's address as API Gateway saw it.
pub(crate) fn source_ip(request: &Request) -> Option<&str> {
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

pub(crate) fn hello() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from("Hello, World!"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::{Body, Context};

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
