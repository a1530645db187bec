//! Items named by id instead of sent again: a Responses input's `{"type": "item_reference",
//! "id": ...}`. The Vercel AI SDK resends a whole history that way (every earlier output
//! item as a reference), and OpenAI, which the proxy asks with `store: false`, knows none
//! of them; so the proxy puts each referenced item in its place before the turn is asked
//! or stored, and a stored turn holds only whole items.
//!
//! A reasoning item sent back without its `encrypted_content` is filled in the same way: a
//! caller that resends a response's output as input (OpenAI's pattern for `store: true`)
//! got it without that content, which OpenAI, keeping nothing, needs; the proxy kept it.

use std::collections::HashMap;

use serde_json::Value;

use super::{listed_items, Turn};

/// The longest item id the proxy records or looks up (OpenAI's are about 50 bytes).
pub const MAX_ITEM_ID_BYTES: usize = 256;

/// An input item that is a reference, and the id it names.
fn reference_id(item: &Value) -> Option<Option<&str>> {
    (item["type"] == "item_reference").then(|| {
        item["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= MAX_ITEM_ID_BYTES)
    })
}

/// A reasoning item without its encrypted content, and its id: filled in when found.
fn bare_reasoning_id(item: &Value) -> Option<&str> {
    let bare = item["type"] == "reasoning" && item["encrypted_content"].is_null();
    item["id"]
        .as_str()
        .filter(|id| bare && !id.is_empty() && id.len() <= MAX_ITEM_ID_BYTES)
}

/// The ids `input`'s references (and its reasoning items without their encrypted content)
/// name, each once, in order; `Err(index)` for a reference with no usable id (not a
/// string, empty, or too long).
pub fn referenced_ids(input: &[Value]) -> Result<Vec<String>, usize> {
    let mut ids: Vec<String> = Vec::new();
    for (index, item) in input.iter().enumerate() {
        let named = match bare_reasoning_id(item) {
            Some(id) => Some(Some(id)),
            None => reference_id(item),
        };
        match named {
            None => {}
            Some(None) => return Err(index),
            Some(Some(id)) if ids.iter().any(|known| known == id) => {}
            Some(Some(id)) => ids.push(id.to_owned()),
        }
    }
    Ok(ids)
}

/// The output items of a response that a later input may reference: those with an id.
pub fn referable_ids(output: &[Value]) -> Vec<String> {
    output
        .iter()
        .filter_map(|item| item["id"].as_str())
        .filter(|id| !id.is_empty() && id.len() <= MAX_ITEM_ID_BYTES)
        .map(str::to_owned)
        .collect()
}

/// Finds the items `ids` names among `turns`' items (as a conversation lists them: their
/// own ids, or the ids the proxy gave them), into `found`.
pub fn find_items(turns: &[Turn], ids: &[String], found: &mut HashMap<String, Value>) {
    if ids.iter().all(|id| found.contains_key(id)) {
        return;
    }
    for turn in turns {
        for item in listed_items(turn) {
            if let Some(id) = item["id"].as_str() {
                if ids.iter().any(|wanted| wanted == id) && !found.contains_key(id) {
                    found.insert(id.to_owned(), item);
                }
            }
        }
    }
}

/// Puts each reference's item in its place, and a stored reasoning item in the place of
/// the same item sent without its encrypted content (one not found stays as sent);
/// `Err(id)` names the first reference to an item not found, and leaves `input` as it was.
pub fn resolve(input: &mut [Value], found: &HashMap<String, Value>) -> Result<(), String> {
    for item in input.iter() {
        if let Some(Some(id)) = reference_id(item) {
            if !found.contains_key(id) {
                return Err(id.to_owned());
            }
        }
    }
    for item in input.iter_mut() {
        let referenced = match (reference_id(item), bare_reasoning_id(item)) {
            (Some(Some(id)), _) | (_, Some(id)) => found
                .get(id)
                .filter(|stored| stored["type"] == item["type"] || item["type"] == "item_reference")
                .cloned(),
            _ => None,
        };
        if let Some(referenced) = referenced {
            *item = referenced;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Exchange, StoredResponse};
    use serde_json::json;

    fn responses_turn(id: &str, output: Value) -> Turn {
        let exchange = Exchange {
            input: vec![json!({"role": "user", "content": "hi"})],
            response: StoredResponse::from_value(&json!({"id": "resp_x", "output": output})),
        };
        Turn {
            id: Some(id.to_owned()),
            asked: exchange.asked(),
            assistant: exchange.reply_text(),
            calls: exchange.calls(),
            exchange: Some(Box::new(exchange)),
            tokens: None,
        }
    }

    #[test]
    fn references_are_named_once_and_bad_ones_by_their_place() {
        let input = [
            json!({"role": "user", "content": "a"}),
            json!({"type": "item_reference", "id": "msg_1"}),
            json!({"type": "item_reference", "id": "msg_1"}),
            json!({"type": "item_reference", "id": "rs_2"}),
        ];
        assert_eq!(
            referenced_ids(&input),
            Ok(vec!["msg_1".into(), "rs_2".into()])
        );
        let bad = [
            json!({"role": "user", "content": "a"}),
            json!({"type": "item_reference"}),
        ];
        assert_eq!(referenced_ids(&bad), Err(1));
        let long = [json!({"type": "item_reference", "id": "x".repeat(MAX_ITEM_ID_BYTES + 1)})];
        assert_eq!(referenced_ids(&long), Err(0));
    }

    #[test]
    fn a_reference_becomes_the_stored_item_and_an_unknown_one_changes_nothing() {
        let reply = json!({"type": "message", "id": "msg_1", "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "text": "hello", "annotations": []}]});
        let turns = [responses_turn("t1", json!([reply.clone()]))];
        let mut found = HashMap::new();
        find_items(&turns, &["msg_1".to_owned()], &mut found);
        let mut input = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"type": "item_reference", "id": "msg_1"}),
            json!({"role": "user", "content": "again"}),
        ];
        resolve(&mut input, &found).unwrap();
        assert_eq!(input[1], reply);

        let mut unknown = vec![
            json!({"type": "item_reference", "id": "msg_1"}),
            json!({"type": "item_reference", "id": "msg_9"}),
        ];
        let before = unknown.clone();
        assert_eq!(resolve(&mut unknown, &found), Err("msg_9".to_owned()));
        assert_eq!(unknown, before);
    }

    #[test]
    fn reasoning_sent_back_without_its_encrypted_content_is_filled_in() {
        let reasoning = json!({"type": "reasoning", "id": "rs_1", "summary": [],
            "encrypted_content": "gAAAA"});
        let turns = [responses_turn("t1", json!([reasoning.clone()]))];
        let mut input = vec![
            json!({"type": "reasoning", "id": "rs_1", "summary": []}),
            json!({"type": "reasoning", "id": "rs_9", "summary": []}),
            json!({"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "x"}),
        ];
        let ids = referenced_ids(&input).unwrap();
        assert_eq!(ids, ["rs_1", "rs_9"]);
        let mut found = HashMap::new();
        find_items(&turns, &ids, &mut found);
        resolve(&mut input, &found).unwrap();
        assert_eq!(input[0], reasoning);
        assert_eq!(
            input[1]["encrypted_content"],
            Value::Null,
            "not found: as sent"
        );
        assert_eq!(input[2]["encrypted_content"], "x", "its own: as sent");
    }

    #[test]
    fn only_output_items_with_an_id_can_be_referenced() {
        let output = [
            json!({"type": "message", "id": "msg_1"}),
            json!({"type": "message"}),
        ];
        assert_eq!(referable_ids(&output), ["msg_1"]);
    }
}
