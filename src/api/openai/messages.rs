//! The `messages` of a `/v1/chat/completions` request: checked for a stateless call (which
//! upstream judges), and read into the user messages a stored chat keeps for a stateful one.

use serde_json::{Map, Value};

use crate::body::image_url;
use crate::chat::{text_of, Asked, ImageRef, Part, Said, ToolResult, UserContent};
use crate::error::ApiError;
use crate::turn::Resent;

/// The functions API that tools replaced: a chat keeps tool calls, not `function_call`s.
const UNSUPPORTED_WITH_A_CHAT: [&str; 2] = ["functions", "function_call"];

/// A stateful turn's `messages`, read: the chat's prompt when the request leads with one,
/// the history it resent, and its new messages.
pub(super) struct Stateful {
    pub prompt: Option<String>,
    pub resent: Resent,
    pub asked: Vec<Asked>,
}

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

/// A turn's messages, as frameworks send them: optional leading `system` or `developer`
/// messages (the chat's prompt), then optionally the history as the caller has it (up to
/// its last `assistant` message), then the new `user` and `tool` messages.
pub(super) fn stateful_messages(params: &mut Map<String, Value>) -> Result<Stateful, ApiError> {
    if let Some(name) = UNSUPPORTED_WITH_A_CHAT
        .iter()
        .find(|name| params.contains_key(**name))
    {
        return Err(ApiError::bad_request(
            "unsupported_parameter",
            format!("`{name}` is not supported with X-Chat-Id: use `tools`, which a chat keeps"),
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
            "`messages` must be a non-empty array of messages",
        ));
    };
    let role = |message: &Value| {
        message
            .get("role")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let lead = messages
        .iter()
        .take_while(|m| matches!(role(m).as_deref(), Some("system" | "developer")))
        .count();
    let after_history = messages[lead..]
        .iter()
        .rposition(|m| role(m).as_deref() == Some("assistant"))
        .map_or(lead, |last| lead + last + 1);
    if after_history == messages.len() {
        return Err(invalid_messages(
            "`messages` must end with at least one new user or tool message",
        ));
    }
    let mut messages = messages.into_iter().enumerate();
    let mut prompts = Vec::new();
    for (index, message) in messages.by_ref().take(lead) {
        prompts.push(prompt(index, message)?);
    }
    let mut resent = Vec::new();
    for (index, message) in messages.by_ref().take(after_history - lead) {
        resent.push(history_message(index, message)?);
    }
    let asked = messages
        .map(|(index, message)| new_message(index, message))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stateful {
        prompt: (!prompts.is_empty()).then(|| prompts.join("\n\n")),
        resent: Resent {
            messages: resent,
            from: lead,
        },
        asked,
    })
}

fn object(index: usize, message: Value) -> Result<Map<String, Value>, ApiError> {
    match message {
        Value::Object(message) => Ok(message),
        _ => Err(invalid_messages(format!(
            "messages[{index}] must be an object"
        ))),
    }
}

/// A leading `system` or `developer` message's text: the chat's prompt.
fn prompt(index: usize, message: Value) -> Result<String, ApiError> {
    let message = object(index, message)?;
    let text = match message.get("content") {
        Some(content @ (Value::String(_) | Value::Array(_))) => text_of(content).into_owned(),
        _ => String::new(),
    };
    if text.trim().is_empty() {
        return Err(invalid_messages(format!(
            "messages[{index}].content must be non-empty text: a leading system message is the chat's prompt"
        )));
    }
    Ok(text)
}

/// A message of the history a caller resent: compared with the chat's, never stored again.
fn history_message(index: usize, message: Value) -> Result<Said, ApiError> {
    let mut message = object(index, message)?;
    match message.get("role").and_then(Value::as_str) {
        Some("assistant") => {
            let text = match message.remove("content") {
                None | Some(Value::Null) => String::new(),
                Some(content @ (Value::String(_) | Value::Array(_))) => {
                    text_of(&content).into_owned()
                }
                Some(_) => {
                    return Err(invalid_messages(format!(
                        "messages[{index}].content must be text, an array of text parts, or null"
                    )))
                }
            };
            let calls = match message.remove("tool_calls") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(calls)) => calls,
                Some(_) => {
                    return Err(invalid_messages(format!(
                        "messages[{index}].tool_calls must be an array"
                    )))
                }
            };
            let text = match (text.is_empty(), message.remove("refusal")) {
                (true, Some(Value::String(refusal))) => refusal,
                _ => text,
            };
            Ok(Said::Reply { text, calls })
        }
        _ => new_message(index, Value::Object(message)).map(Said::Asked),
    }
}

/// A new message of the turn: a `user` message, or a `tool` message answering a call of
/// the chat's last reply.
fn new_message(index: usize, message: Value) -> Result<Asked, ApiError> {
    let mut message = object(index, message)?;
    match message.get("role").and_then(Value::as_str) {
        Some("user") => user_message(index, message).map(Asked::User),
        Some("tool") => {
            message.remove("role");
            let tool_call_id = match message.remove("tool_call_id") {
                Some(Value::String(id)) if !id.is_empty() => id,
                _ => {
                    return Err(invalid_messages(format!(
                        "messages[{index}].tool_call_id must be the id of the tool call it answers"
                    )))
                }
            };
            let content = match message.remove("content") {
                Some(content @ (Value::String(_) | Value::Array(_))) => content,
                _ => {
                    return Err(invalid_messages(format!(
                        "messages[{index}].content must be text or an array of text parts"
                    )))
                }
            };
            if let Some(other) = message.keys().next() {
                return Err(invalid_messages(format!(
                    "messages[{index}].{other} cannot be kept with the chat: send role, tool_call_id and content"
                )));
            }
            Ok(Asked::ToolResult(ToolResult {
                tool_call_id,
                content,
            }))
        }
        Some(role @ ("system" | "developer")) => Err(invalid_messages(format!(
            "messages[{index}] is a {role} message after the conversation began: with X-Chat-Id, system messages lead the request (they are the chat's prompt)"
        ))),
        Some(role) => Err(invalid_messages(format!(
            "messages[{index}] has role `{role}`: with X-Chat-Id, send system, user, assistant and tool messages"
        ))),
        None => Err(invalid_messages(format!("messages[{index}] needs a role"))),
    }
}

fn user_message(index: usize, mut message: Map<String, Value>) -> Result<UserContent, ApiError> {
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
