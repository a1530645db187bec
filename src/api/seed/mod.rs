//! The seed routes, the older Python proxy's API kept path for path: prompts, moderation,
//! transcript and clear, and turns answered as JSON or, when asked, as server-sent events:
//! `delta` events as the reply is written, then `done` with the same JSON object a buffered
//! turn answers, or `error` with an OpenAI-shaped error if the turn fails mid-stream.
//!
//! A streamed turn is live while it is made (`live.rs`): `GET /<chat_id>/chat` names it,
//! `GET /<chat_id>/live` follows it from any position on any connection, and
//! `POST /<chat_id>/stop` stops it, keeping what it wrote so far as the turn.

mod live;
mod stream;

use std::sync::Arc;

use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Request, Response};
use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::body::{Content, Shape};
use crate::chat::{transcript, transcript_with_tokens, Asked, ChatId, Tenant, UserContent};
use crate::error::ApiError;
use crate::guard::source_ip;
use crate::http::{
    accepts_event_stream, empty_object, event_stream, json_body, json_response, replayed,
    sse_event, ResponseBody, X_CHAT_LIVE, X_CHAT_STORED, X_CHAT_TEMPORARY,
};
use crate::idempotency;
use crate::paging::query_flag;
use crate::request_log::RequestLog;
use crate::routes::SeedRoute;
use crate::turn::{Answered, Ask, Keep, Opened, Ran, Redo};
use crate::upstream::wire::Usage;
use crate::upstream::Model;

/// Serves a seed route for an authenticated caller.
pub async fn serve(
    app: &App,
    route: SeedRoute,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let limit = app.guard.rate_limit(tenant, request);
    let content = |shape| Content::parse(request.body(), shape, app.max_body_bytes);
    match route {
        // A turn checks its limit in the same round trip as it reads the chat.
        SeedRoute::SendChat(chat) => {
            let question = content(Shape::Turn)?;
            turn(app, tenant, &chat, question, request, limit, log).await
        }
        SeedRoute::SendImage(chat) => {
            let question = content(Shape::ImageTurn)?;
            turn(app, tenant, &chat, question, request, limit, log).await
        }
        SeedRoute::Regenerate(chat) => {
            let asked = content(Shape::Regenerate)?;
            redo(app, tenant, &chat, asked, request, limit, log).await
        }
        SeedRoute::Edit(chat) => {
            let asked = content(Shape::Edit)?;
            redo(app, tenant, &chat, asked, request, limit, log).await
        }
        other => {
            log.redis(limit).await?;
            dispatch(app, other, tenant, request, log).await
        }
    }
}

/// The seed routes other than a turn.
async fn dispatch(
    app: &App,
    route: SeedRoute,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let content = |shape| Content::parse(request.body(), shape, app.max_body_bytes);
    let store = &app.store;
    match route {
        SeedRoute::GetGlobalSystem => {
            let prompt = log.redis(store.global_prompt(tenant)).await?;
            let content = prompt.as_deref().unwrap_or(&app.default_system_prompt);
            Ok(json_response(
                StatusCode::OK,
                &json!({ "content": content }),
            ))
        }
        SeedRoute::SetGlobalSystem => {
            let Content { content, .. } = content(Shape::Content)?;
            log.redis(store.set_global_prompt(tenant, &content)).await?;
            Ok(empty_object())
        }
        SeedRoute::Moderate => {
            let Content { content, .. } = content(Shape::Content)?;
            let deadline = app.guard.deadline(request, false);
            let result = log
                .upstream(app.upstream.moderate(&content, deadline))
                .await?;
            Ok(json_response(StatusCode::OK, &result))
        }
        SeedRoute::GetChatSystem(chat) => {
            let prompt = log.redis(store.chat_prompt(tenant, &chat)).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "content": prompt.unwrap_or_default() }),
            ))
        }
        SeedRoute::SetChatSystem(chat) => {
            let Content { content, .. } = content(Shape::Content)?;
            log.redis(store.set_chat_prompt(tenant, &chat, &content))
                .await?;
            Ok(empty_object())
        }
        SeedRoute::GetChat(chat) => {
            // The turn being made, named beside the transcript it is not in yet, and whether
            // the chat is temporary (for a page to say so).
            let read = async {
                tokio::join!(
                    store.turns(tenant, &chat),
                    store.live_turn(tenant, &chat),
                    store.temporary(tenant, &chat),
                )
            };
            let (turns, live, temporary) = read.await;
            let turns = log.redis(std::future::ready(turns)).await?;
            // The older proxy's messages, each reply with its tokens when asked for.
            let mut response = match query_flag(request, "tokens")? {
                true => json_response(StatusCode::OK, &transcript_with_tokens(&turns)),
                false => json_response(StatusCode::OK, &transcript(&turns)),
            };
            let live = live
                .ok()
                .flatten()
                .and_then(|id| HeaderValue::from_str(&id).ok());
            if let Some(id) = live {
                response.headers_mut().insert(X_CHAT_LIVE, id);
            }
            if let Some(ttl) = temporary? {
                response
                    .headers_mut()
                    .insert(X_CHAT_TEMPORARY, HeaderValue::from(ttl.as_secs()));
            }
            Ok(response)
        }
        SeedRoute::Live(chat) => live::follow(app, tenant, &chat, request, log).await,
        SeedRoute::Stop(chat) => live::stop(app, tenant, &chat, log).await,
        SeedRoute::ClearChat(chat) => {
            log.redis(store.clear(tenant, &chat)).await?;
            Ok(empty_object())
        }
        // `serve` runs turns itself, to count their limit in the same round trip as their
        // read; here the limit has been counted already.
        SeedRoute::SendChat(chat) => {
            let question = content(Shape::Turn)?;
            let counted = std::future::ready(Ok(()));
            turn(app, tenant, &chat, question, request, counted, log).await
        }
        SeedRoute::SendImage(chat) => {
            let question = content(Shape::ImageTurn)?;
            let counted = std::future::ready(Ok(()));
            turn(app, tenant, &chat, question, request, counted, log).await
        }
        SeedRoute::Regenerate(chat) => {
            let asked = content(Shape::Regenerate)?;
            let counted = std::future::ready(Ok(()));
            redo(app, tenant, &chat, asked, request, counted, log).await
        }
        SeedRoute::Edit(chat) => {
            let asked = content(Shape::Edit)?;
            let counted = std::future::ready(Ok(()));
            redo(app, tenant, &chat, asked, request, counted, log).await
        }
    }
}

/// A seed turn (`/chat`, `/img`): one question, answered as the older proxy answered it,
/// or streamed when the caller asked (`Accept: text/event-stream` or `"stream": true`).
async fn turn(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    question: Content,
    request: &Request,
    rate_limit: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let model = if question.url.is_some() {
        Model::Vision
    } else {
        Model::Chat
    };
    let streamed = question.stream || accepts_event_stream(request.headers());
    let name = chosen(app, question.model, model)?;
    let route = match model {
        Model::Chat => "chat",
        Model::Vision => "img",
    };
    let live =
        streamed.then(|| json!({"route": route, "content": question.content, "url": question.url}));
    let asked = vec![Asked::User(UserContent::question(
        question.content,
        question.url,
    ))];
    let how = How {
        asked,
        redo: None,
        model: name,
        streamed,
        kind: model_kind(model),
        live,
    };
    answer(app, tenant, chat, how, request, rate_limit, log).await
}

/// `/regenerate` and `/edit`: the newest turn, or a question edited, asked again, and the
/// answer given as `/chat` gives it. The engine finds what to ask in the chat it reads and
/// replaces the old turns in the turn's one write, so a redo that fails changes nothing.
async fn redo(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    asked: Content,
    request: &Request,
    rate_limit: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let streamed = asked.stream || accepts_event_stream(request.headers());
    let live = streamed.then(|| match asked.index {
        Some(index) => json!({"route": "edit", "index": index, "content": asked.content}),
        None => json!({"route": "regenerate"}),
    });
    let (redo, kind): (Redo, &'static [u8]) = match asked.index {
        Some(index) => (
            Redo::Edit {
                index,
                content: asked.content,
            },
            b"edit",
        ),
        None => (Redo::Last, b"regenerate"),
    };
    let how = How {
        asked: Vec::new(),
        redo: Some(redo),
        model: chosen(app, asked.model, Model::Chat)?,
        streamed,
        kind,
        live,
    };
    answer(app, tenant, chat, how, request, rate_limit, log).await
}

/// What a seed turn asks, and how it is answered.
struct How {
    asked: Vec<Asked>,
    redo: Option<Redo>,
    /// The model to ask, by name: the request's `model`, else `CHAT_MODEL` (`VISION_MODEL`
    /// for an image).
    model: String,
    streamed: bool,
    /// What the route asks, for the `Idempotency-Key`'s fingerprint.
    kind: &'static [u8],
    /// What a streamed turn asks, as `GET /<chat_id>/live` tells its followers.
    live: Option<serde_json::Value>,
}

/// A seed turn's answer: buffered JSON, or server-sent events.
async fn answer(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    how: How,
    request: &Request,
    rate_limit: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let How {
        asked,
        redo,
        model,
        streamed,
        kind,
        live,
    } = how;
    let keep = idempotency::key_of(request, Some(chat))?.map(|key| {
        let fingerprint = idempotency::fingerprint(&[
            b"seed",
            kind,
            if streamed { b"stream" } else { b"json" },
            request.body().as_ref(),
        ]);
        Keep::new(key, fingerprint, Arc::new(kept_reply))
    });
    let ask = Ask {
        tenant,
        chat: Some(chat),
        asked,
        prompt: None,
        resent: None,
        redo,
        responses: None,
        model: &model,
        params: None,
        deadline: app.guard.deadline(request, streamed),
        ip: source_ip(request),
        keep,
    };
    let ask_deadline = ask.deadline;
    if !streamed {
        let answered = match app.turns.run(ask, rate_limit, log).await? {
            Ran::Answered(answered) => answered,
            Ran::Replayed(answer) => return Ok(replayed(json_body(answer.into_bytes()))),
        };
        let mut response = json_response(StatusCode::OK, &Reply::of(&answered));
        if !answered.stored {
            response
                .headers_mut()
                .insert(X_CHAT_STORED, HeaderValue::from_static("false"));
        }
        return Ok(response);
    }
    let open = match app.turns.open(ask, rate_limit, log).await? {
        Opened::Streaming(open) => open,
        Opened::Replayed(answer) => {
            let frame = sse_event(Some("done"), answer.as_bytes());
            return Ok(replayed(event_stream(ResponseBody::Whole(frame))));
        }
    };
    let live = live.unwrap_or_default().to_string();
    Ok(stream::answer(app, tenant, chat, *open, live, ask_deadline))
}

/// The model a seed turn asks: the one its body names, when `ALLOWED_MODELS` allows it,
/// else the configured one for what it asks.
fn chosen(app: &App, named: Option<serde_json::Value>, kind: Model) -> Result<String, ApiError> {
    crate::body::model_of(named, &app.allowed_models, app.upstream.model_name(kind))
}

fn model_kind(model: Model) -> &'static [u8] {
    match model {
        Model::Chat => b"chat",
        Model::Vision => b"img",
    }
}

/// The reply as kept for an `Idempotency-Key`: the JSON a buffered turn answers, which a
/// streamed one sends as its `done` event.
fn kept_reply(answered: &Answered) -> String {
    String::from_utf8_lossy(&to_json(&Reply::of(answered))).into_owned()
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// The answer to `/chat` and `/img`, field for field as the older proxy sent it.
#[derive(Serialize)]
struct Reply<'a> {
    content: &'a str,
    role: &'static str,
    tokens: Tokens,
    /// `false` on a streamed turn that could not be stored, and absent otherwise (a
    /// buffered turn says it in the `X-Chat-Stored` header, which a stream has sent already).
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<bool>,
    /// `true` on a streamed turn stopped (`POST /<chat_id>/stop`) before its end: its
    /// `content` is what it had written, kept as the turn; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<bool>,
}

impl<'a> Reply<'a> {
    fn of(answered: &'a Answered) -> Self {
        Reply {
            content: &answered.reply,
            role: "assistant",
            tokens: Tokens {
                usage: answered.usage,
                compaction: answered.compaction.as_ref().map(|cost| cost.to_json(false)),
            },
            stored: None,
            stopped: answered.stopped.then_some(true),
        }
    }
}

/// A reply's `tokens`: its usage, and what compacting the chat's window cost when this
/// turn did (`COMPACT_AT_TOKENS`).
#[derive(Serialize)]
struct Tokens {
    #[serde(flatten)]
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    compaction: Option<serde_json::Value>,
}
