//! A streamed reply's tool calls, put back together from their deltas: each call arrives
//! in pieces by its `index` (its id, type and name first, its arguments a few characters at
//! a time), and what a chat keeps, and a replay sends, is the whole call.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The tool calls of one choice, as far as its deltas have gone.
#[derive(Debug, Default)]
pub struct ToolCalls {
    calls: BTreeMap<u64, ToolCall>,
}

#[derive(Debug, Default)]
struct ToolCall {
    id: Value,
    kind: Value,
    name: String,
    arguments: String,
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

impl ToolCalls {
    /// Adds a delta's `tool_calls`, as upstream sent them.
    pub fn add(&mut self, deltas: &[Value]) {
        for delta in deltas {
            let call = self
                .calls
                .entry(delta["index"].as_u64().unwrap_or(0))
                .or_default();
            if let Some(id) = present(delta.get("id")) {
                call.id = id.clone();
            }
            if let Some(kind) = present(delta.get("type")) {
                call.kind = kind.clone();
            }
            if let Some(name) = delta["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(arguments) = delta["function"]["arguments"].as_str() {
                call.arguments.push_str(arguments);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The whole calls, in order, as a `chat.completion` message holds them.
    pub fn whole(&self) -> Vec<Value> {
        self.calls
            .values()
            .map(|call| {
                let kind = match &call.kind {
                    Value::Null => json!("function"),
                    kind => kind.clone(),
                };
                json!({
                    "id": call.id,
                    "type": kind,
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_make_whole_calls_in_index_order() {
        let mut calls = ToolCalls::default();
        calls.add(&[
            json!({"index": 1, "id": "call_b", "type": "function", "function": {"name": "b", "arguments": ""}}),
            json!({"index": 0, "id": "call_a", "function": {"name": "a", "arguments": "{\"x\""}}),
        ]);
        calls.add(&[json!({"index": 0, "function": {"arguments": ":1}"}})]);
        assert_eq!(
            calls.whole(),
            [
                json!({"id": "call_a", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}}),
                json!({"id": "call_b", "type": "function", "function": {"name": "b", "arguments": ""}}),
            ]
        );
    }
}
