//! The document `POST /chats/import` reads: what `GET /<chat_id>/export` wrote (its
//! `turns` restored exactly), or a transcript's `messages` alone, each checked before
//! anything is stored.

use lambda_http::Request;
use serde_json::{Map, Value};

use super::{into_of, invalid, invalid_chat_id, only};
use crate::app::App;
use crate::body::{json_object, whole_number, whole_numbers_as_integers};
use crate::chat::{Asked, ChatId, ImageRef, Part, ToolResult, Turn, UserContent, MAX_TITLE_CHARS};
use crate::error::ApiError;
use crate::store::ChatUsage;

/// A chat to import.
pub(super) struct Imported {
    pub into: Option<ChatId>,
    pub title: Option<String>,
    pub system: Option<String>,
    pub turns: Vec<Turn>,
    /// The exported chat's usage, kept (a document without one starts at nothing).
    pub usage: ChatUsage,
}

/// An export document, under the id `into` names, else its own `id`, else a fresh one. Its
/// `turns` are restored exactly; a document with only `messages` (written by hand, or by
/// another tool) has its turns made from them.
pub(super) fn import_of(request: &Request, limit: usize) -> Result<Imported, ApiError> {
    let mut body = json_object(request.body(), limit)?;
    // The document's own id is checked even when `into` names another.
    let own = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(ChatId::parse_decoded(id).map_err(|_| invalid_chat_id("id"))?)
        }
        Some(_) => return Err(invalid("id", "`id` must be a chat id (a string)")),
    };
    let into = into_of(&mut body)?.or(own);
    let text = |body: &mut Map<String, Value>, name: &'static str| match body.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(invalid(name, format!("`{name}` must be a string or null"))),
    };
    let title = text(&mut body, "title")?;
    if title
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
    {
        return Err(invalid(
            "title",
            format!("`title` must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    let system = text(&mut body, "system")?;
    let mut turns = body.remove("turns");
    // A turn's token counts are integers however JSON spelled them; every other number
    // (a response's `temperature`, say) is kept exactly as written.
    if let Some(Value::Array(turns)) = &mut turns {
        for turn in turns.iter_mut() {
            if let Some(tokens) = turn.get_mut("tokens") {
                whole_numbers_as_integers(tokens);
            }
        }
    }
    let messages = body.remove("messages");
    // An export holds both; its `turns` are what is restored, and its `messages` must
    // still be a transcript.
    match (&turns, &messages) {
        (Some(_), Some(Value::Array(messages))) => {
            turns_of(messages.clone())?;
        }
        (Some(_), Some(other)) if !other.is_null() => {
            return Err(invalid("messages", "`messages` must be an array"));
        }
        _ => {}
    }
    let turns = match (turns, messages) {
        (Some(Value::Array(turns)), _) => turns
            .into_iter()
            .enumerate()
            .map(|(index, turn)| {
                // From its text: a stored response is read as text (`StoredResponse`).
                let turn: Turn = serde_json::from_str(&turn.to_string()).map_err(|e| {
                    invalid("turns", format!("turns[{index}] is not a turn as exported: {e}"))
                })?;
                if turn.exchange.as_ref().is_some_and(|e| !e.is_well_formed()) {
                    return Err(invalid(
                        "turns",
                        format!(
                            "turns[{index}].exchange must hold items (objects) and a response \
                             object, as exported"
                        ),
                    ));
                }
                // The proxy's own ids (32 hex digits) are kept, and name its key markers and
                // response ids; a turn without one gets a new one.
                match &turn.id {
                    None => Ok(Turn {
                        id: Some(Turn::new_id()),
                        ..turn
                    }),
                    Some(id) if is_turn_id(id) => Ok(turn),
                    Some(_) => Err(invalid(
                        "turns",
                        format!("turns[{index}].id must be 32 lowercase hex digits, as exported"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        (Some(_), _) => return Err(invalid("turns", "`turns` must be an array")),
        (None, Some(Value::Array(messages))) => turns_of(messages)?,
        (None, Some(_)) => return Err(invalid("messages", "`messages` must be an array")),
        (None, None) => {
            return Err(invalid(
                "turns",
                "the document has neither `turns` nor `messages`: send what GET /<chat_id>/export answered",
            ))
        }
    };
    // A turn is found by its id (a regenerate replaces it and every turn after it, a
    // response id names it): two turns of one id would make one of them unreachable.
    for (index, turn) in turns.iter().enumerate() {
        if turns[..index].iter().any(|earlier| earlier.id == turn.id) {
            return Err(invalid(
                "turns",
                format!("turns[{index}].id repeats the id of an earlier turn"),
            ));
        }
    }
    let usage = usage_of(body.remove("usage"))?;
    // What an export writes besides, and the import does not read back: the chat's times
    // are this deployment's own, and its compaction is made again when its window moves.
    for ignored in ["object", "id", "created_at", "updated_at", "compacted"] {
        body.remove(ignored);
    }
    only(
        &body,
        "an export document (`turns` or `messages`, `system`, `title`) and `into`",
    )?;
    Ok(Imported {
        into,
        title,
        system,
        turns,
        usage,
    })
}

/// The exported chat's `usage`, as an export writes it: whole numbers of turns and tokens.
fn usage_of(usage: Option<Value>) -> Result<ChatUsage, ApiError> {
    let Some(Value::Object(usage)) = usage.filter(|usage| !usage.is_null()) else {
        return Ok(ChatUsage::default());
    };
    let count = |name: &str| match usage.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(value) => whole_number(value).ok_or_else(|| {
            invalid(
                "usage",
                format!("`usage.{name}` must be a whole number from 0, as exported"),
            )
        }),
    };
    let (prompt, completion) = (count("prompt_tokens")?, count("completion_tokens")?);
    Ok(ChatUsage {
        turns: count("turns")?,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: count("cached_tokens")?,
        total_tokens: prompt.saturating_add(completion),
    })
}

fn is_turn_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Turns from a transcript's messages: each run of user and tool messages is a turn's
/// questions, and the assistant message after it its reply.
fn turns_of(messages: Vec<Value>) -> Result<Vec<Turn>, ApiError> {
    let mut turns = Vec::new();
    let mut asked: Vec<Asked> = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        let bad = |why: &str| invalid("messages", format!("messages[{index}] {why}"));
        let Value::Object(mut message) = message else {
            return Err(bad("must be an object"));
        };
        let content = match message.remove("content") {
            Some(Value::String(content)) => content,
            _ => return Err(bad("must have a `content` string")),
        };
        match message.get("role").and_then(Value::as_str) {
            Some("user") => {
                let mut urls: Vec<String> = match message.remove("urls") {
                    Some(Value::Array(urls)) => urls
                        .into_iter()
                        .map(|url| {
                            url.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| bad("has a `urls` entry that is not a string"))
                        })
                        .collect::<Result<_, _>>()?,
                    None => Vec::new(),
                    Some(_) => return Err(bad("has `urls` that is not a list of strings")),
                };
                match message.remove("url") {
                    Some(Value::String(url)) if urls.is_empty() => urls.push(url),
                    None | Some(Value::String(_)) => {}
                    Some(_) => return Err(bad("has a `url` that is not a string")),
                }
                let content = if urls.is_empty() {
                    UserContent::Text(content)
                } else {
                    let mut parts = vec![Part::Text { text: content }];
                    parts.extend(urls.into_iter().map(|url| Part::ImageUrl {
                        image_url: ImageRef { url, detail: None },
                    }));
                    UserContent::Parts(parts)
                };
                asked.push(Asked::User(content));
            }
            Some("tool") => {
                let Some(Value::String(call)) = message.remove("tool_call_id") else {
                    return Err(bad("is a tool's result without a `tool_call_id`"));
                };
                asked.push(Asked::ToolResult(ToolResult {
                    tool_call_id: call,
                    content: Value::String(content),
                }));
            }
            Some("assistant") => {
                if asked.is_empty() {
                    return Err(bad("is an answer with no question before it"));
                }
                turns.push(Turn {
                    id: Some(Turn::new_id()),
                    asked: std::mem::take(&mut asked),
                    assistant: content,
                    calls: Vec::new(),
                    exchange: None,
                    tokens: None,
                });
            }
            _ => return Err(bad("must have a `role` of user, assistant or tool")),
        }
    }
    if !asked.is_empty() {
        turns.push(Turn::unanswered(Turn::new_id(), asked));
    }
    Ok(turns)
}

/// An imported chat must fit the caps every chat is kept within.
pub(super) fn check_size(app: &App, turns: &[Turn]) -> Result<(), ApiError> {
    let messages: usize = turns.iter().map(Turn::messages).sum();
    let bytes: usize = turns
        .iter()
        .map(|turn| serde_json::to_string(turn).map_or(0, |json| json.len()))
        .sum();
    let (max_messages, max_bytes) = app.chat_caps;
    if messages > max_messages || bytes > max_bytes {
        return Err(ApiError::BadParam {
            code: "chat_too_large",
            param: "turns",
            message: format!(
                "the chat holds {messages} messages in {bytes} bytes; a chat here keeps at \
                 most {max_messages} messages (MAX_HISTORY_MESSAGES) and {max_bytes} bytes \
                 (MAX_CHAT_BYTES)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_make_turns_and_an_answer_needs_a_question() {
        let messages = vec![
            json!({"role": "user", "content": "look", "url": "https://example.com/a.png"}),
            json!({"role": "assistant", "content": "a cat"}),
            json!({"role": "user", "content": "and now?"}),
        ];
        let turns = turns_of(messages).unwrap();
        assert_eq!(turns.len(), 2);
        assert_eq!(
            turns[0].asked[0].image_urls().collect::<Vec<_>>(),
            ["https://example.com/a.png"]
        );
        assert!(!turns[1].has_reply());
        let error = turns_of(vec![json!({"role": "assistant", "content": "hi"})]).unwrap_err();
        assert!(error.to_string().contains("no question"), "{error}");
        for bad in [
            json!({"role": "x", "content": "hi"}),
            json!({"role": "user"}),
            json!(3),
        ] {
            assert!(turns_of(vec![bad]).is_err());
        }
    }
}
