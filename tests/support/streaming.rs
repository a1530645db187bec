//! The streaming side of the fake OpenAI. wiremock sends bodies whole, so a small hyper
//! server sits in front of it: every request goes to wiremock (which records it and decides
//! the answer, failures included), and a `stream: true` request that wiremock answers with a
//! `chat.completion` is turned into OpenAI's stream of `chat.completion.chunk` events, sent
//! over time as the test's [`StreamScript`] says: pauses, a cut connection, an error event.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How a streamed answer is sent.
#[derive(Debug, Clone)]
pub struct StreamScript {
    /// Silence before the first chunk (a reasoning model thinking).
    pub first_delay: Duration,
    /// Pause between chunks.
    pub pause: Duration,
    /// Words per content chunk.
    pub words_per_chunk: usize,
    pub fault: Fault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The connection is cut after this many content chunks.
    CutAfter(usize),
    /// The stream ends cleanly after this many content chunks, without finishing the reply.
    EndAfter(usize),
    /// An OpenAI error event after this many content chunks.
    ErrorAfter(usize),
    /// A Responses stream's `response.failed` after this many text deltas, saying why
    /// (a chat stream's error event, on the chat route).
    FailAfter(usize),
    /// Silence for this long after this many content chunks.
    StallAfter(usize, Duration),
    /// The whole reply, its end and its usage, and then neither `[DONE]` nor a close.
    HangAfterEnd,
}

impl Default for StreamScript {
    fn default() -> Self {
        StreamScript {
            first_delay: Duration::ZERO,
            pause: Duration::from_millis(5),
            words_per_chunk: 1,
            fault: Fault::None,
        }
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

/// Starts the front for the wiremock server at `wiremock`; returns its address.
pub async fn start(wiremock: String, script: Arc<Mutex<StreamScript>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    chat_proxy::install_tls_provider();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (wiremock, script, http) = (wiremock.clone(), script.clone(), http.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    forward(request, wiremock.clone(), script.clone(), http.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

async fn forward(
    request: Request<Incoming>,
    wiremock: String,
    script: Arc<Mutex<StreamScript>>,
    http: reqwest::Client,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut upstream = http.request(parts.method.clone(), format!("{wiremock}{}", parts.uri));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.body(body).send().await else {
        return Ok(whole(
            502,
            Vec::new(),
            Bytes::from_static(b"wiremock is gone"),
        ));
    };
    let status = answer.status().as_u16();
    let headers: Vec<(String, String)> = answer
        .headers()
        .iter()
        .filter(|(name, _)| *name != "content-length" && *name != "transfer-encoding")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let bytes = answer.bytes().await.unwrap_or_default();
    let completion: Option<Value> = serde_json::from_slice(&bytes).ok();
    let wants_stream = asked["stream"] == json!(true);
    match completion {
        Some(response) if wants_stream && status == 200 && response["object"] == "response" => {
            let script = script.lock().unwrap().clone();
            Ok(streamed_response(response, script))
        }
        Some(completion) if wants_stream && status == 200 && completion["choices"].is_array() => {
            let include_usage = asked["stream_options"]["include_usage"] == json!(true);
            let script = script.lock().unwrap().clone();
            Ok(streamed(completion, include_usage, script))
        }
        _ => Ok(whole(status, headers, bytes)),
    }
}

fn whole(status: u16, headers: Vec<(String, String)>, body: Bytes) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .unwrap()
}

/// The chunks OpenAI would send for `completion`, in order (without `[DONE]`).
pub fn chunks_of(
    completion: &Value,
    include_usage: bool,
    words_per_chunk: usize,
) -> (Vec<Value>, Vec<Value>) {
    let message = &completion["choices"][0]["message"];
    let (field, text) = match message["content"].as_str() {
        Some(text) => ("content", text.to_owned()),
        None => (
            "refusal",
            message["refusal"].as_str().unwrap_or_default().to_owned(),
        ),
    };
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "system_fingerprint": completion["system_fingerprint"],
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut pieces = Vec::new();
    let opening = match message["tool_calls"].as_array() {
        // Tool calls as OpenAI streams them: each call's id and name first, with empty
        // arguments, then its arguments in pieces.
        Some(calls) => {
            let heads: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(index, call)| {
                    json!({"index": index, "id": call["id"], "type": "function",
                           "function": {"name": call["function"]["name"], "arguments": ""}})
                })
                .collect();
            for (index, call) in calls.iter().enumerate() {
                let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
                let (first, second) = arguments.split_at(arguments.len() / 2);
                for piece in [first, second] {
                    pieces.push(chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
            }
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": heads, "refusal": null}),
                Value::Null,
            )
        }
        None => {
            let words: Vec<&str> = text.split_inclusive(' ').collect();
            for group in words.chunks(words_per_chunk.max(1)) {
                pieces.push(chunk(json!({ field: group.concat() }), Value::Null));
            }
            chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            )
        }
    };
    let mut ending = vec![chunk(
        json!({}),
        json!(completion["choices"][0]["finish_reason"]),
    )];
    if include_usage {
        ending.push(json!({
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "system_fingerprint": completion["system_fingerprint"],
            "choices": [],
            "usage": completion["usage"],
        }));
    }
    let mut content = vec![opening];
    content.extend(pieces);
    (content, ending)
}

fn streamed(completion: Value, include_usage: bool, script: StreamScript) -> Response<Body> {
    let (content, ending) = chunks_of(&completion, include_usage, script.words_per_chunk);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let send = |value: &Value| {
            let frame = Frame::data(Bytes::from(format!("data: {value}\n\n")));
            tx.send(Ok(frame))
        };
        tokio::time::sleep(script.first_delay).await;
        // The opening chunk (role) is not counted as content.
        for (index, chunk) in content.iter().enumerate() {
            let sent = index.saturating_sub(1);
            if index > 0 {
                tokio::time::sleep(script.pause).await;
                match script.fault {
                    Fault::CutAfter(n) if sent == n => {
                        let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                        return;
                    }
                    Fault::EndAfter(n) if sent == n => return,
                    Fault::ErrorAfter(n) | Fault::FailAfter(n) if sent == n => {
                        let error = json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}});
                        let _ = send(&error).await;
                        return;
                    }
                    Fault::StallAfter(n, stall) if sent == n => tokio::time::sleep(stall).await,
                    _ => {}
                }
            }
            if send(chunk).await.is_err() {
                return;
            }
        }
        for chunk in &ending {
            if send(chunk).await.is_err() {
                return;
            }
        }
        if script.fault == Fault::HangAfterEnd {
            // Holds the connection open, silent, until the client gives up on it.
            tx.closed().await;
            return;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(BodyExt::boxed(body))
        .unwrap()
}

/// What a `response.failed` of [`Fault::FailAfter`] says.
pub const FAILED_MESSAGE: &str = "The model's output could not be completed (test).";

/// The events OpenAI's Responses API streams for `response`, in order: the response
/// created, each output item added, a message's text word by word, each item done, the
/// response completed.
pub fn events_of(response: &Value) -> Vec<Value> {
    let mut started = response.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    let mut events = vec![json!({"type": "response.created", "response": started})];
    for (index, item) in response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut opening = item.clone();
        opening["status"] = json!("in_progress");
        if item["type"] == "message" {
            opening["content"] = json!([]);
        }
        events.push(
            json!({"type": "response.output_item.added", "output_index": index, "item": opening}),
        );
        if item["type"] == "message" {
            let text = item["content"][0]["text"].as_str().unwrap_or_default();
            for word in text.split_inclusive(' ') {
                events.push(
                    json!({"type": "response.output_text.delta", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "delta": word}),
                );
            }
        }
        if item["type"] == "function_call" {
            events.push(json!({"type": "response.function_call_arguments.delta",
                "item_id": item["id"], "output_index": index, "delta": item["arguments"]}));
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        );
    }
    events.push(json!({"type": "response.completed", "response": response}));
    for (sequence, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(sequence);
    }
    events
}

fn streamed_response(response: Value, script: StreamScript) -> Response<Body> {
    let events = events_of(&response);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        tokio::time::sleep(script.first_delay).await;
        let mut deltas = 0;
        for event in &events {
            if event["type"] == "response.output_text.delta" {
                if deltas > 0 {
                    tokio::time::sleep(script.pause).await;
                }
                match script.fault {
                    Fault::CutAfter(n) if deltas == n => {
                        let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                        return;
                    }
                    Fault::EndAfter(n) if deltas == n => return,
                    Fault::FailAfter(n) if deltas == n => {
                        let mut failed = response.clone();
                        failed["status"] = json!("failed");
                        failed["error"] = json!({"code": "server_error",
                            "message": FAILED_MESSAGE});
                        let event = json!({"type": "response.failed", "response": failed,
                            "sequence_number": event["sequence_number"]});
                        let frame = format!("event: response.failed\ndata: {event}\n\n");
                        let _ = tx.send(Ok(Frame::data(Bytes::from(frame)))).await;
                        return;
                    }
                    Fault::ErrorAfter(n) if deltas == n => {
                        let error = json!({"type": "error", "code": "server_error",
                            "message": "The server had an error while processing your request.",
                            "param": null, "sequence_number": event["sequence_number"]});
                        let frame = format!("event: error\ndata: {error}\n\n");
                        let _ = tx.send(Ok(Frame::data(Bytes::from(frame)))).await;
                        return;
                    }
                    _ => {}
                }
                deltas += 1;
            }
            let name = event["type"].as_str().unwrap_or_default();
            let frame = format!("event: {name}\ndata: {event}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(frame)))).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(BodyExt::boxed(body))
        .unwrap()
}
