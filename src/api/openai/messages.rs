//! The `messages` of a `/v1/chat/completions` request: checked for a stateless call (which
//! upstream judges), and read into the user messages a stored chat keeps for a stateful one.

use serde_json::{Map, Value};

use crate::body::image_url;
use crate::chat::{ImageRef, Part, UserContent};
use crate::error::ApiError;

/// Parameters a stateful completion cannot keep faithfully: refused, never dropped.
const UNSUPPORTED_WITH_A_CHAT: [&str; 4] = ["tools", "functions", "tool_choice", "function_call"];

fn invalid_messages(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_messages", message)
}

/// A stateless call's `messages`: a non-empty array of objects with a role, as upstream
/// requires too (refused here, it costs no upstream call); the rest is upstream's to judge.
pub(super) fn stateless_messages(params: &Map<String, Value>) -> Result<(), ApiError> {
    let messages = match params.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Err(invalid_messages(
                "`messages` must be a non-empty array of messages",
            ))
        }
    };
    for (index, message) in messages.iter().enumerate() {
        if !message.get("role").is_some_and(Value::is_string) {
            return Err(invalid_messages(format!(
                "messages[{index}] must be an object with a `role`"
            )));
        }
    }
    Ok(())
}

/// A turn's new messages: one or more `user` messages, each text or text and image parts,
/// all of which the chat can keep. Parameters the chat cannot keep are refused.
pub(super) fn stateful_messages(
    params: &mut Map<String, Value>,
) -> Result<Vec<UserContent>, ApiError> {
    if let Some(name) = UNSUPPORTED_WITH_A_CHAT
        .iter()
        .find(|name| params.contains_key(**name))
    {
        return Err(ApiError::bad_request(
            "unsupported_parameter",
            format!("`{name}` is not supported with X-Chat-Id: the chat stores user messages and replies, not tool calls"),
        ));
    }
    if let Some(n) = params.get("n") {
        if n.as_u64() != Some(1) && !n.is_null() {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                "`n` must be 1 with X-Chat-Id: a chat keeps one reply per turn",
            ));
        }
    }
    let Some(Value::Array(messages)) = params.remove("messages") else {
        return Err(invalid_messages(
            "`messages` must be a non-empty array of user messages",
        ));
    };
    if messages.is_empty() {
        return Err(invalid_messages(
            "`messages` must hold at least one user message",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| user_message(i, message))
        .collect()
}

fn user_message(index: usize, message: Value) -> Result<UserContent, ApiError> {
    let Value::Object(mut message) = message else {
        return Err(invalid_messages(format!(
            "messages[{index}] must be an object"
        )));
    };
    match message.get("role").and_then(Value::as_str) {
        Some("user") => {}
        Some(role @ ("system" | "developer")) => {
            return Err(invalid_messages(format!(
                "messages[{index}] is a {role} message: with X-Chat-Id, set the chat's prompt with POST /<chat_id>/system (the global one with POST /system)"
            )))
        }
        Some(role @ ("assistant" | "tool" | "function")) => {
            return Err(invalid_messages(format!(
                "messages[{index}] is an {role} message: with X-Chat-Id the proxy keeps the history; send only the new user messages"
            )))
        }
        _ => return Err(invalid_messages(format!("messages[{index}] needs a role, and only `user` is taken with X-Chat-Id"))),
    }
    message.remove("role");
    let content = message.remove("content");
    if let Some(other) = message.keys().next() {
        return Err(invalid_messages(format!(
            "messages[{index}].{other} cannot be kept with the chat: send role and content only"
        )));
    }
    match content {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(UserContent::Text(text)),
        Some(Value::Array(parts)) if !parts.is_empty() => parts
            .into_iter()
            .enumerate()
            .map(|(p, part)| content_part(index, p, part))
            .collect::<Result<Vec<Part>, ApiError>>()
            .map(UserContent::Parts),
        _ => Err(invalid_messages(format!(
            "messages[{index}].content must be non-empty text, or an array of text and image_url parts"
        ))),
    }
}

fn content_part(index: usize, number: usize, part: Value) -> Result<Part, ApiError> {
    let at = format!("messages[{index}].content[{number}]");
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "text" => match part.get("text") {
            Some(Value::String(text)) => Ok(Part::Text { text: text.clone() }),
            _ => Err(invalid_messages(format!("{at}.text must be a string"))),
        },
        "image_url" => {
            let image = part.get("image_url");
            let url = image
                .and_then(|image| image.get("url"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_messages(format!("{at}.image_url.url must be a string")))?;
            let detail = match image.and_then(|image| image.get("detail")) {
                None | Some(Value::Null) => None,
                Some(Value::String(detail)) => Some(detail.clone()),
                Some(_) => {
                    return Err(invalid_messages(format!(
                        "{at}.image_url.detail must be a string"
                    )))
                }
            };
            Ok(Part::ImageUrl {
                image_url: ImageRef {
                    url: image_url(url.to_owned())?,
                    detail,
                },
            })
        }
        other => Err(invalid_messages(format!(
            "{at} is of type `{other}`: a chat keeps text and image_url parts only"
        ))),
    }
}
