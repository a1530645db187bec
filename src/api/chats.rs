//! A caller's chats as a chat app keeps them: the list (`GET /chats`), titles, deletion,
//! forks, and export and import of a whole chat. Seed-style: JSON in, JSON out, and every
//! caller sees only its own chats (the store works inside the caller's namespace).

use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::body::{json_object, whole_number, whole_numbers_as_integers};
use crate::chat::{
    transcript, Asked, ChatId, ImageRef, Part, Tenant, ToolResult, Turn, UserContent,
    MAX_TITLE_CHARS,
};
use crate::error::ApiError;
use crate::http::{empty_object, json_response, ResponseBody};
use crate::paging::query_values;
use crate::request_log::RequestLog;
use crate::routes::ChatsRoute;
use crate::store::{ChatCursor, ChatSummary, NewChat};

/// What `GET /<chat_id>/export` writes and `POST /chats/import` reads.
const EXPORT_OBJECT: &str = "chat.export";

/// Serves a route of a caller's chats, each with the caller's rate limit counted in the
/// same round trip as its first read.
pub async fn serve(
    app: &App,
    route: ChatsRoute,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let limit = app.guard.rate_limit(tenant, request);
    let store = &app.store;
    match route {
        ChatsRoute::List => {
            let (after, count) = list_query(request)?;
            let read =
                async { tokio::join!(limit, store.list_chats(tenant, after.as_ref(), count)) };
            let (allowed, page) = log.redis(read).await;
            allowed?;
            let page = page?;
            let chats: Vec<Value> = page.chats.iter().map(listed).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "chats": chats,
                    "has_more": page.next.is_some(),
                    "next": page.next.as_ref().map(cursor_text),
                }),
            ))
        }
        ChatsRoute::GetTitle(chat) => {
            let read = async { tokio::join!(limit, store.chat_summary(tenant, &chat)) };
            let (allowed, summary) = log.redis(read).await;
            allowed?;
            let summary = summary?.ok_or_else(|| chat_not_found(&chat))?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "title": summary.title }),
            ))
        }
        ChatsRoute::SetTitle(chat) => {
            let title = title_of(request, app.max_body_bytes)?;
            let write = async { tokio::join!(limit, store.set_title(tenant, &chat, &title)) };
            let (allowed, set) = log.redis(write).await;
            allowed?;
            if !set? {
                return Err(chat_not_found(&chat));
            }
            Ok(empty_object())
        }
        ChatsRoute::Delete(chat) => {
            let write = async { tokio::join!(limit, store.delete_chat(tenant, &chat)) };
            let (allowed, deleted) = log.redis(write).await;
            allowed?;
            deleted?;
            Ok(empty_object())
        }
        ChatsRoute::Fork(chat) => {
            let (into, index) = fork_of(request, app.max_body_bytes)?;
            let read = async {
                tokio::join!(
                    limit,
                    store.turns(tenant, &chat),
                    store.chat_prompt(tenant, &chat),
                    store.chat_summary(tenant, &chat),
                )
            };
            let (allowed, turns, prompt, summary) = log.redis(read).await;
            allowed?;
            let (turns, prompt) = (turns?, prompt?);
            if summary?.is_none() {
                return Err(chat_not_found(&chat));
            }
            let turns = cut_at(turns, index)?;
            let new = NewChat {
                prompt: prompt.as_deref(),
                title: None,
                turns: &turns,
            };
            let id = create(app, tenant, into, new, log).await?;
            Ok(json_response(StatusCode::OK, &json!({ "id": id.as_str() })))
        }
        ChatsRoute::Export(chat) => {
            let read = async {
                tokio::join!(
                    limit,
                    store.turns(tenant, &chat),
                    store.chat_prompt(tenant, &chat),
                    store.chat_summary(tenant, &chat),
                    store.chat_usage(tenant, &chat),
                )
            };
            let (allowed, turns, prompt, summary, usage) = log.redis(read).await;
            allowed?;
            let summary = summary?.ok_or_else(|| chat_not_found(&chat))?;
            let turns = turns?;
            let stored: Vec<Value> = turns
                .iter()
                .map(|turn| serde_json::to_value(turn).map_err(|_| ApiError::Internal))
                .collect::<Result<_, _>>()?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "object": EXPORT_OBJECT,
                    "id": chat.as_str(),
                    "title": summary.title,
                    "system": prompt?,
                    "messages": transcript(&turns),
                    "turns": stored,
                    "usage": usage?,
                    "created_at": summary.created_at,
                    "updated_at": summary.updated_ms / 1000,
                }),
            ))
        }
        ChatsRoute::Import => {
            let imported = import_of(request, app.max_body_bytes)?;
            check_size(app, &imported.turns)?;
            log.redis(limit).await?;
            let new = NewChat {
                prompt: imported.system.as_deref(),
                title: imported.title.as_deref(),
                turns: &imported.turns,
            };
            let id = create(app, tenant, imported.into, new, log).await?;
            Ok(json_response(StatusCode::OK, &json!({ "id": id.as_str() })))
        }
    }
}

/// Makes the chat `into` (or one of a fresh id) holding `new`: 400 `chat_exists` when a
/// chat of that id exists.
async fn create(
    app: &App,
    tenant: &Tenant,
    into: Option<ChatId>,
    new: NewChat<'_>,
    log: &mut RequestLog,
) -> Result<ChatId, ApiError> {
    let id = match into {
        Some(id) => id,
        None => fresh_id()?,
    };
    if log.redis(app.store.create_chat(tenant, &id, new)).await? {
        return Ok(id);
    }
    // A fresh id has 96 random bits: only a named one is ever taken.
    Err(ApiError::BadParam {
        code: "chat_exists",
        param: "into",
        message: format!(
            "a chat named '{}' exists; name another, or leave `into` out",
            id.as_str()
        ),
    })
}

fn fresh_id() -> Result<ChatId, ApiError> {
    ChatId::parse_decoded(&format!("chat-{:024x}", fastrand::u128(..) >> 32))
        .map_err(|_| ApiError::Internal)
}

fn chat_not_found(chat: &ChatId) -> ApiError {
    ApiError::Missing {
        code: "chat_not_found",
        param: None,
        message: format!("there is no chat '{}'", chat.as_str()),
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        code: "invalid_value",
        param,
        message: message.into(),
    }
}

/// A chat as `GET /chats` lists it.
fn listed(chat: &ChatSummary) -> Value {
    json!({
        "id": chat.id.as_str(),
        "title": chat.title,
        "created_at": chat.created_at,
        "updated_at": chat.updated_ms / 1000,
        "messages": chat.messages,
    })
}

/// A cursor as `next` gives it and `after` takes it: `<milliseconds>.<chat id>`.
fn cursor_text(cursor: &ChatCursor) -> String {
    format!("{}.{}", cursor.updated_ms, cursor.id.as_str())
}

fn parse_cursor(text: &str) -> Option<ChatCursor> {
    let (ms, id) = text.split_once('.')?;
    Some(ChatCursor {
        updated_ms: ms.parse().ok()?,
        id: ChatId::parse_decoded(id).ok()?,
    })
}

/// `?limit=` (1 to 100, default 20) and `?after=` (a `next` of an earlier page).
fn list_query(request: &Request) -> Result<(Option<ChatCursor>, usize), ApiError> {
    let limit = match query_values(request, "limit").next() {
        None => 20,
        Some(limit) => match limit.parse::<usize>() {
            Ok(limit @ 1..=100) => limit,
            _ => return Err(invalid("limit", "`limit` must be an integer from 1 to 100")),
        },
    };
    let after = match query_values(request, "after").next() {
        None => None,
        Some(after) => Some(parse_cursor(&after).ok_or_else(|| {
            invalid(
                "after",
                "`after` must be the `next` of an earlier page of GET /chats",
            )
        })?),
    };
    Ok((after, limit))
}

/// `{"title": string}`: 1 to 200 characters, not only spaces, on one line.
fn title_of(request: &Request, limit: usize) -> Result<String, ApiError> {
    let mut body = json_object(request.body(), limit)?;
    let title = match body.remove("title") {
        Some(Value::String(title)) => title,
        _ => return Err(invalid("title", "`title` is required: a string")),
    };
    only(&body, "`title`")?;
    let chars = title.chars().count();
    if title.trim().is_empty() || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(invalid(
            "title",
            format!(
                "`title` must be 1 to {MAX_TITLE_CHARS} characters on one line, not only spaces"
            ),
        ));
    }
    Ok(title)
}

/// Refuses fields a route does not take.
fn only(body: &Map<String, Value>, takes: &str) -> Result<(), ApiError> {
    match body.keys().next() {
        None => Ok(()),
        Some(unknown) => Err(ApiError::bad_request(
            "unknown_field",
            format!("unknown field `{unknown}`; this route takes {takes}"),
        )),
    }
}

/// `into`: the new chat's id, when the body names one.
fn into_of(body: &mut Map<String, Value>) -> Result<Option<ChatId>, ApiError> {
    match body.remove("into") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => ChatId::parse_decoded(&id).map(Some).map_err(|_| {
            invalid(
                "into",
                "`into` must be a chat id: 1 to 128 characters of A-Z a-z 0-9 . _ : @ -",
            )
        }),
        Some(_) => Err(invalid("into", "`into` must be a chat id (a string)")),
    }
}

/// `/fork`'s body, which may be empty: `{"into"?: chat id, "index"?: integer}`.
fn fork_of(request: &Request, limit: usize) -> Result<(Option<ChatId>, Option<usize>), ApiError> {
    let mut body = if request.body().iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        json_object(request.body(), limit)?
    };
    let into = into_of(&mut body)?;
    let index = match body.remove("index") {
        None | Some(Value::Null) => None,
        Some(index) => Some(
            whole_number(&index)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .ok_or_else(|| invalid_index("`index` must be an integer from 0".to_owned()))?,
        ),
    };
    only(&body, "`into` and `index`")?;
    Ok((into, index))
}

fn invalid_index(message: String) -> ApiError {
    ApiError::BadParam {
        code: "invalid_index",
        param: "index",
        message,
    }
}

/// The turns that hold the transcript's messages up to and including position `index`
/// (all of them without one): a turn cut after one of its questions keeps those questions,
/// unanswered.
fn cut_at(mut turns: Vec<Turn>, index: Option<usize>) -> Result<Vec<Turn>, ApiError> {
    let Some(index) = index else {
        return Ok(turns);
    };
    let mut position = 0;
    for at in 0..turns.len() {
        let questions = turns[at].asked.len();
        if index < position + questions {
            let kept = turns[at].asked[..=index - position].to_vec();
            turns.truncate(at);
            turns.push(Turn::unanswered(Turn::new_id(), kept));
            return Ok(turns);
        }
        position += questions;
        if turns[at].has_reply() {
            if index == position {
                turns.truncate(at + 1);
                return Ok(turns);
            }
            position += 1;
        }
    }
    Err(invalid_index(format!(
        "the chat has {position} messages; there is no message {index}"
    )))
}

/// A chat to import.
struct Imported {
    into: Option<ChatId>,
    title: Option<String>,
    system: Option<String>,
    turns: Vec<Turn>,
}

/// An export document, under the id `into` names, else its own `id`, else a fresh one. Its
/// `turns` are restored exactly; a document with only `messages` (written by hand, or by
/// another tool) has its turns made from them.
fn import_of(request: &Request, limit: usize) -> Result<Imported, ApiError> {
    let mut body = json_object(request.body(), limit)?;
    // The document's own id is checked even when `into` names another.
    let own = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(ChatId::parse_decoded(id).map_err(|_| invalid("id", "`id` must be a chat id"))?)
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
    if let (Some(_), Some(Value::Array(messages))) = (&turns, &messages) {
        turns_of(messages.clone())?;
    }
    let turns = match (turns, messages) {
        (Some(Value::Array(turns)), _) => turns
            .into_iter()
            .enumerate()
            .map(|(index, turn)| {
                let turn: Turn = serde_json::from_value(turn).map_err(|e| {
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
    // What an export writes besides, and the import does not read back: the chat's usage
    // and times are this deployment's own.
    for ignored in ["object", "id", "usage", "created_at", "updated_at"] {
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
                    _ => Vec::new(),
                };
                if urls.is_empty() {
                    if let Some(Value::String(url)) = message.remove("url") {
                        urls.push(url);
                    }
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
fn check_size(app: &App, turns: &[Turn]) -> Result<(), ApiError> {
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
    use super::*;

    fn turn(q: &str, a: &str) -> Turn {
        Turn::question(Some(Turn::new_id()), q.to_owned(), None, a.to_owned())
    }

    #[test]
    fn a_fork_cut_after_a_question_keeps_it_unanswered() {
        let turns = vec![turn("one", "1"), turn("two", "2")];
        assert_eq!(cut_at(turns.clone(), None).unwrap().len(), 2);
        let cut = cut_at(turns.clone(), Some(1)).unwrap();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].assistant, "1");
        let cut = cut_at(turns.clone(), Some(2)).unwrap();
        assert_eq!(cut.len(), 2);
        assert!(!cut[1].has_reply());
        assert_eq!(transcript(&cut).len(), 3);
        let error = cut_at(turns, Some(4)).unwrap_err();
        assert_eq!(error.code(), "invalid_index");
    }

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

    #[test]
    fn a_cursor_reads_back_as_written() {
        let cursor = ChatCursor {
            updated_ms: 1_796_000_000_123,
            id: ChatId::parse_decoded("my.chat@x").unwrap(),
        };
        assert_eq!(parse_cursor(&cursor_text(&cursor)), Some(cursor));
        assert_eq!(parse_cursor("nope"), None);
        assert_eq!(parse_cursor("12.{bad}"), None);
    }
}
