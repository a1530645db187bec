//! The built-in echo upstream (`OPENAI_BASE_URL=echo`), one room because it is one fake
//! server (its routes share the answer's text, tokens and pacing): OpenAI's HTTP API answered in
//! process, with no key and no network, so that every route can be tried on a fresh
//! machine. Only the HTTP exchange is replaced: requests are built, sent through the retry
//! layer and read back exactly as with OpenAI, by the same turn engine, store and limits.
//!
//! - a chat completion answers `echo: <the last user message> (<n> messages)`, with
//!   `[image: <url>]` for each image of that message (after a tool's result, the result
//!   instead of the user message), then, when that message asks for Markdown or for a
//!   table and code, a short Markdown sample (a table and a fenced block); streamed, it comes word by word (in at most 24 pieces,
//!   60 ms apart);
//! - with `tools`, a last user message that contains [`CALL_MARKER`] is answered with a call
//!   of the first tool, each string parameter given that message's text;
//! - token counts are the same for the same request: a word is a token, and each message
//!   costs three more;
//! - a response (`/responses`) answers the same way to its last user item (or the output
//!   of its last function call), `echo: <text> (<n> items)`, with a call of the first tool
//!   for [`CALL_MARKER`], a reasoning item with encrypted content when asked for one, and
//!   OpenAI's semantic events when streamed; an `item_reference` (or reasoning without its
//!   encrypted content) is a 404, as at OpenAI when nothing is stored;
//! - a compaction (`/responses/compact`, or `context_management` past its threshold) is a
//!   `compaction` item whose content says how many items it stands for;
//! - a chat completion asked the default `COMPACT_PROMPT` (a stored chat's compaction) is
//!   a summary that says how many messages it stands for, and the questions among them;
//! - a moderation is unflagged unless the text contains [`FLAG_MARKER`];
//! - the model list is the configured models.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use bytes::Bytes;
use lambda_http::http;
use serde_json::{json, Value};

use crate::config::DEFAULT_COMPACT_PROMPT;

/// Where the client thinks it sends requests; nothing ever connects to it.
pub const ECHO_BASE_URL: &str = "http://echo.invalid/v1";

/// With `tools`, a user message that contains this is answered with a tool call.
pub const CALL_MARKER: &str = "[call]";

/// A moderation of a text that contains this is flagged (as `violence`).
pub const FLAG_MARKER: &str = "[flag]";

/// The pause between two pieces of a streamed reply: slow enough to watch.
const WORD_PAUSE: Duration = Duration::from_millis(60);
/// A streamed reply comes in at most this many pieces (a word each, while it has fewer
/// words), so that even a long echo ends within a second or two.
const MAX_PIECES: usize = 24;

#[derive(Clone)]
pub struct EchoService {
    models: Arc<[String]>,
}

impl EchoService {
    pub fn new(models: Vec<String>) -> Self {
        EchoService {
            models: models.into(),
        }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

impl tower::Service<HttpRequestFactory> for EchoService {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let models = self.models.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let body: Value = request
                .body()
                .and_then(reqwest::Body::as_bytes)
                .and_then(|bytes| serde_json::from_slice(bytes).ok())
                .unwrap_or(Value::Null);
            let path = request.url().path();
            let route = path.strip_prefix("/v1").unwrap_or(path);
            Ok(match route {
                "/chat/completions" => chat(&body),
                "/responses" => responses(&body),
                "/responses/compact" => json_answer(200, &compacted(&body)),
                "/responses/input_tokens" => json_answer(200, &input_tokens(&body)),
                "/moderations" => json_answer(200, &moderation(&body)),
                "/models" => json_answer(200, &model_list(&models)),
                _ => json_answer(
                    404,
                    &json!({"error": {"message": format!("the echo upstream has no {path}"),
                        "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
                ),
            })
        })
    }
}

fn json_answer(status: u16, value: &Value) -> reqwest::Response {
    answer(
        status,
        "application/json",
        reqwest::Body::from(value.to_string()),
    )
}

fn answer(status: u16, content_type: &str, body: reqwest::Body) -> reqwest::Response {
    let response = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap_or_else(|_| http::Response::new(reqwest::Body::from(Vec::new())));
    reqwest::Response::from(response)
}

/// What the echo says to a conversation, and the tokens of the exchange.
struct Echo {
    reply: String,
    /// The tool call the reply makes instead of text, in `chat.completion` shape.
    call: Option<Value>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

fn echo(body: &Value) -> Echo {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let last_user = messages.iter().rev().find(|m| m["role"] == "user");
    let (text, images) = match messages.last() {
        Some(last) if last["role"] == "tool" => (content_of(last).0, Vec::new()),
        _ => last_user.map(content_of).unwrap_or_default(),
    };
    let asks_for_call = messages.last().is_some_and(|m| m["role"] == "user");
    let call = match body["tools"].as_array().and_then(|tools| tools.first()) {
        Some(tool) if asks_for_call && text.contains(CALL_MARKER) => Some(tool_call(tool, &text)),
        _ => None,
    };
    let mut reply = match text == DEFAULT_COMPACT_PROMPT {
        true => summary(&messages[..messages.len().saturating_sub(1)]),
        false => echoed(&text, messages.len(), "message"),
    };
    for url in images {
        reply.push_str(&format!(" [image: {url}]"));
    }
    reply.push_str(markdown_sample(&text));
    let words = |text: &str| text.split_whitespace().count() as u64;
    let prompt_tokens = messages.iter().map(|m| 3 + words(&content_of(m).0)).sum();
    Echo {
        completion_tokens: words(&reply),
        prompt_tokens,
        reply,
        call,
    }
}

/// A compaction's summary (asked with the default `COMPACT_PROMPT` after the messages it
/// summarizes): how many messages it stands for and the questions among them, an earlier
/// summary's included.
fn summary(messages: &[Value]) -> String {
    let mut count = 0;
    let mut asked = Vec::new();
    for message in messages {
        let text = content_of(message).0;
        let earlier = text
            .split_once(SUMMARY_OF)
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<usize>().ok());
        match (message["role"].as_str(), earlier) {
            (Some("system"), Some(earlier)) => {
                count += earlier;
                asked.extend(text.split_once(ASKED).map(|(_, before)| before.to_owned()));
            }
            (Some("user"), _) => {
                count += 1;
                asked.push(format!("\"{}\"", text.chars().take(60).collect::<String>()));
            }
            _ => count += 1,
        }
    }
    format!(
        "{SUMMARY_OF}{}{ASKED}{}",
        counted(count, "message"),
        asked.join(", ")
    )
}

/// What comes before the questions in an echo summary.
const ASKED: &str = "; asked: ";

/// How an echo summary starts.
const SUMMARY_OF: &str = "echo summary of ";

/// `echo: <text> (<n> <noun>s)`.
fn echoed(text: &str, count: usize, noun: &str) -> String {
    format!("echo: {text} ({})", counted(count, noun))
}

/// `<n> <noun>s`, the noun singular for one.
fn counted(count: usize, noun: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{plural}")
}

/// What a newcomer sees rendered on a first look at the playground: a message that asks for
/// Markdown, or for a table and code, gets a short sample of both after its echo.
fn markdown_sample(text: &str) -> &'static str {
    let text = text.to_lowercase();
    let asks = text.contains("markdown") || (text.contains("table") && text.contains("code"));
    if asks {
        MARKDOWN_SAMPLE
    } else {
        ""
    }
}

const MARKDOWN_SAMPLE: &str = "\n\n\
| route | what it keeps |\n\
|---|---|\n\
| `POST /<chat>/chat` | a turn: the question and the **answer** |\n\
| `GET /<chat>/chat` | the chat's history, *oldest first* |\n\
\n\
```python\n\
from openai import OpenAI\n\
\n\
client = OpenAI(base_url=\"http://localhost:9000/v1\", api_key=\"local\")\n\
```";

/// A call of `tool` (a `chat.completions` tool) whose string parameters each hold `text`.
fn tool_call(tool: &Value, text: &str) -> Value {
    let function = &tool["function"];
    let mut arguments = serde_json::Map::new();
    if let Some(properties) = function["parameters"]["properties"].as_object() {
        for (name, schema) in properties {
            if schema["type"] == "string" {
                arguments.insert(name.clone(), json!(text));
            }
        }
    }
    json!({"id": format!("call_echo_{:08x}", fastrand::u32(..)), "type": "function",
           "function": {"name": function["name"], "arguments": Value::Object(arguments).to_string()}})
}

/// A message's text and image URLs, whether its content is a string or parts.
fn content_of(message: &Value) -> (String, Vec<String>) {
    match &message["content"] {
        Value::String(text) => (text.clone(), Vec::new()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            let images = parts
                .iter()
                .filter_map(|p| p["image_url"]["url"].as_str())
                .map(str::to_owned)
                .collect();
            (texts.join(" "), images)
        }
        _ => (String::new(), Vec::new()),
    }
}

fn usage(echo: &Echo) -> Value {
    json!({
        "prompt_tokens": echo.prompt_tokens,
        "completion_tokens": echo.completion_tokens,
        "total_tokens": echo.prompt_tokens + echo.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    })
}

fn chat(body: &Value) -> reqwest::Response {
    let echo = echo(body);
    let model = body["model"].as_str().unwrap_or("echo").to_owned();
    let finish = if echo.call.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    if body["stream"] != json!(true) {
        let message = match &echo.call {
            Some(call) => {
                json!({"role": "assistant", "content": null, "tool_calls": [call], "refusal": null})
            }
            None => json!({"role": "assistant", "content": echo.reply, "refusal": null}),
        };
        return json_answer(
            200,
            &json!({
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish
                }],
                "usage": usage(&echo),
            }),
        );
    }
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 0,
               "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    // Each frame with whether a pause comes before it: one before each word but the first.
    let mut frames = Vec::new();
    match &echo.call {
        // As OpenAI streams a call: its id and name first, then its arguments.
        Some(call) => {
            let head = json!([{"index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}]);
            let arguments = json!([{"index": 0,
                "function": {"arguments": call["function"]["arguments"]}}]);
            frames.push((
                false,
                chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": head}),
                    Value::Null,
                ),
            ));
            frames.push((true, chunk(json!({"tool_calls": arguments}), Value::Null)));
        }
        None => {
            frames.push((
                false,
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            ));
            let words: Vec<&str> = echo.reply.split_inclusive(' ').collect();
            let per_piece = words.len().div_ceil(MAX_PIECES).max(1);
            frames.extend(words.chunks(per_piece).enumerate().map(|(i, piece)| {
                (
                    i > 0,
                    chunk(json!({"content": piece.concat()}), Value::Null),
                )
            }));
        }
    }
    frames.push((false, chunk(json!({}), json!(finish))));
    if include_usage {
        frames.push((
            false,
            json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk",
                           "created": 0, "model": model, "choices": [], "usage": usage(&echo)}),
        ));
    }
    let frames = frames
        .into_iter()
        .map(|(pause, event)| (pause, format!("data: {event}\n\n")))
        .chain(std::iter::once((false, "data: [DONE]\n\n".to_owned())));
    let stream = futures_util::stream::unfold(frames, |mut frames| async move {
        let (pause, frame) = frames.next()?;
        if pause {
            tokio::time::sleep(WORD_PAUSE).await;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(frame)), frames))
    });
    answer(200, "text/event-stream", reqwest::Body::wrap_stream(stream))
}

/// An input item's text: a message's, whether plain or in content parts.
fn text_of(item: &Value) -> String {
    match &item["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A Responses request's answer: the response object, and its output items.
fn response_of(body: &Value) -> Value {
    let input = body["input"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let last = input.last();
    let text = match last {
        Some(item) if item["type"] == "function_call_output" => match &item["output"] {
            Value::String(output) => output.clone(),
            other => other.to_string(),
        },
        _ => input
            .iter()
            .rev()
            .find(|item| item["role"] == "user")
            .map(text_of)
            .unwrap_or_default(),
    };
    let asks_for_call = last.is_some_and(|item| item["role"] == "user");
    let tag = format!("{:08x}", fastrand::u32(..));
    let mut output = Vec::new();
    let include = body["include"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if include.iter().any(|i| i == "reasoning.encrypted_content") {
        output.push(
            json!({"type": "reasoning", "id": format!("rs_echo_{tag}"), "summary": [],
            "encrypted_content": format!("echo-encrypted-{}", input.len())}),
        );
    }
    let tool = body["tools"].as_array().and_then(|tools| tools.first());
    match tool {
        Some(tool) if asks_for_call && text.contains(CALL_MARKER) => {
            let chat_shaped =
                json!({"function": {"name": tool["name"], "parameters": tool["parameters"]}});
            let call = tool_call(&chat_shaped, &text);
            output.push(
                json!({"type": "function_call", "id": format!("fc_echo_{tag}"),
                "call_id": call["id"], "name": tool["name"],
                "arguments": call["function"]["arguments"], "status": "completed"}),
            );
        }
        _ => output.push(json!({"type": "message", "id": format!("msg_echo_{tag}"),
            "status": "completed", "role": "assistant", "content": [{"type": "output_text",
            "text": echoed(&text, input.len(), "item") + markdown_sample(&text),
            "annotations": []}]})),
    }
    let words = |text: &str| text.split_whitespace().count() as u64;
    let input_tokens: u64 = input.iter().map(|item| 3 + words(&text_of(item))).sum();
    // `context_management` compaction: an input of its threshold or more is compacted
    // first, the output starting with the item that stands for it.
    let threshold = body["context_management"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["type"] == "compaction")
        .and_then(|entry| entry["compact_threshold"].as_u64());
    if threshold.is_some_and(|threshold| input_tokens >= threshold) {
        let compaction = json!({"type": "compaction", "id": format!("cmp_echo_{tag}"),
            "encrypted_content": format!("echo-compaction of {}", counted(input.len(), "item"))});
        output.insert(0, compaction);
    }
    let output_tokens: u64 = output
        .iter()
        .map(|item| words(&text_of(item)) + words(item["arguments"].as_str().unwrap_or("")))
        .sum();
    json!({
        "id": format!("resp_echo_{tag}"), "object": "response", "created_at": 0,
        "status": "completed", "error": null, "incomplete_details": null,
        "instructions": body["instructions"], "max_output_tokens": body["max_output_tokens"],
        "model": body["model"], "output": output, "parallel_tool_calls": true,
        "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
        "store": body["store"], "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": body["tools"].as_array().cloned().unwrap_or_default(),
        "top_p": 1.0, "truncation": "disabled",
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens},
        "metadata": body["metadata"].as_object().cloned().unwrap_or_default(),
    })
}

/// The events OpenAI streams for `response`, in order, each with whether a pause comes
/// before it.
pub fn response_events(response: &Value) -> Vec<(bool, Value)> {
    let mut events = Vec::new();
    let mut started = response.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    events.push((
        false,
        json!({"type": "response.created", "response": started}),
    ));
    events.push((
        false,
        json!({"type": "response.in_progress", "response": started}),
    ));
    for (index, item) in response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut opening = item.clone();
        opening["status"] = json!("in_progress");
        let id = &item["id"];
        match item["type"].as_str() {
            Some("message") => {
                opening["content"] = json!([]);
                events.push((false, json!({"type": "response.output_item.added", "output_index": index, "item": opening})));
                let text = item["content"][0]["text"].as_str().unwrap_or_default();
                let empty = json!({"type": "output_text", "text": "", "annotations": []});
                events.push((
                    false,
                    json!({"type": "response.content_part.added", "item_id": id,
                    "output_index": index, "content_index": 0, "part": empty}),
                ));
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                let per_piece = words.len().div_ceil(MAX_PIECES).max(1);
                for (i, piece) in words.chunks(per_piece).enumerate() {
                    events.push((i > 0, json!({"type": "response.output_text.delta", "item_id": id,
                        "output_index": index, "content_index": 0, "delta": piece.concat(), "logprobs": []})));
                }
                events.push((
                    false,
                    json!({"type": "response.output_text.done", "item_id": id,
                    "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                ));
                events.push((
                    false,
                    json!({"type": "response.content_part.done", "item_id": id,
                    "output_index": index, "content_index": 0, "part": item["content"][0]}),
                ));
            }
            Some("function_call") => {
                opening["arguments"] = json!("");
                events.push((false, json!({"type": "response.output_item.added", "output_index": index, "item": opening})));
                events.push((
                    true,
                    json!({"type": "response.function_call_arguments.delta", "item_id": id,
                    "output_index": index, "delta": item["arguments"]}),
                ));
                events.push((
                    false,
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                    "output_index": index, "arguments": item["arguments"]}),
                ));
            }
            _ => events.push((
                false,
                json!({"type": "response.output_item.added", "output_index": index, "item": item}),
            )),
        }
        events.push((
            false,
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        ));
    }
    events.push((
        false,
        json!({"type": "response.completed", "response": response}),
    ));
    for (sequence, (_, event)) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(sequence);
    }
    events
}

/// `/responses/input_tokens`: the input counted as a response counts it (a token a word,
/// three more an item), `instructions` as one more item.
fn input_tokens(body: &Value) -> Value {
    let input = body["input"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let words = |text: &str| text.split_whitespace().count() as u64;
    let items: u64 = input.iter().map(|item| 3 + words(&text_of(item))).sum();
    let instructions = body["instructions"]
        .as_str()
        .map_or(0, |text| 3 + words(text));
    json!({"object": "response.input_tokens", "input_tokens": items + instructions})
}

/// `/responses/compact`: every user message of the input, then one `compaction` item that
/// stands for the rest; its content (not encrypted here) says how many items it replaced,
/// so that what follows it can be told apart on the next turn.
fn compacted(body: &Value) -> Value {
    let input = body["input"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let tag = format!("{:08x}", fastrand::u32(..));
    let mut output: Vec<Value> = input
        .iter()
        .filter(|item| item["role"] == "user")
        .enumerate()
        .map(|(i, item)| {
            json!({"type": "message", "role": "user", "id": format!("msg_echo_{tag}_{i}"),
                "status": "completed",
                "content": [{"type": "input_text", "text": text_of(item)}]})
        })
        .collect();
    output.push(
        json!({"type": "compaction", "id": format!("cmp_echo_{tag}"),
        "encrypted_content": format!("echo-compaction of {}", counted(input.len(), "item"))}),
    );
    let words = |text: &str| text.split_whitespace().count() as u64;
    let input_tokens: u64 = input.iter().map(|item| 3 + words(&text_of(item))).sum();
    json!({"id": format!("resp_echo_{tag}"), "object": "response.compaction",
        "created_at": 0, "output": output,
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + 8}})
}

fn responses(body: &Value) -> reqwest::Response {
    // As OpenAI: the proxy always asks with `store: false`, so no item can be referenced,
    // nor a reasoning item sent without its encrypted content.
    let mut references = body["input"].as_array().into_iter().flatten();
    let unknown = |item: &&Value| {
        item["type"] == "item_reference"
            || (item["type"] == "reasoning" && item["encrypted_content"].is_null())
    };
    if let Some(reference) = references.find(unknown) {
        let message = format!(
            "Item with id '{}' not found. Items are not persisted when `store` is set to \
             false. Try again with `store` set to true, or remove this item from your input.",
            reference["id"].as_str().unwrap_or_default()
        );
        let error = json!({"error": {"message": message, "type": "invalid_request_error",
            "param": "input", "code": null}});
        return json_answer(404, &error);
    }
    let response = response_of(body);
    if body["stream"] != json!(true) {
        return json_answer(200, &response);
    }
    let frames = response_events(&response)
        .into_iter()
        .map(|(pause, event)| {
            let name = event["type"].as_str().unwrap_or_default().to_owned();
            (pause, format!("event: {name}\ndata: {event}\n\n"))
        });
    let stream = futures_util::stream::unfold(frames, |mut frames| async move {
        let (pause, frame) = frames.next()?;
        if pause {
            tokio::time::sleep(WORD_PAUSE).await;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(frame)), frames))
    });
    answer(200, "text/event-stream", reqwest::Body::wrap_stream(stream))
}

fn moderation(body: &Value) -> Value {
    let input = match &body["input"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let flagged = input.contains(FLAG_MARKER);
    let categories = [
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    ];
    let flags: serde_json::Map<String, Value> = categories
        .iter()
        .map(|c| ((*c).to_owned(), json!(flagged && *c == "violence")))
        .collect();
    let scores: serde_json::Map<String, Value> = categories
        .iter()
        .map(|c| {
            (
                (*c).to_owned(),
                json!(if flagged && *c == "violence" {
                    0.99
                } else {
                    0.0
                }),
            )
        })
        .collect();
    let applied: serde_json::Map<String, Value> = categories
        .iter()
        .map(|c| ((*c).to_owned(), json!(["text"])))
        .collect();
    json!({
        "id": "modr-echo",
        "model": body["model"],
        "results": [{
            "flagged": flagged,
            "categories": flags,
            "category_scores": scores,
            "category_applied_input_types": applied,
        }]
    })
}

fn model_list(models: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "echo"}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_names_the_last_user_message_the_count_and_the_images() {
        let body = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "echo: first (2 messages)"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
            ]}
        ]});
        let echo = echo(&body);
        assert_eq!(
            echo.reply,
            "echo: what is this? (4 messages) [image: https://x/cat.png]"
        );
        assert_eq!(echo.completion_tokens, 8);
        // 4 messages of 2, 1, 4 and 3 words, plus 3 each.
        assert_eq!(echo.prompt_tokens, 10 + 12);
        assert_eq!(super::echo(&body).prompt_tokens, echo.prompt_tokens);
    }

    #[test]
    fn a_compaction_keeps_the_user_messages_then_one_item_for_the_rest() {
        let compaction = compacted(&json!({"input": [
            {"role": "user", "content": "one"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "echo: one (1 item)"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "two"}]}
        ]}));
        assert_eq!(compaction["object"], "response.compaction");
        let output = compaction["output"].as_array().unwrap();
        let texts: Vec<&str> = output[..2]
            .iter()
            .map(|item| item["content"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["one", "two"]);
        assert_eq!(output[2]["type"], "compaction");
        assert_eq!(output[2]["encrypted_content"], "echo-compaction of 3 items");
        // 3 items of 1, 4 and 1 words, plus 3 each.
        assert_eq!(compaction["usage"]["input_tokens"], 6 + 9);
    }

    #[test]
    fn a_count_is_what_a_response_to_the_same_input_would_count() {
        let body = json!({"input": [{"role": "user", "content": "three little words"}],
            "instructions": "be brief"});
        assert_eq!(input_tokens(&body)["input_tokens"], 6 + 5);
        assert_eq!(input_tokens(&body)["object"], "response.input_tokens");
    }

    #[test]
    fn one_message_is_counted_in_the_singular() {
        let echo = echo(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(echo.reply, "echo: hi (1 message)");
    }

    #[test]
    fn a_message_that_asks_for_a_table_and_code_gets_a_markdown_sample() {
        let echo = echo(&json!({"messages": [
            {"role": "user", "content": "Show me a table and some code"}
        ]}));
        let (first, sample) = echo.reply.split_once("\n\n").unwrap_or_default();
        assert_eq!(first, "echo: Show me a table and some code (1 message)");
        assert!(sample.starts_with("| route |"), "{sample}");
        assert!(sample.contains("\n|---|---|\n"), "{sample}");
        assert!(
            sample.contains("```python\n") && sample.ends_with("\n```"),
            "{sample}"
        );
        // Either word alone is an ordinary echo.
        let plain = super::echo(&json!({"messages": [{"role": "user", "content": "a table"}]}));
        assert_eq!(plain.reply, "echo: a table (1 message)");
    }

    #[test]
    fn a_marked_message_with_tools_is_answered_with_a_call_and_a_result_is_echoed() {
        let tools = json!([{"type": "function", "function": {"name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}}]);
        let asked =
            json!({"tools": tools, "messages": [{"role": "user", "content": "find it [call]"}]});
        let call = echo(&asked).call.expect("a call");
        assert_eq!(call["function"]["name"], "lookup");
        assert_eq!(call["function"]["arguments"], r#"{"q":"find it [call]"}"#);
        let answered = json!({"tools": tools, "messages": [
            {"role": "user", "content": "find it [call]"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "found"}
        ]});
        let echo = echo(&answered);
        assert!(echo.call.is_none(), "a result is answered with text");
        assert_eq!(echo.reply, "echo: found (3 messages)");
        assert!(
            super::echo(&json!({"messages": [{"role": "user", "content": "x [call]"}]}))
                .call
                .is_none(),
            "no tools, no call"
        );
    }

    #[test]
    fn a_response_echoes_its_last_item_calls_for_the_marker_and_streams_its_events() {
        let tools = json!([{"type": "function", "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
        let plain = response_of(&json!({"model": "m", "input": [
            {"role": "system", "content": "p"}, {"role": "user", "content": "hello there"}]}));
        assert_eq!(
            plain["output"][0]["content"][0]["text"],
            "echo: hello there (2 items)"
        );
        assert_eq!(plain["usage"]["total_tokens"], 4 + 5 + 5);
        let call = response_of(
            &json!({"tools": tools, "include": ["reasoning.encrypted_content"],
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "find [call]"}]}]}),
        );
        assert_eq!(call["output"][0]["type"], "reasoning");
        assert_eq!(call["output"][1]["type"], "function_call");
        assert_eq!(call["output"][1]["arguments"], r#"{"q":"find [call]"}"#);
        let answered = response_of(&json!({"tools": tools, "input": [
            {"type": "function_call_output", "call_id": "c", "output": "found"}]}));
        assert_eq!(
            answered["output"][0]["content"][0]["text"],
            "echo: found (1 item)"
        );
        let events = response_events(&plain);
        let kinds: Vec<&str> = events
            .iter()
            .map(|(_, e)| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"response.created"));
        assert_eq!(kinds.last(), Some(&"response.completed"));
        assert!(kinds.contains(&"response.output_text.delta"));
        let text: String = events
            .iter()
            .filter(|(_, e)| e["type"] == "response.output_text.delta")
            .map(|(_, e)| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "echo: hello there (2 items)");
        assert_eq!(
            events.last().unwrap().1["sequence_number"],
            events.len() - 1
        );
    }

    #[test]
    fn only_marked_text_is_flagged() {
        assert_eq!(
            moderation(&json!({"input": "hello"}))["results"][0]["flagged"],
            false
        );
        let flagged = moderation(&json!({"input": "hello [flag]"}));
        assert_eq!(flagged["results"][0]["flagged"], true);
        assert_eq!(flagged["results"][0]["categories"]["violence"], true);
    }
}
