//! A streamed response replayed to a retry with the same `Idempotency-Key`: the kept
//! response streamed back as OpenAI streams one, event for event in OpenAI's order (the
//! response created and in progress; each output item added, its content parts added,
//! their text or a function call's arguments as deltas and done, the item done; the
//! response completed), under the same ids, so that a client reading deltas (the Vercel AI
//! SDK's `streamText`, the official SDKs' stream helpers) reads the same answer again. Each
//! text comes in one delta, whatever pieces upstream first sent it in.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::http::sse_event;

/// The events of `answer` (a response as the caller saw it), each with its sequence number.
pub(super) fn replay(answer: &str) -> Bytes {
    let response: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
    let mut events = Vec::new();
    let mut started = response.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    events.push(json!({"type": "response.created", "response": started.clone()}));
    events.push(json!({"type": "response.in_progress", "response": started}));
    let output = response["output"].as_array().map_or(&[][..], Vec::as_slice);
    for (index, item) in output.iter().enumerate() {
        item_events(index, item, &mut events);
    }
    let last = match response["status"].as_str() {
        Some("incomplete") => "response.incomplete",
        _ => "response.completed",
    };
    events.push(json!({"type": last, "response": response}));
    let mut frames = Vec::new();
    for (sequence, mut event) in events.into_iter().enumerate() {
        event["sequence_number"] = json!(sequence);
        let name = event["type"].as_str().unwrap_or_default().to_owned();
        frames.extend_from_slice(&sse_event(Some(&name), event.to_string().as_bytes()));
    }
    Bytes::from(frames)
}

/// One output item's events, from its adding to its end.
fn item_events(index: usize, item: &Value, events: &mut Vec<Value>) {
    let id = item["id"].clone();
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    match item["type"].as_str() {
        Some("message") => {
            added["content"] = json!([]);
            events.push(
                json!({"type": "response.output_item.added", "output_index": index,
                               "item": added}),
            );
            let parts = item["content"].as_array().map_or(&[][..], Vec::as_slice);
            for (part_index, part) in parts.iter().enumerate() {
                part_events(index, part_index, &id, part, events);
            }
        }
        Some("function_call") => {
            added["arguments"] = json!("");
            events.push(
                json!({"type": "response.output_item.added", "output_index": index,
                               "item": added}),
            );
            let arguments = item["arguments"].clone();
            events.push(json!({"type": "response.function_call_arguments.delta",
                "item_id": id, "output_index": index, "delta": arguments}));
            events.push(json!({"type": "response.function_call_arguments.done",
                "item_id": id, "output_index": index, "arguments": arguments}));
        }
        _ => {
            events.push(
                json!({"type": "response.output_item.added", "output_index": index,
                               "item": added}),
            );
        }
    }
    events.push(
        json!({"type": "response.output_item.done", "output_index": index,
                       "item": item}),
    );
}

/// A message's content part: added empty, its text (or refusal) in one delta, done.
fn part_events(index: usize, part_index: usize, id: &Value, part: &Value, events: &mut Vec<Value>) {
    let (field, delta_event, done_event) = match part["type"].as_str() {
        Some("refusal") => ("refusal", "response.refusal.delta", "response.refusal.done"),
        _ => (
            "text",
            "response.output_text.delta",
            "response.output_text.done",
        ),
    };
    let mut empty = part.clone();
    empty[field] = json!("");
    if empty.get("annotations").is_some() {
        empty["annotations"] = json!([]);
    }
    let place = |kind: &str| json!({"type": kind, "item_id": id, "output_index": index, "content_index": part_index});
    let mut added = place("response.content_part.added");
    added["part"] = empty;
    events.push(added);
    let whole = part[field].clone();
    let mut delta = place(delta_event);
    delta["delta"] = whole.clone();
    events.push(delta);
    let mut done = place(done_event);
    done[field] = whole;
    events.push(done);
    let mut part_done = place("response.content_part.done");
    part_done["part"] = part.clone();
    events.push(part_done);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &Bytes) -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .split("\n\n")
            .filter_map(|block| block.lines().find_map(|line| line.strip_prefix("data: ")))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }

    #[test]
    fn a_replay_carries_each_items_text_and_arguments_in_openais_order() {
        let answer = json!({"id": "resp_1", "object": "response", "status": "completed",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f",
                 "arguments": "{\"a\":1}", "status": "completed"}]});
        let replayed = events(&replay(&answer.to_string()));
        let kinds: Vec<&str> = replayed
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(replayed[6]["delta"], "hello");
        assert_eq!(replayed[6]["item_id"], "msg_1");
        assert_eq!(replayed[11]["delta"], "{\"a\":1}");
        assert_eq!(replayed[14]["response"], answer);
        for (sequence, event) in replayed.iter().enumerate() {
            assert_eq!(event["sequence_number"], sequence);
        }
    }
}
