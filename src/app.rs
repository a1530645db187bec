//! `App` holds what is built once per cold start; `handle` turns one request into one
//! response. Data flows one way: request -> route -> handler -> store and upstream -> response.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use lambda_http::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::auth::{Callers, Tenant};
use crate::body::{Content, Shape};
use crate::config::Config;
use crate::cors::Cors;
use crate::error::ApiError;
use crate::http::{empty_object, json_response};
use crate::request_log::RequestLog;
use crate::routes::{request_path, ChatId, Route};
use crate::store::{MemoryStore, RedisStore, Store, Turn, UserContent};
use crate::turn::{Ask, TurnEngine};
use crate::upstream::wire::Usage;
use crate::upstream::{Model, Upstream, UpstreamError};

/// Time kept back from the Lambda deadline to store a turn and answer before Lambda stops
/// the invocation: an answer of 504 beats a bare timeout from API Gateway. When less time
/// than that is left, a quarter of what is left is kept instead, so upstream still gets a try.
const LAMBDA_MARGIN: Duration = Duration::from_millis(2500);

/// Set to `false` on a turn's answer when the turn could not be stored.
pub const X_CHAT_STORED: HeaderName = HeaderName::from_static("x-chat-stored");

/// Everything a request needs, built once and borrowed by every invocation.
pub struct App {
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    turns: TurnEngine,
    default_system_prompt: String,
    max_body_bytes: usize,
    callers: Callers,
    cors: Cors,
    rate_limit_per_minute: Option<u64>,
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
                config.default_system_prompt.clone(),
            ),
            store,
            upstream,
            default_system_prompt: config.default_system_prompt.clone(),
            max_body_bytes: config.max_body_bytes,
            callers: config.callers.clone(),
            cors: config.cors.clone(),
            rate_limit_per_minute: config.rate_limit_per_minute,
        })
    }
}

/// Answers one request. Never fails: every error becomes its JSON response here, because an
/// `Err` from a Lambda handler reaches the client as API Gateway's bare 500, and a panic is
/// caught and answered as a JSON 500 for the same reason.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let started = Instant::now();
    let mut log = RequestLog::default();
    let served = AssertUnwindSafe(serve(app, &request, &mut log))
        .catch_unwind()
        .await;
    let result = served.unwrap_or_else(|_panic| {
        tracing::error!("the handler panicked");
        Err(ApiError::Internal)
    });
    let mut response = result.unwrap_or_else(ApiError::into_response);
    app.cors.decorate(request.headers(), &mut response);
    if request.method() == Method::HEAD {
        *response.body_mut() = Body::Empty;
    }
    log.emit(&request, &response, started.elapsed());
    response
}

/// Route, preflight, authenticate, rate-limit, then the route's own work.
async fn serve(
    app: &App,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<Body>, ApiError> {
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
    if route == Route::Hello {
        return Ok(hello());
    }
    let tenant = app.callers.authenticate(request.headers())?;
    log.caller = Some(tenant.name().to_owned());
    let limit = app.rate_limit(&tenant, request);
    match route {
        // A turn checks its limit in the same round trip as it reads the chat.
        Route::SendChat(chat) => {
            let question = Content::parse(request.body(), Shape::Content, app.max_body_bytes)?;
            turn(app, &tenant, &chat, question, request, limit, log).await
        }
        Route::SendImage(chat) => {
            let question =
                Content::parse(request.body(), Shape::ContentAndUrl, app.max_body_bytes)?;
            turn(app, &tenant, &chat, question, request, limit, log).await
        }
        other => {
            log.redis(limit).await?;
            dispatch(app, other, &tenant, request, log).await
        }
    }
}

/// The routes other than a turn.
async fn dispatch(
    app: &App,
    route: Route,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<Body>, ApiError> {
    let body = request.body();
    let content = |shape| Content::parse(body, shape, app.max_body_bytes);
    match route {
        Route::Hello => Ok(hello()),
        Route::GetGlobalSystem => {
            let prompt = log.redis(app.store.global_prompt(tenant)).await?;
            let content = prompt.as_deref().unwrap_or(&app.default_system_prompt);
            Ok(json_response(
                StatusCode::OK,
                &json!({ "content": content }),
            ))
        }
        Route::SetGlobalSystem => {
            let Content { content, .. } = content(Shape::Content)?;
            log.redis(app.store.set_global_prompt(tenant, &content))
                .await?;
            Ok(empty_object())
        }
        Route::Moderate => {
            let Content { content, .. } = content(Shape::Content)?;
            let deadline = app.upstream.deadline(lambda_deadline(request));
            let result = log
                .upstream(app.upstream.moderate(&content, deadline))
                .await?;
            Ok(json_response(StatusCode::OK, &result))
        }
        Route::GetChatSystem(chat) => {
            let prompt = log.redis(app.store.chat_prompt(tenant, &chat)).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "content": prompt.unwrap_or_default() }),
            ))
        }
        Route::SetChatSystem(chat) => {
            let Content { content, .. } = content(Shape::Content)?;
            log.redis(app.store.set_chat_prompt(tenant, &chat, &content))
                .await?;
            Ok(empty_object())
        }
        // `serve` runs turns itself, overlapping their rate-limit check with their read;
        // were one to come here, it is counted all the same.
        Route::SendChat(chat) => {
            let question = content(Shape::Content)?;
            let limit = app.rate_limit(tenant, request);
            turn(app, tenant, &chat, question, request, limit, log).await
        }
        Route::SendImage(chat) => {
            let question = content(Shape::ContentAndUrl)?;
            let limit = app.rate_limit(tenant, request);
            turn(app, tenant, &chat, question, request, limit, log).await
        }
        Route::GetChat(chat) => {
            let turns = log.redis(app.store.turns(tenant, &chat)).await?;
            Ok(json_response(StatusCode::OK, &transcript(&turns)))
        }
        Route::ClearChat(chat) => {
            log.redis(app.store.clear(tenant, &chat)).await?;
            Ok(empty_object())
        }
    }
}

impl App {
    /// Counts this request against `RATE_LIMIT_PER_MINUTE`: per caller, or per source IP
    /// when the API is open. Resolves at once when there is no limit.
    async fn rate_limit(&self, tenant: &Tenant, request: &Request) -> Result<(), ApiError> {
        let Some(limit) = self.rate_limit_per_minute else {
            return Ok(());
        };
        let who = match tenant {
            Tenant::Caller(name) => format!("caller:{name}"),
            Tenant::Open => format!("ip:{}", source_ip(request).unwrap_or("unknown")),
        };
        let counted = self.store.count_request(&who).await?;
        if counted.count > limit {
            return Err(ApiError::CallerRateLimited {
                limit,
                retry_after: counted.resets_in,
            });
        }
        Ok(())
    }
}

/// The caller's address as API Gateway saw it.
fn source_ip(request: &Request) -> Option<&str> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref(),
        RequestContext::ApiGatewayV1(context) => context.identity.source_ip.as_deref(),
        _ => None,
    }
}

/// A seed turn (`/chat`, `/img`): one question, answered as the older proxy answered it.
async fn turn(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    question: Content,
    request: &Request,
    rate_limit: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<Body>, ApiError> {
    let model = if question.url.is_some() {
        Model::Vision
    } else {
        Model::Chat
    };
    let ask = Ask {
        tenant,
        chat,
        asked: vec![UserContent::question(question.content, question.url)],
        model,
        deadline: app.upstream.deadline(lambda_deadline(request)),
    };
    let answered = app.turns.run(ask, rate_limit, log).await?;
    let mut response = json_response(
        StatusCode::OK,
        &Reply {
            content: &answered.reply,
            role: "assistant",
            tokens: answered.usage,
        },
    );
    if !answered.stored {
        response
            .headers_mut()
            .insert(X_CHAT_STORED, HeaderValue::from_static("false"));
    }
    Ok(response)
}

/// The answer to `/chat` and `/img`, field for field as the older proxy sent it.
#[derive(Serialize)]
struct Reply<'a> {
    content: &'a str,
    role: &'static str,
    tokens: Usage,
}

/// One message of `GET /<chat_id>/chat`.
#[derive(Serialize)]
struct TranscriptMessage<'a> {
    role: &'static str,
    content: std::borrow::Cow<'a, str>,
    /// The message's image (its first, when it has several).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    /// Every image of a message that has more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<Vec<&'a str>>,
}

fn transcript(turns: &[Turn]) -> Vec<TranscriptMessage<'_>> {
    let mut messages = Vec::with_capacity(turns.len() * 2);
    for turn in turns {
        for asked in &turn.asked {
            let urls: Vec<&str> = asked.image_urls().collect();
            messages.push(TranscriptMessage {
                role: "user",
                content: asked.text(),
                url: urls.first().copied(),
                urls: (urls.len() > 1).then_some(urls),
            });
        }
        messages.push(TranscriptMessage {
            role: "assistant",
            content: std::borrow::Cow::Borrowed(&turn.assistant),
            url: None,
            urls: None,
        });
    }
    messages
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

fn hello() -> Response<Body> {
    let mut response = Response::new(Body::from("Hello, World!"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Context;

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
