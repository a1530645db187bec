//! OpenAI's own API, for any OpenAI SDK or chat UI: `POST /v1/chat/completions` and
//! `GET /v1/models`.
//!
//! Without an `X-Chat-Id` header a completion is stateless: the body goes upstream as sent
//! (with the proxy's key) and the answer comes back as received. With one, it is a turn of
//! that chat, the same chat the seed routes write: `messages` holds only the caller's new
//! `user` messages, the proxy adds the prompts and the history, and stores the new messages
//! with the reply. A streamed answer passes upstream's chunks on as OpenAI sends them.

use bytes::Bytes;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Request, Response};
use serde_json::{json, Map, Value};

use std::sync::Arc;

use crate::api::seed::{json_body, replayed, X_CHAT_STORED};
use crate::app::{source_ip, App};
use crate::auth::Tenant;
use crate::body::{image_url, json_object};
use crate::config::AllowedModels;
use crate::error::ApiError;
use crate::http::{event_stream, json_response, sse_event, FrameSender, ResponseBody, KEEP_ALIVE};
use crate::idempotency;
use crate::request_log::RequestLog;
use crate::routes::ChatId;
use crate::store::{ImageRef, Part, UserContent};
use crate::turn::{Answered, Ask, Keep, Opened, Ran, StreamSink};
use crate::upstream::Chunk;

mod replay;

use self::replay::Gathered;

/// The header that makes a completion a turn of a stored chat.
pub const X_CHAT_ID: &str = "x-chat-id";

/// Parameters a stateful completion cannot keep faithfully: refused, never dropped.
const UNSUPPORTED_WITH_A_CHAT: [&str; 4] = ["tools", "functions", "tool_choice", "function_call"];

/// `POST /v1/chat/completions` for an authenticated caller. The rate limit is counted in
/// the turn's read round trip.
pub async fn completion(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let rate_limit = app.rate_limit(tenant, request);
    let mut params = json_object(request.body(), app.max_body_bytes)?;
    let chat = chat_id(request)?;
    let stream = match params.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => stream,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_stream",
                "`stream` must be true or false",
            ))
        }
    };
    let include_usage = stream_options(&mut params)?;
    let model = model(
        &mut params,
        &app.allowed_models,
        app.upstream.model_name(crate::upstream::Model::Chat),
    )?;
    let asked = match &chat {
        Some(_) => stateful_messages(&mut params)?,
        None => {
            stateless_messages(&params)?;
            Vec::new()
        }
    };
    let keep = idempotency::key_of(request, chat.as_ref())?.map(|key| {
        let fingerprint = idempotency::fingerprint(&[
            b"v1",
            if stream { b"stream" } else { b"json" },
            if include_usage { b"usage" } else { b"-" },
            request.body().as_ref(),
        ]);
        // A buffered answer is kept as upstream sent it; a streamed one by its sink.
        let render = |answered: &Answered| {
            answered
                .raw
                .as_ref()
                .map(|raw| raw.get().to_owned())
                .unwrap_or_default()
        };
        Keep::new(key, fingerprint, Arc::new(render))
    });
    let gather = keep.is_some();
    let ask = Ask {
        tenant,
        chat: chat.as_ref(),
        asked,
        model: &model,
        params: Some(&params),
        deadline: app.deadline(request, stream),
        ip: source_ip(request),
        keep,
    };
    if !stream {
        let answered = match app.turns.run(ask, rate_limit, log).await? {
            Ran::Answered(answered) => answered,
            Ran::Replayed(answer) => return Ok(replayed(json_body(answer.into_bytes()))),
        };
        let raw = answered
            .raw
            .as_ref()
            .map(|raw| raw.get().as_bytes().to_vec())
            .unwrap_or_default();
        let mut response = json_body(raw);
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
            let frames = replay::chunks(&answer, include_usage);
            return Ok(replayed(event_stream(ResponseBody::Whole(frames))));
        }
    };
    let (frames, body) = ResponseBody::channel(app.stream_stall);
    app.spawn(async move {
        let mut sink = Chunks {
            frames,
            include_usage,
            gathered: gather.then(Gathered::default),
        };
        let last = match open.finish(&mut sink).await {
            Ok(answered) => {
                if !answered.stored {
                    // A stream has sent its headers: a comment is the one place left to say it.
                    sink.frames
                        .send(Bytes::from_static(b": the chat could not be stored\n\n"))
                        .await;
                }
                Bytes::from_static(b"data: [DONE]\n\n")
            }
            Err(error) => {
                error.log();
                sse_event(None, &error.body())
            }
        };
        sink.frames.send(last).await;
    });
    Ok(event_stream(body))
}

/// The chat named by `X-Chat-Id`, if any: the path's alphabet and limits.
fn chat_id(request: &Request) -> Result<Option<ChatId>, ApiError> {
    let Some(value) = request.headers().get(X_CHAT_ID) else {
        return Ok(None);
    };
    let id = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "invalid_chat_id",
            "X-Chat-Id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -",
        )
    })?;
    ChatId::parse_decoded(id.trim()).map(Some)
}

/// Takes the caller's `stream_options` and asks upstream for usage always; says whether the
/// caller asked for it (its usage chunk is passed on only then).
fn stream_options(params: &mut Map<String, Value>) -> Result<bool, ApiError> {
    match params.remove("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(options)) => {
            Ok(options.get("include_usage") == Some(&Value::Bool(true)))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid_stream_options",
            "`stream_options` must be an object",
        )),
    }
}

/// The model to ask: the caller's, when `ALLOWED_MODELS` allows it, else `CHAT_MODEL`.
fn model(
    params: &mut Map<String, Value>,
    allowed: &AllowedModels,
    default: &str,
) -> Result<String, ApiError> {
    match params.remove("model") {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(model)) if allowed.allows(&model) => Ok(model),
        Some(Value::String(model)) => Err(ApiError::bad_request(
            "model_not_allowed",
            format!("model `{model}` is not allowed here; GET /v1/models lists the ones that are"),
        )),
        Some(_) => Err(ApiError::bad_request(
            "invalid_model",
            "`model` must be a string",
        )),
    }
}

fn invalid_messages(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_messages", message)
}

/// A stateless call's `messages`: a non-empty array of objects with a role, as upstream
/// requires too (refused here, it costs no upstream call); the rest is upstream's to judge.
fn stateless_messages(params: &Map<String, Value>) -> Result<(), ApiError> {
    let messages = match params.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Err(invalid_messages(
                "`messages` must be a non-empty array of messages",
            ))
        }
    };
    for (index, message) in messages.iter().enumerate() {
        if !message.get("role").is_some_and(Value::is_string) {
            return Err(invalid_messages(format!(
                "messages[{index}] must be an object with a `role`"
            )));
        }
    }
    Ok(())
}

/// A turn's new messages: one or more `user` messages, each text or text and image parts,
/// all of which the chat can keep. Parameters the chat cannot keep are refused.
fn stateful_messages(params: &mut Map<String, Value>) -> Result<Vec<UserContent>, ApiError> {
    if let Some(name) = UNSUPPORTED_WITH_A_CHAT
        .iter()
        .find(|name| params.contains_key(**name))
    {
        return Err(ApiError::bad_request(
            "unsupported_parameter",
            format!("`{name}` is not supported with X-Chat-Id: the chat stores user messages and replies, not tool calls"),
        ));
    }
    if let Some(n) = params.get("n") {
        if n.as_u64() != Some(1) && !n.is_null() {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                "`n` must be 1 with X-Chat-Id: a chat keeps one reply per turn",
            ));
        }
    }
    let Some(Value::Array(messages)) = params.remove("messages") else {
        return Err(invalid_messages(
            "`messages` must be a non-empty array of user messages",
        ));
    };
    if messages.is_empty() {
        return Err(invalid_messages(
            "`messages` must hold at least one user message",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| user_message(i, message))
        .collect()
}

fn user_message(index: usize, message: Value) -> Result<UserContent, ApiError> {
    let Value::Object(mut message) = message else {
        return Err(invalid_messages(format!(
            "messages[{index}] must be an object"
        )));
    };
    match message.get("role").and_then(Value::as_str) {
        Some("user") => {}
        Some(role @ ("system" | "developer")) => {
            return Err(invalid_messages(format!(
                "messages[{index}] is a {role} message: with X-Chat-Id, set the chat's prompt with POST /<chat_id>/system (the global one with POST /system)"
            )))
        }
        Some(role @ ("assistant" | "tool" | "function")) => {
            return Err(invalid_messages(format!(
                "messages[{index}] is an {role} message: with X-Chat-Id the proxy keeps the history; send only the new user messages"
            )))
        }
        _ => return Err(invalid_messages(format!("messages[{index}] needs a role, and only `user` is taken with X-Chat-Id"))),
    }
    message.remove("role");
    let content = message.remove("content");
    if let Some(other) = message.keys().next() {
        return Err(invalid_messages(format!(
            "messages[{index}].{other} cannot be kept with the chat: send role and content only"
        )));
    }
    match content {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(UserContent::Text(text)),
        Some(Value::Array(parts)) if !parts.is_empty() => parts
            .into_iter()
            .enumerate()
            .map(|(p, part)| content_part(index, p, part))
            .collect::<Result<Vec<Part>, ApiError>>()
            .map(UserContent::Parts),
        _ => Err(invalid_messages(format!(
            "messages[{index}].content must be non-empty text, or an array of text and image_url parts"
        ))),
    }
}

fn content_part(index: usize, number: usize, part: Value) -> Result<Part, ApiError> {
    let at = format!("messages[{index}].content[{number}]");
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "text" => match part.get("text") {
            Some(Value::String(text)) => Ok(Part::Text { text: text.clone() }),
            _ => Err(invalid_messages(format!("{at}.text must be a string"))),
        },
        "image_url" => {
            let image = part.get("image_url");
            let url = image
                .and_then(|image| image.get("url"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_messages(format!("{at}.image_url.url must be a string")))?;
            let detail = match image.and_then(|image| image.get("detail")) {
                None | Some(Value::Null) => None,
                Some(Value::String(detail)) => Some(detail.clone()),
                Some(_) => {
                    return Err(invalid_messages(format!(
                        "{at}.image_url.detail must be a string"
                    )))
                }
            };
            Ok(Part::ImageUrl {
                image_url: ImageRef {
                    url: image_url(url.to_owned())?,
                    detail,
                },
            })
        }
        other => Err(invalid_messages(format!(
            "{at} is of type `{other}`: a chat keeps text and image_url parts only"
        ))),
    }
}

/// `GET /v1/models`: the models callers may name, without asking upstream; with
/// `ALLOWED_MODELS=*`, upstream's own list as it sends it.
pub async fn models(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    log.redis(app.rate_limit(tenant, request)).await?;
    match &app.allowed_models {
        AllowedModels::Any => {
            let deadline = app.deadline(request, false);
            let raw = log.upstream(app.upstream.models(deadline)).await?;
            let mut response = Response::new(ResponseBody::from(raw.get().as_bytes().to_vec()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        AllowedModels::Only(models) => {
            let data: Vec<Value> = models
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "chat-proxy"}))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data}),
            ))
        }
    }
}

/// Upstream's chunks, passed on as OpenAI sends them.
struct Chunks {
    frames: FrameSender,
    /// The caller asked for the usage chunk (the proxy always asks upstream for it).
    include_usage: bool,
    /// What the stream said, gathered to be kept for an `Idempotency-Key`.
    gathered: Option<Gathered>,
}

impl StreamSink for Chunks {
    async fn chunk(&mut self, chunk: &Chunk) {
        if let Some(gathered) = &mut self.gathered {
            gathered.add(chunk.raw.get());
        }
        if chunk.usage.is_some() && !self.include_usage && chunk.is_usage_only() {
            return;
        }
        self.frames
            .send(sse_event(None, chunk.raw.get().as_bytes()))
            .await;
    }

    async fn keep_alive(&mut self) {
        self.frames.send(Bytes::from_static(KEEP_ALIVE)).await;
    }

    fn kept_answer(&self, _answered: &Answered) -> String {
        self.gathered
            .as_ref()
            .map(|gathered| gathered.completion().to_string())
            .unwrap_or_default()
    }
}
