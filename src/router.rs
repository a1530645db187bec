//! The router: the one place that knows every front door. `handle` turns one request into
//! one response: route, preflight, body limit, caller, then the door of the route; every
//! failure becomes its JSON answer here, with CORS headers and one log line.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lambda_http::http::{header, HeaderValue, Method};
use lambda_http::{Request, Response};
use tokio::time::Instant;

use crate::api;
use crate::app::App;
use crate::error::ApiError;
use crate::http::ResponseBody;
use crate::request_log::RequestLog;
use crate::routes::{request_path, ChatsRoute, OpenAiRoute, Route, UsageRoute};

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

/// A background response's run, handed over by the invocation that queued it.
pub use crate::api::responses::RunEvent;

/// Makes a background response (an invocation that is no HTTP request): its door runs it.
pub async fn run(app: &App, event: RunEvent, deadline_ms: u64) {
    let served = AssertUnwindSafe(api::responses::run(app, event, deadline_ms))
        .catch_unwind()
        .await;
    if served.is_err() {
        tracing::error!("a background run panicked");
    }
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
    // Every route, whether it reads its body or not: nothing larger is taken in (an import
    // holds a whole chat).
    let limit = match route {
        Route::Chats(ChatsRoute::Import) => api::chats::import_limit(app),
        _ => app.max_body_bytes,
    };
    if request.body().len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    // The routes that need no key.
    match route {
        Route::Hello => return Ok(hello()),
        // A read-only link: its token (256 random bits) is its key.
        Route::Shared(token) => return api::chats::shared(app, &token, request, log).await,
        Route::File(file) if file.is_playground() && !app.playground => {
            return Err(ApiError::NotFound)
        }
        Route::File(file) => return Ok(api::files::serve(file, request)),
        _ => {}
    }
    let tenant = app.guard.authenticate(request.headers())?;
    log.caller = Some(tenant.name().to_owned());
    match route {
        Route::Hello => Ok(hello()),
        Route::Shared(token) => api::chats::shared(app, &token, request, log).await,
        Route::File(file) => Ok(api::files::serve(file, request)),
        Route::Seed(seed) => api::seed::serve(app, seed, &tenant, request, log).await,
        Route::OpenAi(OpenAiRoute::ChatCompletions) => {
            api::openai::completion(app, &tenant, request, log).await
        }
        Route::OpenAi(OpenAiRoute::Models) => api::openai::models(app, &tenant, request, log).await,
        Route::OpenAi(OpenAiRoute::Model(id)) => {
            api::openai::model(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::CreateResponse) => {
            api::responses::create(app, &tenant, request, log).await
        }
        Route::OpenAi(OpenAiRoute::CompactResponse) => {
            api::responses::compact(app, &tenant, request, log).await
        }
        Route::OpenAi(OpenAiRoute::CountInputTokens) => {
            api::responses::input_tokens(app, &tenant, request, log).await
        }
        Route::OpenAi(OpenAiRoute::GetResponse(id)) => {
            api::responses::get(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::DeleteResponse(id)) => {
            api::responses::delete(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::ResponseInputItems(id)) => {
            api::responses::input_items(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::CancelResponse(id)) => {
            api::responses::cancel(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::CreateConversation) => {
            api::conversations::create(app, &tenant, request, log).await
        }
        Route::OpenAi(OpenAiRoute::GetConversation(id)) => {
            api::conversations::get(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::UpdateConversation(id)) => {
            api::conversations::update(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::DeleteConversation(id)) => {
            api::conversations::delete(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::ConversationItems(id)) => {
            api::conversations::items(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::AddConversationItems(id)) => {
            api::conversations::add_items(app, &tenant, &id, request, log).await
        }
        Route::OpenAi(OpenAiRoute::ConversationItem(id, item)) => {
            api::conversations::item(app, &tenant, &id, &item, request, log).await
        }
        Route::OpenAi(OpenAiRoute::DeleteConversationItem(id, item)) => {
            api::conversations::delete_item(app, &tenant, &id, &item, request, log).await
        }
        Route::Usage(UsageRoute::Chat(chat)) => {
            api::usage::chat(app, &tenant, &chat, request, log).await
        }
        Route::Usage(UsageRoute::Caller) => api::usage::caller(app, &tenant, request, log).await,
        Route::Chats(route) => api::chats::serve(app, route, &tenant, request, log).await,
        Route::OpenAi(OpenAiRoute::ListConversations) => {
            api::conversations::list(app, &tenant, request, log).await
        }
    }
}

fn hello() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from("Hello, World!"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
