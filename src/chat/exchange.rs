//! A turn made through OpenAI's Responses API (one room: one stored form, and every door's
//! reading of it), kept exactly as it came: the request's input
//! items as the caller sent them, and the response as upstream returned it (under the
//! proxy's id, its `output` items with their own ids, reasoning included). The other doors
//! read the same turn as messages: its user messages and tool results, its reply's text and
//! tool calls, derived here.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{text_of, Asked, ChatId, ImageRef, Part, ToolResult, Turn, UserContent};

/// The proxy's id of a Responses turn, `resp_<turn id>_<chat id>`: the response, its chain
/// or conversation, and its place in it are found from the id alone, in the chat's one read.
pub fn response_id(turn: &str, chat: &ChatId) -> String {
    format!("resp_{turn}_{}", chat.as_str())
}

/// The turn and the chat a response id names; `None` for an id the proxy did not make.
pub fn parse_response_id(id: &str) -> Option<(&str, ChatId)> {
    let rest = id.strip_prefix("resp_")?;
    let turn = rest.get(..32)?;
    let chat = rest.get(32..)?.strip_prefix('_')?;
    if !turn.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((turn, ChatId::named_by_response(chat)?))
}

/// A Responses turn's items.
///
/// An item deleted from a conversation leaves `null` in its place, so that the ids the
/// proxy gave the items after it (from their places) do not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The request's input items, in order, as sent (a string input as one user message).
    pub input: Vec<Value>,
    /// The `response` object, with the proxy's id and every output item; none for items
    /// a caller added to a conversation by themselves, which have no response.
    #[serde(default)]
    pub response: StoredResponse,
}

impl Exchange {
    /// Whether it has the shape the proxy keeps: every input and output item an object
    /// (or `null`, a deleted item's place), and a response that is an object (or `null`,
    /// items with no response) whose `output`, when it has one, is a list. An exchange from
    /// outside (an import) is taken only in this shape.
    pub fn is_well_formed(&self) -> bool {
        self.response.well_formed && items_shaped(&self.input)
    }

    /// The response's output items, in order.
    pub fn output(&self) -> &[Value] {
        &self.response.output
    }

    /// The caller's messages as the other doors see them: user messages (their text and
    /// images) and tool results; other items (system messages, earlier outputs sent back
    /// as input, references) have no message of their own there.
    pub fn asked(&self) -> Vec<Asked> {
        asked_in(&self.input)
    }

    /// The reply's text: its messages' text (or refusals), joined.
    pub fn reply_text(&self) -> String {
        reply_text(self.output())
    }

    /// The reply's function calls, in Chat Completions' `tool_calls` shape.
    pub fn calls(&self) -> Vec<Value> {
        calls_of(self.output())
    }
}

/// A stored response object, kept as the JSON text it is stored as, beside its `output`
/// items. Every turn reads every stored turn of its chat and needs only their output items
/// (what the history sends on); the rest of a response (the tools, text format, usage and
/// instructions upstream echoes) was built into JSON trees on every read and made a turn
/// of 50 Responses turns cost ~3x a Chat Completions one (BENCHMARKS.md). Read, it is
/// skipped over; only `GET /v1/responses/{id}` and deleting one of its items build it.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// The response's JSON text; `None` for no response (`null`).
    raw: Option<Box<RawValue>>,
    /// Its `output` items, in order (a deleted item's place is `null`).
    output: Vec<Value>,
    /// Whether it is `null` or an object whose `output`, when it has one, is a list of
    /// objects or `null`s ([`Exchange::is_well_formed`]).
    well_formed: bool,
}

impl StoredResponse {
    /// A response given as a JSON value (`null` for none).
    pub fn from_value(response: &Value) -> StoredResponse {
        if response.is_null() {
            return StoredResponse::none();
        }
        let output = match &response["output"] {
            Value::Array(output) => output.clone(),
            _ => Vec::new(),
        };
        StoredResponse {
            // Serializing a `Value` cannot fail (its keys are strings, its numbers finite).
            raw: serde_json::value::to_raw_value(response).ok(),
            well_formed: well_formed(response),
            output,
        }
    }

    /// No response.
    pub fn none() -> StoredResponse {
        StoredResponse {
            raw: None,
            output: Vec::new(),
            well_formed: true,
        }
    }

    pub fn is_null(&self) -> bool {
        self.raw.is_none()
    }

    /// The whole response object (`null` for none), built from its text.
    pub fn to_value(&self) -> Value {
        self.raw
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// The same response with other output items (a deleted item's place `null`).
    pub fn with_output(&self, output: Vec<Value>) -> StoredResponse {
        let mut response = self.to_value();
        if !response.is_object() {
            response = json!({});
        }
        response["output"] = Value::Array(output);
        StoredResponse::from_value(&response)
    }
}

/// Whether a response value has the shape [`StoredResponse::well_formed`] names.
fn well_formed(response: &Value) -> bool {
    match response {
        Value::Null => true,
        Value::Object(response) => match response.get("output") {
            None | Some(Value::Null) => true,
            Some(Value::Array(output)) => items_shaped(output),
            Some(_) => false,
        },
        _ => false,
    }
}

/// Whether every item is an object, or `null` (a deleted item's place).
fn items_shaped(items: &[Value]) -> bool {
    items.iter().all(|item| item.is_object() || item.is_null())
}

impl Default for StoredResponse {
    fn default() -> Self {
        StoredResponse::none()
    }
}

impl PartialEq for StoredResponse {
    /// The same response, whatever the order of its keys or its layout as text.
    fn eq(&self, other: &Self) -> bool {
        let (one, two) = (self.raw.as_deref(), other.raw.as_deref());
        one.map(RawValue::get) == two.map(RawValue::get) || self.to_value() == other.to_value()
    }
}

impl Eq for StoredResponse {}

impl Serialize for StoredResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.raw {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for StoredResponse {
    /// Its text as it is, and its `output` items; every other field is skipped, not built.
    /// (A `RawValue` reads from JSON text only: a turn from a `Value`, as an import has
    /// it, is read from that value's text.)
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct OutputOnly {
            #[serde(default)]
            output: Option<Value>,
        }
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get().trim_start();
        if text == "null" {
            return Ok(StoredResponse::none());
        }
        if !text.starts_with('{') {
            // Not an object: kept as it came, and refused by an import.
            return Ok(StoredResponse {
                raw: Some(raw),
                output: Vec::new(),
                well_formed: false,
            });
        }
        let OutputOnly { output } =
            serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        // (`"output": null` reads as `None`.)
        let (output, well_formed) = match output {
            None => (Vec::new(), true),
            Some(Value::Array(output)) => {
                let shaped = items_shaped(&output);
                (output, shaped)
            }
            Some(_) => (Vec::new(), false),
        };
        Ok(StoredResponse {
            raw: Some(raw),
            output,
            well_formed,
        })
    }
}

/// The text of a response's `output`: its messages' text (or refusals), joined; `None`
/// when it has no message (only calls, say).
pub fn output_text(output: &[Value]) -> Option<String> {
    let mut text = None::<String>;
    // A message as upstream makes it, or as the proxy writes another door's reply.
    let message = |item: &&Value| {
        item["type"] == "message" || (item["type"].is_null() && item["role"] == "assistant")
    };
    for item in output.iter().filter(message) {
        let text = text.get_or_insert_with(String::new);
        if let Some(whole) = item["content"].as_str() {
            text.push_str(whole);
        }
        for part in item["content"].as_array().into_iter().flatten() {
            let piece = part["text"].as_str().or_else(|| part["refusal"].as_str());
            if let Some(piece) = piece {
                text.push_str(piece);
            }
        }
    }
    text
}

fn reply_text(output: &[Value]) -> String {
    output_text(output).unwrap_or_default()
}

/// A response's `function_call` items, in Chat Completions' `tool_calls` shape.
pub fn calls_of(output: &[Value]) -> Vec<Value> {
    output
        .iter()
        .filter(|item| item["type"] == "function_call")
        .map(|call| {
            json!({"id": call["call_id"], "type": "function",
                   "function": {"name": call["name"], "arguments": call["arguments"]}})
        })
        .collect()
}

/// An input's items as the other doors' messages ([`Exchange::asked`]).
pub fn asked_in(input: &[Value]) -> Vec<Asked> {
    input.iter().filter_map(asked_of).collect()
}

/// An input item as a message of the other doors, when it is one (a user message, a
/// tool's result).
pub fn asked_of(item: &Value) -> Option<Asked> {
    match item["type"].as_str() {
        Some("function_call_output") => Some(Asked::ToolResult(ToolResult {
            tool_call_id: item["call_id"].as_str()?.to_owned(),
            content: item["output"].clone(),
        })),
        Some("message") | None if item["role"] == "user" => {
            let content = match &item["content"] {
                Value::String(text) => UserContent::Text(text.clone()),
                Value::Array(parts) => {
                    UserContent::Parts(parts.iter().filter_map(part_of).collect())
                }
                _ => return None,
            };
            Some(Asked::User(content))
        }
        _ => None,
    }
}

fn part_of(part: &Value) -> Option<Part> {
    match part["type"].as_str()? {
        "input_text" => Some(Part::Text {
            text: part["text"].as_str()?.to_owned(),
        }),
        "input_image" => Some(Part::ImageUrl {
            image_url: ImageRef {
                url: part["image_url"].as_str()?.to_owned(),
                detail: part["detail"]
                    .as_str()
                    .filter(|detail| *detail != "auto")
                    .map(str::to_owned),
            },
        }),
        _ => None,
    }
}

/// A stored turn as the input items it sends upstream: a Responses turn's own input and
/// output items, exactly; another door's turn as the items its messages make.
pub fn turn_items(turn: &Turn, images_as_text: bool, items: &mut Vec<Value>) {
    if let Some(exchange) = &turn.exchange {
        // A deleted item's place is `null`: nothing to send.
        let kept = exchange.input.iter().chain(exchange.output());
        items.extend(kept.filter(|item| !item.is_null()).cloned());
        return;
    }
    items.extend(
        turn.asked
            .iter()
            .map(|asked| asked_item(asked, images_as_text)),
    );
    if !turn.assistant.is_empty() || turn.calls.is_empty() {
        items.push(json!({"role": "assistant", "content": turn.assistant}));
    }
    for call in &turn.calls {
        items.push(json!({"type": "function_call", "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"]}));
    }
}

/// Whether an item is a `compaction` item, which stands for everything before it.
pub fn is_compaction(item: &Value) -> bool {
    item["type"] == "compaction"
}

impl Turn {
    /// Whether the turn holds a `compaction` item (in its input or its reply): a Responses
    /// turn after it sends only what follows the newest one.
    pub fn compacts(&self) -> bool {
        self.exchange.as_ref().is_some_and(|exchange| {
            exchange
                .input
                .iter()
                .chain(exchange.output())
                .any(is_compaction)
        })
    }

    /// A turn of items a caller added to a conversation by themselves: no response.
    pub fn of_items(items: Vec<Value>) -> Turn {
        let exchange = Exchange {
            input: items,
            response: StoredResponse::none(),
        };
        Turn {
            id: Some(Turn::new_id()),
            asked: exchange.asked(),
            assistant: String::new(),
            calls: Vec::new(),
            exchange: Some(Box::new(exchange)),
            tokens: None,
        }
    }

    /// A turn of questions with no reply yet (a fork cut after a question, an import that
    /// ends with one): kept as items, as a conversation keeps items added with no
    /// response, so every door reads it as unanswered.
    pub fn unanswered(id: String, asked: Vec<Asked>) -> Turn {
        let input = asked.iter().map(|asked| asked_item(asked, false)).collect();
        Turn {
            id: Some(id),
            asked,
            assistant: String::new(),
            calls: Vec::new(),
            exchange: Some(Box::new(Exchange {
                input,
                response: StoredResponse::none(),
            })),
            tokens: None,
        }
    }
}

/// One of a turn's messages as an input item.
pub fn asked_item(asked: &Asked, images_as_text: bool) -> Value {
    match asked {
        Asked::User(UserContent::Text(text)) => json!({"role": "user", "content": text}),
        Asked::User(content) if images_as_text => {
            let mut text = content.text().into_owned();
            for url in content.image_urls() {
                text.push_str(&format!("\n[image: {url}]"));
            }
            json!({"role": "user", "content": text})
        }
        Asked::User(UserContent::Parts(parts)) => {
            let parts: Vec<Value> = parts
                .iter()
                .map(|part| match part {
                    Part::Text { text } => json!({"type": "input_text", "text": text}),
                    Part::ImageUrl { image_url } => json!({"type": "input_image",
                        "image_url": image_url.url,
                        "detail": image_url.detail.as_deref().unwrap_or("auto")}),
                })
                .collect();
            json!({"role": "user", "content": parts})
        }
        Asked::ToolResult(result) => json!({"type": "function_call_output",
            "call_id": result.tool_call_id, "output": text_of(&result.content)}),
    }
}

/// A turn's items as a conversation lists them: its input items and then its output items,
/// each as a whole item with an id (its own, or one made from the turn's id and its place,
/// the same on every read) and a message's content as parts; a deleted item's place is
/// skipped.
pub fn listed_items(turn: &Turn) -> Vec<Value> {
    let (input, output) = turn_parts(turn);
    let turn_id = turn.id.as_deref().unwrap_or("");
    let mut listed = Vec::with_capacity(input.len() + output.len());
    for (side, items) in [("", input), ("o", output)] {
        for (place, item) in items.into_iter().enumerate() {
            let Value::Object(mut item) = item else {
                continue;
            };
            // A message may come without a `type`, or with a null one, as OpenAI takes it;
            // it is listed as what it is.
            if item.get("type").is_none_or(Value::is_null) {
                item.insert("type".to_owned(), json!("message"));
            }
            if item["type"] == "message" {
                let kind = if item["role"] == "assistant" {
                    "output_text"
                } else {
                    "input_text"
                };
                if let Some(Value::String(text)) = item.get("content") {
                    let part = json!([{"type": kind, "text": text}]);
                    item.insert("content".to_owned(), part);
                }
                item.entry("status").or_insert(json!("completed"));
            }
            if !item.contains_key("id") {
                let prefix = match item["type"].as_str() {
                    Some("message") => "msg",
                    Some("function_call") => "fc",
                    Some("function_call_output") => "fco",
                    _ => "item",
                };
                item.insert(
                    "id".to_owned(),
                    json!(format!("{prefix}_{turn_id}{side}{place:04x}")),
                );
            }
            listed.push(Value::Object(item));
        }
    }
    listed
}

/// A turn as its input and output items, in place (a deleted item's place is `null`).
pub fn turn_parts(turn: &Turn) -> (Vec<Value>, Vec<Value>) {
    if let Some(exchange) = &turn.exchange {
        return (exchange.input.clone(), exchange.output().to_vec());
    }
    let input = turn
        .asked
        .iter()
        .map(|asked| asked_item(asked, false))
        .collect();
    let mut output = Vec::new();
    if turn.has_reply() {
        if !turn.assistant.is_empty() || turn.calls.is_empty() {
            output.push(json!({"role": "assistant", "content": turn.assistant}));
        }
        for call in &turn.calls {
            output.push(json!({"type": "function_call", "call_id": call["id"],
                "name": call["function"]["name"], "arguments": call["function"]["arguments"]}));
        }
    }
    (input, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_name_their_turn_and_chat() {
        let turn = "0123456789abcdef0123456789abcdef";
        for chat in [ChatId::new_chain(), ChatId::parse("trip@home").unwrap()] {
            let id = response_id(turn, &chat);
            assert_eq!(parse_response_id(&id), Some((turn, chat)));
        }
        for other in ["resp_67ccd2bed1ec8190", "resp_short_trip", "chatcmpl-1", ""] {
            assert_eq!(parse_response_id(other), None, "{other}");
        }
    }

    #[test]
    fn the_other_doors_see_messages_results_text_and_calls() {
        let exchange = Exchange {
            input: vec![
                json!({"role": "user", "content": "plain"}),
                json!({"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"}]}),
                json!({"type": "function_call_output", "call_id": "call_1", "output": "42"}),
                json!({"role": "developer", "content": "not a message of the chat"}),
            ],
            response: StoredResponse::from_value(&json!({"id": "resp_1", "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "The answer", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_2", "name": "f",
                 "arguments": "{}", "status": "completed"}
            ]})),
        };
        let asked = exchange.asked();
        assert_eq!(asked.len(), 3);
        assert_eq!(asked[0], Asked::User(UserContent::Text("plain".into())));
        assert_eq!(
            asked[1].image_urls().collect::<Vec<_>>(),
            ["https://x/a.png"]
        );
        assert_eq!(
            asked[2],
            Asked::ToolResult(ToolResult {
                tool_call_id: "call_1".into(),
                content: json!("42")
            })
        );
        assert_eq!(exchange.reply_text(), "The answer");
        assert_eq!(
            exchange.calls(),
            [
                json!({"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}})
            ]
        );
    }

    #[test]
    fn turns_of_every_door_become_items() {
        let call = json!({"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{}"}});
        let chat_turn = Turn {
            calls: vec![call],
            ..Turn::question(
                None,
                "q".into(),
                Some("https://x/a.png".into()),
                String::new(),
            )
        };
        let mut items = Vec::new();
        turn_items(&chat_turn, false, &mut items);
        assert_eq!(
            items,
            [
                json!({"role": "user", "content": [{"type": "input_text", "text": "q"},
                    {"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"}]}),
                json!({"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}),
            ]
        );
        let result = Asked::ToolResult(ToolResult {
            tool_call_id: "call_1".into(),
            content: json!([{"type": "text", "text": "done"}]),
        });
        assert_eq!(
            asked_item(&result, false),
            json!({"type": "function_call_output", "call_id": "call_1", "output": "done"})
        );
        let reasoning =
            json!({"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAA", "summary": []});
        let exchange = Exchange {
            input: vec![json!({"role": "user", "content": "hi"})],
            response: StoredResponse::from_value(&json!({"output": [reasoning.clone()]})),
        };
        let responses_turn = Turn {
            exchange: Some(Box::new(exchange)),
            ..Turn::question(None, "hi".into(), None, String::new())
        };
        let mut items = Vec::new();
        turn_items(&responses_turn, false, &mut items);
        assert_eq!(items, [json!({"role": "user", "content": "hi"}), reasoning]);
    }

    #[test]
    fn a_stored_response_keeps_its_text_and_reads_its_output_items() {
        let text = r#"{"id":"resp_1","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]},null],"tools":[{"type":"function","name":"f"}],"usage":{"total_tokens":3}}"#;
        let exchange: Exchange = serde_json::from_str(&format!(
            r#"{{"input":[{{"role":"user","content":"q"}}],"response":{text}}}"#
        ))
        .unwrap();
        assert!(exchange.is_well_formed());
        assert_eq!(exchange.output().len(), 2);
        assert_eq!(exchange.reply_text(), "hi");
        assert_eq!(
            exchange.response.to_value(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // Written back as it was read, byte for byte.
        let written = serde_json::to_string(&exchange).unwrap();
        assert!(
            written.ends_with(&format!(r#""response":{text}}}"#)),
            "{written}"
        );
        // A value makes the same text as the stored one.
        assert_eq!(
            StoredResponse::from_value(&serde_json::from_str(text).unwrap()),
            exchange.response
        );

        // Another output keeps every other field.
        let fewer = exchange
            .response
            .with_output(vec![Value::Null, Value::Null]);
        assert_eq!(
            fewer.to_value()["tools"],
            json!([{"type": "function", "name": "f"}])
        );
        assert_eq!(fewer.to_value()["output"], json!([null, null]));

        // No response: null, or no field at all.
        for stored in [r#"{"input":[],"response":null}"#, r#"{"input":[]}"#] {
            let exchange: Exchange = serde_json::from_str(stored).unwrap();
            assert!(exchange.response.is_null() && exchange.is_well_formed());
            assert_eq!(exchange.response.to_value(), Value::Null);
            assert_eq!(
                serde_json::to_string(&exchange).unwrap(),
                r#"{"input":[],"response":null}"#
            );
        }
    }

    #[test]
    fn a_response_of_another_shape_is_read_and_refused_by_an_import() {
        for response in [
            r#"[1]"#,
            r#""text""#,
            r#"{"output":{"a":1}}"#,
            r#"{"output":[1]}"#,
        ] {
            let exchange: Exchange =
                serde_json::from_str(&format!(r#"{{"input":[],"response":{response}}}"#)).unwrap();
            assert!(!exchange.is_well_formed(), "{response}");
            assert!(
                !StoredResponse::from_value(&serde_json::from_str(response).unwrap()).well_formed
            );
        }
        let exchange: Exchange =
            serde_json::from_str(r#"{"input":[1],"response":{"output":[]}}"#).unwrap();
        assert!(!exchange.is_well_formed());
    }
}
