//! A `POST /v1/responses` body, read: what the proxy handles itself (the input, the chain or
//! conversation it continues, `instructions`, `store`, `stream`) taken out, and every other
//! parameter left to pass upstream as sent.

use serde_json::{Map, Value};

use crate::chat::{parse_response_id, ChatId};
use crate::error::ApiError;

/// What a Responses request asks of the proxy.
pub(super) struct Asked {
    /// The input items, as sent (a string input is one user message).
    pub input: Vec<Value>,
    pub instructions: Option<String>,
    pub store: bool,
    pub stream: bool,
    /// `background`: the response is answered at once, `queued`, and made by another
    /// invocation (`background.rs`).
    pub background: bool,
    /// `previous_response_id`, as sent, with the turn and the chat it names.
    pub previous: Option<(String, String, ChatId)>,
    /// `conversation`: the chat it names.
    pub conversation: Option<ChatId>,
    /// The caller asked for the reasoning's encrypted content (`include`).
    pub wants_encrypted_reasoning: bool,
}

impl Asked {
    /// The chat the request reads (a chain's, or a conversation's) and the turn of it it
    /// continues, if any.
    pub fn reads(&self) -> (Option<ChatId>, Option<String>) {
        match (&self.previous, &self.conversation) {
            (Some((_, turn, chat)), _) => (Some(chat.clone()), Some(turn.clone())),
            (None, Some(conversation)) => (Some(conversation.clone()), None),
            (None, None) => (None, None),
        }
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        code: "invalid_value",
        param,
        message: message.into(),
    }
}

fn flag(params: &mut Map<String, Value>, name: &'static str) -> Result<Option<bool>, ApiError> {
    match params.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(value)),
        Some(_) => Err(invalid(name, format!("`{name}` must be true or false"))),
    }
}

/// Whether a request may leave `input` out: a compaction or a count of a chain (or a
/// conversation) may (what it compacts or counts is what that stands for), a response
/// may not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    Required,
    WithChainOptional,
}

/// Reads the proxy's parameters out of `params`; what is left goes upstream.
pub(super) fn read(params: &mut Map<String, Value>, needs: Input) -> Result<Asked, ApiError> {
    let stream = flag(params, "stream")?.unwrap_or(false);
    let store = flag(params, "store")?.unwrap_or(true);
    let background = flag(params, "background")?.unwrap_or(false);
    if background && !store {
        // As OpenAI: a background response is kept, or nobody could read it.
        return Err(invalid(
            "background",
            "`background` responses must be stored: leave `store` out or set it true",
        ));
    }
    // What the input may follow: a chain, or (for a count) a conversation.
    let chain = matches!(params.get("previous_response_id"), Some(Value::String(_)))
        || matches!(
            params.get("conversation"),
            Some(Value::String(_) | Value::Object(_))
        );
    let input = match params.remove("input") {
        Some(Value::String(text)) if !text.is_empty() => {
            vec![serde_json::json!({"role": "user", "content": text})]
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        None | Some(Value::Null) if needs == Input::WithChainOptional && chain => Vec::new(),
        _ => {
            return Err(invalid(
                "input",
                "`input` must be a non-empty string or a non-empty array of input items",
            ))
        }
    };
    // Checked as a conversation's items are: nothing upstream would refuse is sent.
    crate::chat::check_items(&input)
        .map_err(|(index, why)| invalid("input", format!("input[{index}] {why}")))?;
    if let Err(index) = crate::chat::referenced_ids(&input) {
        return Err(invalid(
            "input",
            format!(
                "input[{index}] is an item_reference without an `id` (a string of 1 to {} bytes)",
                crate::chat::MAX_ITEM_ID_BYTES
            ),
        ));
    }
    let instructions = match params.remove("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => return Err(invalid("instructions", "`instructions` must be a string")),
    };
    let previous = match params.remove("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            let (turn, chat) = parse_response_id(&id).ok_or_else(|| ApiError::Missing {
                code: "previous_response_not_found",
                param: Some("previous_response_id"),
                message: format!("Previous response with id '{id}' not found."),
            })?;
            let turn = turn.to_owned();
            Some((id, turn, chat))
        }
        Some(_) => {
            return Err(invalid(
                "previous_response_id",
                "`previous_response_id` must be a string",
            ))
        }
    };
    let conversation = match params.remove("conversation") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(conversation_id(&id)?),
        Some(Value::Object(conversation)) => match conversation.get("id") {
            Some(Value::String(id)) => Some(conversation_id(id)?),
            _ => {
                return Err(invalid(
                    "conversation",
                    "`conversation.id` must be a string",
                ))
            }
        },
        Some(_) => {
            return Err(invalid(
                "conversation",
                "`conversation` must be a conversation's id or {\"id\": ...}",
            ))
        }
    };
    if previous.is_some() && conversation.is_some() {
        return Err(ApiError::BadParam {
            code: "invalid_request",
            param: "conversation",
            message: "`previous_response_id` and `conversation` cannot be used together: \
                      a response continues a chain or a conversation"
                .to_owned(),
        });
    }
    let wants_encrypted_reasoning = match params.get("include") {
        None | Some(Value::Null) => false,
        Some(Value::Array(include)) => include
            .iter()
            .any(|entry| entry == crate::turn::ENCRYPTED_REASONING),
        Some(_) => return Err(invalid("include", "`include` must be an array of strings")),
    };
    Ok(Asked {
        input,
        instructions,
        store,
        stream,
        background,
        previous,
        conversation,
        wants_encrypted_reasoning,
    })
}

/// A conversation's id is a chat's id: `conversation: "trip"` continues the chat `trip`.
fn conversation_id(id: &str) -> Result<ChatId, ApiError> {
    ChatId::parse_decoded(id).map_err(|_| ApiError::Missing {
        code: "conversation_not_found",
        param: Some("conversation"),
        message: format!("Conversation with id '{id}' not found."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_compaction_of_a_chain_may_leave_its_input_out_and_nothing_else_may() {
        let id = "resp_0123456789abcdef0123456789abcdef_~0123456789abcdef0123456789abcdef";
        let chain = read(
            &mut params(json!({"previous_response_id": id})),
            Input::WithChainOptional,
        );
        assert!(chain.is_ok_and(|asked| asked.input.is_empty() && asked.previous.is_some()));
        for (body, needs) in [
            (json!({"model": "m"}), Input::WithChainOptional),
            (json!({"previous_response_id": id}), Input::Required),
            (
                json!({"previous_response_id": id, "input": []}),
                Input::WithChainOptional,
            ),
        ] {
            assert!(read(&mut params(body.clone()), needs).is_err(), "{body}");
        }
    }

    #[test]
    fn the_proxys_parameters_are_taken_and_the_rest_left() {
        let mut body = params(
            json!({"input": "hi", "model": "m", "tools": [], "store": false,
            "instructions": "be brief", "include": ["reasoning.encrypted_content"]}),
        );
        let asked = read(&mut body, Input::Required).unwrap();
        assert_eq!(asked.input, [json!({"role": "user", "content": "hi"})]);
        assert!(!asked.store && !asked.stream && asked.wants_encrypted_reasoning);
        assert_eq!(asked.instructions.as_deref(), Some("be brief"));
        assert_eq!(
            body.keys().collect::<Vec<_>>(),
            ["include", "model", "tools"]
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            (json!({}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": [3]}), "input"),
            (
                json!({"input": [{"type": "item_reference", "id": 4}]}),
                "input",
            ),
            (json!({"input": "x", "stream": "yes"}), "stream"),
            (json!({"input": "x", "background": 1}), "background"),
            (
                json!({"input": "x", "background": true, "store": false}),
                "background",
            ),
            (
                json!({"input": "x", "previous_response_id": "resp_unknown"}),
                "previous_response_id",
            ),
            (json!({"input": "x", "conversation": 4}), "conversation"),
            (
                json!({"input": "x", "conversation": "bad id"}),
                "conversation",
            ),
            (
                json!({"input": "x", "conversation": "c", "previous_response_id":
                "resp_0123456789abcdef0123456789abcdef_c"}),
                "conversation",
            ),
        ];
        for (body, param) in cases {
            let error = read(&mut params(body.clone()), Input::Required)
                .err()
                .expect("refused");
            let reply: Value = serde_json::from_slice(&error.body()).unwrap();
            assert_eq!(reply["error"]["param"], param, "{body}");
        }
    }
}
