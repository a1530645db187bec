//! A stand-in for OpenAI's HTTP API (wiremock), answering with OpenAI's real response shapes.
//!
//! By default every chat completion answers `reply to: <last user text>` with usage
//! `prompt_tokens` = number of messages sent, `completion_tokens` = 5, so a test can tell
//! which question an answer belongs to and what was sent. Tests mount failures on top with
//! a higher priority. A streamed request gets the same answer as OpenAI streams it, over
//! time (see `streaming.rs` and [`FakeOpenAi::script`]).

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::streaming::{self, StreamScript};

pub const API_KEY: &str = "sk-test-0123456789abcdef";
pub const COMPLETION_TOKENS: u64 = 5;

pub struct FakeOpenAi {
    pub server: MockServer,
    front: std::net::SocketAddr,
    script: Arc<Mutex<StreamScript>>,
    counting: Arc<Mutex<Counting>>,
}

/// How the echo counts tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting {
    /// Count as OpenAI does (the o200k tokenizer, with its message framing) instead of one
    /// prompt token per message.
    pub real_tokens: bool,
    /// Refuse, as OpenAI does, a request whose prompt is over this many tokens.
    pub context_window: Option<u64>,
    /// Report this many prompt tokens as served from the prompt cache.
    pub cached_tokens: u64,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let server = MockServer::start().await;
        let counting = Arc::new(Mutex::new(Counting::default()));
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(EchoChat(counting.clone()))
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/responses"))
            .respond_with(EchoResponses(counting.clone()))
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/responses/compact"))
            .respond_with(EchoCompact)
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/responses/input_tokens"))
            .respond_with(CountTokens)
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/moderations"))
            .respond_with(ResponseTemplate::new(200).set_body_json(moderation_result(false)))
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/models"))
            .respond_with(ResponseTemplate::new(200).set_body_json(model_list()))
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/models/gpt-4o-mini"))
            .respond_with(ResponseTemplate::new(200).set_body_json(model_list()["data"][0].clone()))
            .with_priority(10)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex("^/v1/models/.+$"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
                "message": "The model `gpt-unknown` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": null, "code": "model_not_found"}})))
            .with_priority(11)
            .mount(&server)
            .await;
        let script = Arc::new(Mutex::new(StreamScript::default()));
        let front = streaming::start(server.uri(), script.clone()).await;
        FakeOpenAi {
            server,
            front,
            script,
            counting,
        }
    }

    /// Sets how the echo counts tokens from now on.
    pub fn count(&self, counting: Counting) {
        *self.counting.lock().unwrap() = counting;
    }

    /// The base URL to give the proxy as `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.front)
    }

    /// Sets how streamed answers are sent from now on.
    pub fn script(&self, script: StreamScript) {
        *self.script.lock().unwrap() = script;
    }

    /// Answers the next `times` chat completions with `response` instead of echoing.
    pub async fn fail_chat(&self, response: ResponseTemplate, times: u64) {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(response)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers every chat completion with `response` from now on.
    pub async fn always_chat(&self, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(response)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers the next `times` Responses requests with `response` instead of echoing.
    pub async fn fail_responses(&self, response: ResponseTemplate, times: u64) {
        Mock::given(method("POST"))
            .and(path("/v1/responses"))
            .respond_with(response)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers the next chat completion as the echo does, after `delay`: a slow upstream
    /// that holds one turn while other requests run.
    pub async fn hold_next_chat(&self, delay: std::time::Duration) {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Delayed(EchoChat(self.counting.clone()), delay))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers the next Responses request as the echo does, after `delay`.
    pub async fn hold_next_response(&self, delay: std::time::Duration) {
        Mock::given(method("POST"))
            .and(path("/v1/responses"))
            .respond_with(Delayed(EchoResponses(self.counting.clone()), delay))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Waits until upstream has received `count` requests at `wanted` (a path).
    pub async fn wait_for(&self, wanted: &str, count: usize) {
        let started = std::time::Instant::now();
        while self.bodies(wanted).await.len() < count {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "upstream never received {count} requests at {wanted}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Every request received so far, in order.
    pub async fn requests(&self) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .expect("the fake records requests: an empty list must mean none were sent")
    }

    /// Waits until upstream has received `count` chat completion requests.
    pub async fn wait_for_chat_requests(&self, count: usize) {
        let started = std::time::Instant::now();
        while self.chat_bodies().await.len() < count {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "upstream never received {count} chat requests"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The JSON bodies of the chat completion requests received so far, in order.
    pub async fn chat_bodies(&self) -> Vec<Value> {
        self.bodies("/v1/chat/completions").await
    }

    pub async fn bodies(&self, wanted: &str) -> Vec<Value> {
        self.requests()
            .await
            .iter()
            .filter(|request| request.url.path() == wanted)
            .map(|request| serde_json::from_slice(&request.body).expect("upstream got JSON"))
            .collect()
    }
}

/// The text of a user message, whether plain or in content parts.
pub fn user_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of a Responses input item: a message's text parts, or a call's output.
pub fn item_text(item: &Value) -> String {
    if item["type"] == "function_call_output" {
        return item["output"].as_str().unwrap_or_default().to_owned();
    }
    user_text(item)
}

/// A `response` object as OpenAI's Responses API returns it, answering `text`, its output
/// a message (preceded by a reasoning item with encrypted content when `reasoning`).
pub fn response_object(model: &str, text: &str, input_tokens: u64, reasoning: bool) -> Value {
    let id = format!("{:016x}", rand_u64());
    let mut output = Vec::new();
    if reasoning {
        output.push(
            json!({"type": "reasoning", "id": format!("rs_{id}"), "summary": [],
            "encrypted_content": format!("gAAAAenc{id}")}),
        );
    }
    output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed",
        "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}));
    let output_tokens = text.split_whitespace().count() as u64;
    json!({
        "id": format!("resp_{id}"), "object": "response", "created_at": 1_741_476_542,
        "status": "completed", "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled",
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens},
        "user": null, "metadata": {}
    })
}

/// A `response` whose output is one call of `name` with `arguments` (JSON text).
pub fn function_call_response(model: &str, name: &str, arguments: &str) -> Value {
    let mut response = response_object(model, "", 5, false);
    response["output"] = json!([{"type": "function_call", "id": "fc_0abc", "call_id": "call_0abc",
        "name": name, "arguments": arguments, "status": "completed"}]);
    response
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0x5eed);
    NEXT.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

/// Answers a Responses request `reply to: <the last input item's text>`, with a reasoning
/// item when the request asks for the reasoning's encrypted content.
/// An answer given after a delay.
struct Delayed<R>(R, std::time::Duration);

impl<R: Respond> Respond for Delayed<R> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request).set_delay(self.1)
    }
}

/// With `Counting::real_tokens`, its input tokens are counted as OpenAI counts them (o200k,
/// a few tokens of framing an item); else an item is a token.
struct EchoResponses(Arc<Mutex<Counting>>);

impl Respond for EchoResponses {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return error_response(
                400,
                "invalid_request_error",
                "We could not parse the JSON body of your request.",
            );
        };
        let input = body["input"].as_array().cloned().unwrap_or_default();
        // The proxy asks with `store: false`, and then OpenAI knows no item by its id: not a
        // reference's, nor a reasoning item's sent without its encrypted content.
        let unknown = |item: &&Value| {
            item["type"] == "item_reference"
                || (item["type"] == "reasoning" && item["encrypted_content"].is_null())
        };
        if let Some(reference) = input.iter().find(unknown) {
            return ResponseTemplate::new(404).set_body_json(json!({"error": {
                "message": format!("Item with id '{}' not found. Items are not persisted when \
                    `store` is set to false. Try again with `store` set to true, or remove this \
                    item from your input.", reference["id"].as_str().unwrap_or_default()),
                "type": "invalid_request_error", "param": "input", "code": null}}));
        }
        let last = input.last().map(item_text).unwrap_or_default();
        let reasoning = body["include"]
            .as_array()
            .is_some_and(|include| include.iter().any(|i| i == "reasoning.encrypted_content"));
        let model = body["model"].as_str().unwrap_or_default();
        let input_tokens = match self.0.lock().unwrap().real_tokens {
            true => input
                .iter()
                .map(|item| 4 + count_tokens(&item_text(item)))
                .sum(),
            false => input.len() as u64,
        };
        let mut response =
            response_object(model, &format!("reply to: {last}"), input_tokens, reasoning);
        // `context_management: [{"type": "compaction", "compact_threshold": n}]`: an input
        // of n tokens or more (here, items) is compacted first, and the output starts with
        // the compaction item that stands for it.
        let threshold = body["context_management"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["type"] == "compaction")
            .and_then(|entry| entry["compact_threshold"].as_u64());
        if threshold.is_some_and(|threshold| input.len() as u64 >= threshold) {
            let item = json!({"type": "compaction", "id": format!("cmp_{:016x}", rand_u64()),
                "encrypted_content": format!("gAAAAcompacted:{}", input.len())});
            if let Some(output) = response["output"].as_array_mut() {
                output.insert(0, item);
            }
        }
        ResponseTemplate::new(200).set_body_json(response)
    }
}

/// `POST /responses/compact` as OpenAI answers it: a `response.compaction` whose output is
/// every user message of the input, then one `compaction` item standing for the rest (its
/// encrypted content says how many items it stands for, so a test can read it back).
/// Parameters compact does not take (`store`, `stream`, `include`, ...) are a 400, as at
/// OpenAI, and so is a `previous_response_id`: nothing is stored upstream to continue.
struct EchoCompact;

/// What `/responses/compact` takes (OpenAI's reference).
const COMPACT_PARAMS: [&str; 9] = [
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "service_tier",
    "image",
];

impl Respond for EchoCompact {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
            return error_response(
                400,
                "invalid_request_error",
                "We could not parse the JSON body of your request.",
            );
        };
        if let Some(unknown) = body.keys().find(|k| !COMPACT_PARAMS.contains(&k.as_str())) {
            return ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": format!("Unknown parameter: '{unknown}'."),
                "type": "invalid_request_error", "param": unknown,
                "code": "unknown_parameter"}}));
        }
        if let Some(id) = body.get("previous_response_id").and_then(Value::as_str) {
            return ResponseTemplate::new(404).set_body_json(json!({"error": {
                "message": format!("Previous response with id '{id}' not found."),
                "type": "invalid_request_error", "param": "previous_response_id",
                "code": "previous_response_not_found"}}));
        }
        let input = body["input"].as_array().cloned().unwrap_or_default();
        let mut output: Vec<Value> = input
            .iter()
            .filter(|item| item["role"] == "user")
            .map(|item| {
                json!({"type": "message", "role": "user", "id": format!("msg_{:016x}", rand_u64()),
                "status": "completed",
                "content": [{"type": "input_text", "text": item_text(item)}]})
            })
            .collect();
        output.push(
            json!({"type": "compaction", "id": format!("cmp_{:016x}", rand_u64()),
            "encrypted_content": format!("gAAAAcompacted:{}", input.len())}),
        );
        let input_tokens = input.len() as u64;
        ResponseTemplate::new(200).set_body_json(json!({
            "id": format!("resp_{:016x}", rand_u64()), "object": "response.compaction",
            "created_at": 1_741_476_542, "output": output,
            "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + 7}
        }))
    }
}

/// `POST /responses/input_tokens` as OpenAI answers it: `response.input_tokens`, here one
/// token an input item, and one for `instructions`. What it does not take (`store`,
/// `stream`, `prompt_cache_key`, ...) is a 400, and so is a `previous_response_id` or a
/// `conversation`: nothing is stored upstream.
struct CountTokens;

const COUNT_PARAMS: [&str; 12] = [
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "conversation",
    "parallel_tool_calls",
    "personality",
    "reasoning",
    "text",
    "tool_choice",
    "tools",
    "truncation",
];

impl Respond for CountTokens {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
            return error_response(
                400,
                "invalid_request_error",
                "We could not parse the JSON body of your request.",
            );
        };
        if let Some(unknown) = body.keys().find(|k| !COUNT_PARAMS.contains(&k.as_str())) {
            return ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": format!("Unknown parameter: '{unknown}'."),
                "type": "invalid_request_error", "param": unknown,
                "code": "unknown_parameter"}}));
        }
        if let Some(stored) = ["previous_response_id", "conversation"]
            .into_iter()
            .find(|name| body.get(*name).is_some_and(|v| !v.is_null()))
        {
            return ResponseTemplate::new(404).set_body_json(json!({"error": {
                "message": format!("The {stored} names nothing stored."),
                "type": "invalid_request_error", "param": stored, "code": null}}));
        }
        let items = body["input"].as_array().map_or(0, Vec::len) as u64;
        let instructions = u64::from(body.get("instructions").is_some_and(Value::is_string));
        ResponseTemplate::new(200).set_body_json(
            json!({"object": "response.input_tokens", "input_tokens": items + instructions}),
        )
    }
}

struct EchoChat(Arc<Mutex<Counting>>);

impl Respond for EchoChat {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return error_response(
                400,
                "invalid_request_error",
                "We could not parse the JSON body of your request.",
            );
        };
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let question = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(user_text)
            .unwrap_or_default();
        let model = body["model"].as_str().unwrap_or_default();
        let reply = format!("reply to: {question}");
        let counting = *self.0.lock().unwrap();
        if !counting.real_tokens {
            return ResponseTemplate::new(200).set_body_json(chat_completion(
                model,
                &reply,
                messages.len() as u64,
            ));
        }
        let prompt_tokens = prompt_tokens(&messages);
        if let Some(window) = counting.context_window.filter(|w| prompt_tokens > *w) {
            return ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": format!("This model's maximum context length is {window} tokens. However, your messages resulted in {prompt_tokens} tokens. Please reduce the length of the messages."),
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded"
            }}));
        }
        let completion_tokens = count_tokens(&reply);
        let mut completion = chat_completion(model, &reply, prompt_tokens);
        completion["usage"]["completion_tokens"] = json!(completion_tokens);
        completion["usage"]["total_tokens"] = json!(prompt_tokens + completion_tokens);
        completion["usage"]["prompt_tokens_details"]["cached_tokens"] =
            json!(counting.cached_tokens.min(prompt_tokens));
        ResponseTemplate::new(200).set_body_json(completion)
    }
}

/// Tokens of `text` in OpenAI's o200k encoding.
pub fn count_tokens(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// A request's prompt tokens as OpenAI counts them: each message's content and its
/// framing (3 tokens), 3 more to prime the reply; an image part as 85 tokens (low detail).
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    let content = |message: &Value| match &message["content"] {
        Value::String(text) => count_tokens(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part["text"].as_str() {
                Some(text) => count_tokens(text),
                None => 85,
            })
            .sum(),
        _ => 0,
    };
    messages.iter().map(|m| 3 + content(m)).sum::<u64>() + 3
}

/// A `chat.completion` object as OpenAI sends it.
pub fn chat_completion(model: &str, content: &str, prompt_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": format!("{model}-2024-07-18"),
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": content,
                "refusal": null,
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": prompt_tokens + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
}

/// A `chat.completion` whose answer is tool calls and no text, as OpenAI sends it: each of
/// `calls` is a function's name and its arguments (JSON text).
pub fn tool_call_completion(model: &str, calls: &[(&str, &str)], prompt_tokens: u64) -> Value {
    let mut completion = chat_completion(model, "", prompt_tokens);
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, (name, arguments))| {
            json!({"id": format!("call_{index}abcDEF"), "type": "function",
                   "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    completion["choices"][0]["message"]["content"] = Value::Null;
    completion["choices"][0]["message"]["tool_calls"] = Value::Array(calls);
    completion["choices"][0]["finish_reason"] = json!("tool_calls");
    completion
}

/// OpenAI's model list, in part, as it sends it.
pub fn model_list() -> Value {
    json!({
        "object": "list",
        "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
            {"id": "o3", "object": "model", "created": 1744225308, "owned_by": "system"},
            {"id": "omni-moderation-latest", "object": "model", "created": 1731689265, "owned_by": "system"}
        ]
    })
}

/// A moderation result as OpenAI sends it for `omni-moderation-latest`.
pub fn moderation_result(flagged: bool) -> Value {
    let categories = [
        "sexual",
        "sexual/minors",
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "violence",
        "violence/graphic",
    ];
    let flags: serde_json::Map<String, Value> = categories
        .iter()
        .map(|c| (c.to_string(), json!(flagged && *c == "violence")))
        .collect();
    let scores: serde_json::Map<String, Value> = categories
        .iter()
        .map(|c| {
            (
                c.to_string(),
                json!(if flagged && *c == "violence" {
                    0.91
                } else {
                    0.000012
                }),
            )
        })
        .collect();
    let applied: serde_json::Map<String, Value> = categories
        .iter()
        .map(|c| (c.to_string(), json!(["text"])))
        .collect();
    json!({
        "id": "modr-970d409ef3bef3b70c73d8232df86e7d",
        "model": "omni-moderation-latest",
        "results": [{
            "flagged": flagged,
            "categories": flags,
            "category_scores": scores,
            "category_applied_input_types": applied
        }]
    })
}

/// An error response in OpenAI's shape.
pub fn error_response(status: u16, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    }))
}

/// OpenAI's 401 for a wrong key, as it sends it (it quotes part of the key).
pub fn invalid_api_key() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({
        "error": {
            "message": format!("Incorrect API key provided: {API_KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
        }
    }))
}

/// OpenAI's 429 for a token-rate limit as it often comes: without `Retry-After`.
pub fn rate_limited_without_retry_after() -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_json(json!({
        "error": {
            "message": "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM): Limit 200000, Used 199000, Requested 2000. Please try again in 300ms.",
            "type": "tokens",
            "param": null,
            "code": "rate_limit_exceeded"
        }
    }))
}

/// OpenAI's 429 for a request-rate limit, with `Retry-After`.
pub fn rate_limited(retry_after_seconds: u64) -> ResponseTemplate {
    ResponseTemplate::new(429)
        .insert_header("retry-after", retry_after_seconds.to_string().as_str())
        .set_body_json(json!({
            "error": {
                "message": "Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }
        }))
}
