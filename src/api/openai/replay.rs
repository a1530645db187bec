//! A streamed `/v1` answer as it is kept for an `Idempotency-Key`, and its replay.
//!
//! The chunks upstream streamed are gathered into the one `chat.completion` they make up
//! (its id, created, model and fingerprint, every choice's text, refusal, tool calls,
//! logprobs and finish reason, and the usage), and a retry gets that completion streamed
//! back as chunks of the same id: the first answer again, not a rewrite of it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::http::sse_event;
use crate::upstream::ToolCalls;

/// The fields every chunk of a stream repeats, taken from the first that has each.
const HEAD: [&str; 5] = [
    "id",
    "created",
    "model",
    "service_tier",
    "system_fingerprint",
];

/// What a stream has said so far.
#[derive(Debug, Default)]
pub struct Gathered {
    head: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
}

#[derive(Debug, Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: ToolCalls,
    /// `logprobs.content` and `logprobs.refusal`, each the chunks' arrays end to end.
    logprobs: Option<Map<String, Value>>,
    finish_reason: Value,
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

impl Gathered {
    /// Adds one chunk, as upstream sent it.
    pub fn add(&mut self, chunk: &str) {
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(chunk) else {
            return;
        };
        for field in HEAD {
            if let Some(value) = present(chunk.get(field)) {
                self.head.entry(field).or_insert_with(|| value.clone());
            }
        }
        if let Some(usage) = present(chunk.get("usage")) {
            self.usage = Some(usage.clone());
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(0);
            self.choices.entry(index).or_default().add(choice);
        }
    }

    /// The whole answer, as a `chat.completion`.
    pub fn completion(&self) -> Value {
        let mut completion = Map::new();
        for field in HEAD {
            if let Some(value) = self.head.get(field) {
                completion.insert(field.to_owned(), value.clone());
            }
        }
        completion.insert("object".to_owned(), json!("chat.completion"));
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, choice)| choice.completed(*index))
            .collect();
        completion.insert("choices".to_owned(), Value::Array(choices));
        completion.insert(
            "usage".to_owned(),
            self.usage.clone().unwrap_or(Value::Null),
        );
        Value::Object(completion)
    }
}

impl Choice {
    fn add(&mut self, choice: &Value) {
        let delta = &choice["delta"];
        if let Some(role) = present(delta.get("role")) {
            self.role = Some(role.clone());
        }
        if let Some(text) = delta["content"].as_str() {
            self.content.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(text) = delta["refusal"].as_str() {
            self.refusal.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            self.tool_calls.add(calls);
        }
        if let Some(Value::Object(logprobs)) = present(choice.get("logprobs")) {
            let kept = self.logprobs.get_or_insert_with(Map::new);
            for (field, value) in logprobs {
                match (kept.get_mut(field), value) {
                    (Some(Value::Array(tokens)), Value::Array(more)) => {
                        tokens.extend(more.iter().cloned())
                    }
                    _ => {
                        kept.insert(field.clone(), value.clone());
                    }
                }
            }
        }
        if let Some(reason) = present(choice.get("finish_reason")) {
            self.finish_reason = reason.clone();
        }
    }

    /// The choice of a `chat.completion`.
    fn completed(&self, index: u64) -> Value {
        let mut message = json!({
            "role": self.role.clone().unwrap_or_else(|| json!("assistant")),
            "content": self.content,
            "refusal": self.refusal,
        });
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(self.tool_calls.whole());
        }
        json!({
            "index": index,
            "message": message,
            "logprobs": self.logprobs.clone().map_or(Value::Null, Value::Object),
            "finish_reason": self.finish_reason,
        })
    }
}

/// A kept `chat.completion` streamed back: for each choice its whole message in one chunk
/// and its end in another, then the usage chunk when the caller asked for it, then
/// `[DONE]`. Every chunk carries the completion's own id, created, model and fingerprint.
pub fn chunks(completion: &str, include_usage: bool) -> Bytes {
    let completion: Value = serde_json::from_str(completion).unwrap_or(Value::Null);
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut chunk = Map::new();
        for field in HEAD {
            if let Some(value) = present(completion.get(field)) {
                chunk.insert(field.to_owned(), value.clone());
            }
        }
        chunk.insert("object".to_owned(), json!("chat.completion.chunk"));
        chunk.insert("choices".to_owned(), choices);
        // With `include_usage`, OpenAI sends `usage` on every chunk: null but on the last.
        if include_usage {
            chunk.insert("usage".to_owned(), usage.cloned().unwrap_or(Value::Null));
        }
        Value::Object(chunk)
    };
    let mut frames = Vec::new();
    let mut push = |value: Value| {
        frames.extend_from_slice(&sse_event(None, value.to_string().as_bytes()));
    };
    let choices = completion["choices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for choice in &choices {
        let message = &choice["message"];
        let mut delta = json!({"role": message["role"], "content": message["content"]});
        if let Some(refusal) = present(message.get("refusal")) {
            delta["refusal"] = refusal.clone();
        }
        if let Some(Value::Array(calls)) = message.get("tool_calls") {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(index, call)| {
                    json!({"index": index, "id": call["id"], "type": call["type"], "function": call["function"]})
                })
                .collect();
            delta["tool_calls"] = Value::Array(calls);
        }
        push(chunk(
            json!([{"index": choice["index"], "delta": delta, "logprobs": choice["logprobs"], "finish_reason": null}]),
            None,
        ));
        push(chunk(
            json!([{"index": choice["index"], "delta": {}, "logprobs": null, "finish_reason": choice["finish_reason"]}]),
            None,
        ));
    }
    if include_usage {
        push(chunk(json!([]), Some(&completion["usage"])));
    }
    frames.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(chunks: &[Value]) -> Value {
        let mut gathered = Gathered::default();
        for chunk in chunks {
            gathered.add(&chunk.to_string());
        }
        gathered.completion()
    }

    fn head(choices: Value) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
               "model": "m", "system_fingerprint": "fp", "choices": choices})
    }

    #[test]
    fn tool_call_deltas_are_gathered_into_whole_calls() {
        let completion = gather(&[
            head(
                json!([{"index": 0, "delta": {"role": "assistant", "content": null,
                "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "weather", "arguments": ""}}]},
                "finish_reason": null}]),
            ),
            head(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "{\"city\":"}}]}, "finish_reason": null}])),
            head(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "\"Oslo\"}"}}]}, "finish_reason": null}])),
            head(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])),
            json!({"id": "chatcmpl-1", "created": 7, "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
        ]);
        assert_eq!(completion["id"], "chatcmpl-1");
        assert_eq!(completion["created"], 7);
        assert_eq!(completion["system_fingerprint"], "fp");
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}])
        );
        assert_eq!(completion["usage"]["total_tokens"], 13);
    }

    #[test]
    fn a_replay_streams_the_kept_completion_with_its_own_id() {
        let completion = gather(&[
            head(
                json!([{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]),
            ),
            head(json!([{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}])),
            head(json!([{"index": 0, "delta": {}, "finish_reason": "length"}])),
        ]);
        let frames = chunks(&completion.to_string(), false);
        let text = String::from_utf8(frames.to_vec()).unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter_map(|block| block.strip_prefix("data: "))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let first: Value = serde_json::from_str(events[0]).unwrap();
        let end: Value = serde_json::from_str(events[1]).unwrap();
        assert_eq!(first["id"], "chatcmpl-1");
        assert_eq!(first["created"], 7);
        assert_eq!(first["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(end["choices"][0]["finish_reason"], "length");
        assert_eq!(events.len(), 3, "no usage chunk unless asked: {text}");
    }
}
