//! OpenAI's Responses API, stateful in the proxy's store: `POST /v1/responses`, and the
//! stored responses (`stored.rs`).
//!
//! A response continues a chain (`previous_response_id`) or a conversation (`conversation`,
//! which is a chat of the seed routes) or starts a new chain. Upstream gets the whole input
//! the proxy assembled, with `store: false`, so OpenAI keeps nothing; the answer is
//! upstream's `response` under the proxy's own id, kept before it is answered, so its id
//! can be continued at once, from any instance. A streamed response passes upstream's
//! events on as they come, with the same id.

mod background;
mod follow;
mod replay;
mod request;
mod run;
mod stateless;
mod stored;

use std::sync::Arc;

use bytes::Bytes;
use lambda_http::{Request, Response};
use serde_json::{json, Map, Value};

pub use self::background::{cancel, RunEvent};
pub use self::follow::resume;
pub use self::run::run;
pub use self::stateless::{compact, input_tokens};
pub use self::stored::{delete, get, input_items};
use crate::app::App;
use crate::body::json_object;
use crate::chat::{ChatId, Exchange, StoredResponse, Tenant};
use crate::error::ApiError;
use crate::guard::source_ip;
use crate::http::{
    event_stream, json_body, replayed, sse_event, FrameSender, ResponseBody, KEEP_ALIVE,
    X_CHAT_STORED,
};
use crate::idempotency;
use crate::request_log::RequestLog;
use crate::turn::{
    Answered, Ask, Fixed, Keep, Opened, Ran, ResponsesCall, ResponsesTurn, StreamSink,
};
use crate::upstream::Chunk;
use lambda_http::http::HeaderValue;

/// A `POST /v1/responses` body, read: what its turn needs, owned, so that a background run
/// reads its request again the same way (`background.rs`).
struct Reading {
    params: Map<String, Value>,
    asked: request::Asked,
    model: String,
    /// The chat the turn reads (a chain's or a conversation's), and the turn it continues.
    read: Option<ChatId>,
    previous: Option<String>,
    /// The fields the proxy sets on the response (besides its id).
    fields: Map<String, Value>,
}

impl Reading {
    fn of(app: &App, body: &[u8]) -> Result<Reading, ApiError> {
        let mut params = json_object(body, app.max_body_bytes)?;
        let asked = request::read(&mut params, request::Input::Required)?;
        let model = crate::body::model(
            &mut params,
            &app.allowed_models,
            app.upstream.model_name(crate::upstream::Model::Chat),
        )?;
        let (read, previous) = asked.reads();
        let mut fields = Map::new();
        fields.insert(
            "previous_response_id".to_owned(),
            asked
                .previous
                .as_ref()
                .map_or(Value::Null, |(id, _, _)| json!(id)),
        );
        fields.insert("store".to_owned(), json!(asked.store));
        fields.insert("instructions".to_owned(), json!(asked.instructions));
        if let Some(conversation) = &asked.conversation {
            fields.insert(
                "conversation".to_owned(),
                json!({"id": conversation.as_str()}),
            );
        }
        if asked.background {
            fields.insert("background".to_owned(), json!(true));
        }
        Ok(Reading {
            params,
            asked,
            model,
            read,
            previous,
            fields,
        })
    }

    /// The turn this request asks for; its input is taken out of the reading.
    fn ask<'a>(
        &'a mut self,
        tenant: &'a Tenant,
        deadline: tokio::time::Instant,
        ip: Option<&'a str>,
        keep: Option<Keep>,
        fixed: Option<Fixed>,
    ) -> Ask<'a> {
        let exchange = Exchange {
            input: std::mem::take(&mut self.asked.input),
            response: StoredResponse::none(),
        };
        let this: &'a Reading = self;
        Ask {
            tenant,
            chat: this.read.as_ref(),
            asked: exchange.asked(),
            prompt: None,
            resent: None,
            redo: None,
            responses: Some(ResponsesTurn {
                input: exchange.input,
                instructions: this.asked.instructions.clone(),
                prompts: this.asked.conversation.is_some(),
                store: this.asked.store,
                previous: this.previous.clone(),
                conversation: this.asked.conversation.clone(),
                fields: this.fields.clone(),
                call: ResponsesCall::Create,
                fixed,
            }),
            model: &this.model,
            params: Some(&this.params),
            deadline,
            ip,
            keep,
        }
    }
}

/// `POST /v1/responses`. The rate limit is counted in the turn's read round trip.
pub async fn create(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let rate_limit = app.guard.rate_limit(tenant, request);
    let mut reading = Reading::of(app, request.body())?;
    let reveal = reading.asked.wants_encrypted_reasoning;
    let (stream, store) = (reading.asked.stream, reading.asked.store);
    let keep = idempotency::key_of(request, reading.asked.conversation.as_ref())?.map(|key| {
        let fingerprint = idempotency::fingerprint(&[
            b"responses",
            if stream { b"stream" } else { b"json" },
            request.body().as_ref(),
        ]);
        let render = move |answered: &Answered| caller_view(answered, reveal);
        Keep::new(key, fingerprint, Arc::new(render))
    });
    if reading.asked.background {
        // Boxed: the rarer path keeps its large future off every turn's stack.
        let queued = background::queue(app, tenant, request, reading, keep, rate_limit, log);
        return Box::pin(queued).await;
    }
    let mut own = reading.fields.clone();
    let ask = reading.ask(
        tenant,
        app.guard.deadline(request, stream),
        source_ip(request),
        keep,
        None,
    );
    if !stream {
        return match app.turns.run(ask, rate_limit, log).await? {
            Ran::Answered(answered) => {
                let mut response = json_body(caller_view(&answered, reveal).into_bytes());
                // A response asked to be stored that could not be (its conversation was
                // deleted meanwhile, say) is answered, and says so.
                if store && !answered.stored {
                    response
                        .headers_mut()
                        .insert(X_CHAT_STORED, HeaderValue::from_static("false"));
                }
                Ok(response)
            }
            Ran::Replayed(answer) => Ok(replayed(json_body(answer.into_bytes()))),
        };
    }
    let open = match app.turns.open(ask, rate_limit, log).await? {
        Opened::Streaming(open) => open,
        Opened::Replayed(answer) => {
            return Ok(replayed(event_stream(ResponseBody::Whole(replay::replay(
                &answer,
            )))))
        }
    };
    own.insert("id".to_owned(), json!(open.answer_id().unwrap_or_default()));
    let (frames, body) = ResponseBody::channel(app.stream_stall);
    app.spawn(async move {
        let mut sink = Events {
            frames,
            own,
            reveal,
            sequence: 0,
            failed: false,
        };
        let finished = open.finish(&mut sink).await;
        if let Ok(answered) = &finished {
            if store && !answered.stored {
                let comment = Bytes::from_static(b": the response could not be stored\n\n");
                sink.frames.send(comment).await;
            }
        }
        // A failure upstream told in its own event has been passed on as that event.
        if let (Err(error), false) = (finished, sink.failed) {
            error.log();
            let event = json!({"type": "error", "code": error.code(), "message": error.to_string(),
                "param": null, "sequence_number": sink.sequence});
            sink.frames
                .send(sse_event(Some("error"), event.to_string().as_bytes()))
                .await;
        }
    });
    Ok(event_stream(body))
}

/// The response as the caller sees it: the reasoning's encrypted content only when its
/// request asked for it (the proxy always keeps it, for the turns that follow).
fn caller_view(answered: &Answered, reveal: bool) -> String {
    let Some(raw) = &answered.raw else {
        return String::new();
    };
    if reveal {
        return raw.get().to_owned();
    }
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(mut response) => {
            hide_encrypted_reasoning(&mut response);
            response.to_string()
        }
        Err(_) => raw.get().to_owned(),
    }
}

/// Removes `encrypted_content` from every reasoning item of a response or an event.
fn hide_encrypted_reasoning(value: &mut Value) {
    let hide_output = |response: &mut Value| {
        for item in response
            .get_mut("output")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            hide_in_item(item);
        }
    };
    hide_output(value);
    if let Some(response) = value.get_mut("response") {
        hide_output(response);
    }
    if let Some(item) = value.get_mut("item") {
        hide_in_item(item);
    }
}

fn hide_in_item(item: &mut Value) {
    if item["type"] == "reasoning" {
        if let Some(item) = item.as_object_mut() {
            item.remove("encrypted_content");
        }
    }
}

/// Upstream's events, passed on as sent, each `response` in them under the proxy's id.
struct Events {
    frames: FrameSender,
    /// The fields the proxy sets on the response: its id, and those the request set.
    own: Map<String, Value>,
    reveal: bool,
    /// The next event's `sequence_number`, for an error the proxy adds at the end.
    sequence: u64,
    /// Upstream's `response.failed` was passed on: the proxy adds no error of its own.
    failed: bool,
}

impl StreamSink for Events {
    async fn chunk(&mut self, chunk: &Chunk) {
        let Ok(mut event) = serde_json::from_str::<Value>(chunk.raw.get()) else {
            return;
        };
        if let Some(Value::Object(response)) = event.get_mut("response") {
            for (field, value) in &self.own {
                response.insert(field.clone(), value.clone());
            }
        }
        if !self.reveal {
            hide_encrypted_reasoning(&mut event);
        }
        if let Some(sequence) = event["sequence_number"].as_u64() {
            self.sequence = sequence + 1;
        }
        let name = event["type"].as_str().unwrap_or("message").to_owned();
        self.failed |= name == "response.failed";
        self.frames
            .send(sse_event(Some(&name), event.to_string().as_bytes()))
            .await;
    }

    async fn keep_alive(&mut self) {
        self.frames.send(Bytes::from_static(KEEP_ALIVE)).await;
    }

    fn kept_answer(&self, answered: &Answered) -> String {
        caller_view(answered, self.reveal)
    }
}
