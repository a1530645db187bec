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

use crate::app::App;
use crate::body::json_object;
use crate::chat::ChatId;
use crate::chat::Tenant;
use crate::config::AllowedModels;
use crate::error::ApiError;
use crate::guard::source_ip;
use crate::http::{
    event_stream, json_body, json_response, replayed, sse_event, FrameSender, ResponseBody,
    KEEP_ALIVE, X_CHAT_STORED,
};
use crate::idempotency;
use crate::request_log::RequestLog;
use crate::turn::{Answered, Ask, Keep, Opened, Ran, StreamSink};
use crate::upstream::Chunk;

mod messages;
mod replay;

use self::messages::{stateful_messages, stateless_messages};
use self::replay::Gathered;

/// The header that makes a completion a turn of a stored chat.
pub const X_CHAT_ID: &str = "x-chat-id";

/// `POST /v1/chat/completions` for an authenticated caller. The rate limit is counted in
/// the turn's read round trip.
pub async fn completion(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let rate_limit = app.guard.rate_limit(tenant, request);
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
    let model = crate::body::model(
        &mut params,
        &app.allowed_models,
        app.upstream.model_name(crate::upstream::Model::Chat),
    )?;
    let stateful = match &chat {
        Some(_) => Some(stateful_messages(&mut params)?),
        None => {
            stateless_messages(&params)?;
            None
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
    let (asked, prompt, resent) = match stateful {
        Some(turn) => (turn.asked, turn.prompt, Some(turn.resent)),
        None => (Vec::new(), None, None),
    };
    let ask = Ask {
        tenant,
        chat: chat.as_ref(),
        asked,
        prompt,
        resent,
        redo: None,
        responses: None,
        model: &model,
        params: Some(&params),
        deadline: app.guard.deadline(request, stream),
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
    Ok(Some(ChatId::parse_decoded(id.trim())?))
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

/// `GET /v1/models`: the models callers may name, without asking upstream; with
/// `ALLOWED_MODELS=*`, upstream's own list as it sends it.
pub async fn models(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    log.redis(app.guard.rate_limit(tenant, request)).await?;
    match &app.allowed_models {
        AllowedModels::Any => {
            let deadline = app.guard.deadline(request, false);
            let raw = log.upstream(app.upstream.models(deadline)).await?;
            let mut response = Response::new(ResponseBody::from(raw.get().as_bytes().to_vec()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        AllowedModels::Only(models) => {
            let data: Vec<Value> = models.iter().map(|id| listed_model(id)).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data}),
            ))
        }
    }
}

/// `GET /v1/models/{id}`: a model callers may name, as `GET /v1/models` lists it (with
/// `ALLOWED_MODELS=*`, upstream's own answer); any other is a 404 `model_not_found`.
pub async fn model(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    log.redis(app.guard.rate_limit(tenant, request)).await?;
    let not_found = || ApiError::Missing {
        code: "model_not_found",
        param: Some("model"),
        message: format!("the model `{id}` does not exist or is not allowed here"),
    };
    match &app.allowed_models {
        AllowedModels::Any => {
            // Only what a model id can hold goes into upstream's path.
            let plain = |c: char| c.is_ascii_alphanumeric() || "-._:/".contains(c);
            if !id.chars().all(plain) {
                return Err(not_found());
            }
            let deadline = app.guard.deadline(request, false);
            let raw = log.upstream(app.upstream.model(id, deadline)).await?;
            Ok(json_body(raw.get().as_bytes().to_vec()))
        }
        AllowedModels::Only(models) if models.iter().any(|model| model == id) => {
            Ok(json_response(StatusCode::OK, &listed_model(id)))
        }
        AllowedModels::Only(_) => Err(not_found()),
    }
}

/// A model as `GET /v1/models` lists an allowed one.
fn listed_model(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "chat-proxy"})
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
