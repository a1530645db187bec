//! A caller's chats as a chat app keeps them: the list (`GET /chats`), titles, deletion,
//! forks, and export and import of a whole chat. Seed-style: JSON in, JSON out, and every
//! caller sees only its own chats (the store works inside the caller's namespace). The
//! import's document, read and checked, is `document.rs`. One room: one door, whose routes
//! share the caller's namespace and the chat's summary.

mod document;
mod search;
mod share;

pub use self::share::shared;

use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::body::{json_object, whole_number};
use crate::chat::{places, ChatId, Place, Tenant, Turn, MAX_TITLE_CHARS};
use crate::error::ApiError;
use crate::http::{empty_object, json_response, ResponseBody};
use crate::paging::query_values;
use crate::request_log::RequestLog;
use crate::routes::ChatsRoute;
use crate::store::{ChatCursor, ChatSummary, ChatUsage, ListOrder, NewChat};

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
            if let Some(q) = query_values(request, "q").next() {
                let query = search::Query::parse(&q)?;
                let page = search::Page {
                    after,
                    limit: count,
                    max_chat_bytes: app.chat_caps.1,
                };
                let page = search::search(&**store, tenant, &query, page, limit, log).await?;
                return Ok(json_response(StatusCode::OK, &page));
            }
            let read = async {
                tokio::join!(
                    limit,
                    store.list_chats(tenant, ListOrder::Written, after.as_ref(), count)
                )
            };
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
            let summary = summary?.ok_or_else(|| chat_not_found(&chat))?;
            let turns = cut_at(turns, index)?;
            // A fork is a new chat: what the original spent stays the original's. A
            // temporary chat's fork is temporary too.
            let new = NewChat {
                prompt: prompt.as_deref(),
                title: None,
                turns: &turns,
                usage: ChatUsage::default(),
                temporary: summary.temporary,
            };
            let id = create(app, tenant, into, new, log).await?;
            Ok(json_response(StatusCode::OK, &json!({ "id": id.as_str() })))
        }
        ChatsRoute::Export(chat) => {
            let read = async {
                tokio::join!(
                    limit,
                    store.turn_context(tenant, &chat, None),
                    store.chat_summary(tenant, &chat),
                    store.chat_usage(tenant, &chat),
                )
            };
            let (allowed, context, summary, usage) = log.redis(read).await;
            allowed?;
            let summary = summary?.ok_or_else(|| chat_not_found(&chat))?;
            let context = context?;
            let stored: Vec<Value> = context
                .history
                .iter()
                .map(|turn| serde_json::to_value(turn).map_err(|_| ApiError::Internal))
                .collect::<Result<_, _>>()?;
            // Each text once (`turns` exactly, as stored; the transcript is `GET
            // /<chat_id>/chat`), so a chat within MAX_CHAT_BYTES always imports back.
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "object": EXPORT_OBJECT,
                    "id": chat.as_str(),
                    "title": summary.title,
                    "system": context.chat_prompt,
                    "turns": stored,
                    // What stands for the turns before the context window, when the chat
                    // was compacted (`COMPACT_AT_TOKENS`); an import does not restore it.
                    "compacted": context.compacted,
                    "usage": usage?,
                    "created_at": summary.created_at,
                    "updated_at": summary.updated_ms / 1000,
                }),
            ))
        }
        ChatsRoute::Share(chat) => share::share(app, tenant, &chat, request, limit, log).await,
        ChatsRoute::Shares(chat) => share::shares(app, tenant, &chat, limit, log).await,
        ChatsRoute::Revoke(chat, token) => {
            share::revoke(app, tenant, &chat, &token, limit, log).await
        }
        ChatsRoute::Temporary => {
            let system = temporary_of(request, app.max_body_bytes)?;
            log.redis(limit).await?;
            let new = NewChat {
                prompt: system.as_deref(),
                title: None,
                turns: &[],
                usage: ChatUsage::default(),
                temporary: true,
            };
            let id = create(app, tenant, None, new, log).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "id": id.as_str(),
                    "temporary": true,
                    "expires_after_seconds": app.temporary_ttl.as_secs(),
                }),
            ))
        }
        ChatsRoute::Import => {
            let imported = document::import_of(request, import_limit(app))?;
            document::check_size(app, &imported.turns)?;
            log.redis(limit).await?;
            let new = NewChat {
                prompt: imported.system.as_deref(),
                title: imported.title.as_deref(),
                turns: &imported.turns,
                usage: imported.usage,
                temporary: false,
            };
            let id = create(app, tenant, imported.into, new, log).await?;
            Ok(json_response(StatusCode::OK, &json!({ "id": id.as_str() })))
        }
    }
}

/// The largest import a chat may be: a whole chat (`MAX_CHAT_BYTES` of turns) and what a
/// request may set beside it (a prompt and a title, each within `MAX_BODY_BYTES`).
pub fn import_limit(app: &App) -> usize {
    app.max_body_bytes + app.chat_caps.1
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
        None => fresh_id(if new.temporary { "temp" } else { "chat" })?,
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

fn fresh_id(kind: &str) -> Result<ChatId, ApiError> {
    ChatId::parse_decoded(&format!("{kind}-{:024x}", fastrand::u128(..) >> 32))
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
    format!("{}.{}", cursor.at_ms, cursor.id.as_str())
}

fn parse_cursor(text: &str) -> Option<ChatCursor> {
    let (ms, id) = text.split_once('.')?;
    Some(ChatCursor {
        at_ms: ms.parse().ok()?,
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
        Some(Value::String(id)) => ChatId::parse_decoded(&id)
            .map(Some)
            .map_err(|_| invalid_chat_id("into")),
        Some(_) => Err(invalid("into", "`into` must be a chat id (a string)")),
    }
}

/// `POST /chats/temporary`'s body, which may be empty: `{"system"?: string}`, the chat's
/// own prompt.
fn temporary_of(request: &Request, limit: usize) -> Result<Option<String>, ApiError> {
    if request.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut body = json_object(request.body(), limit)?;
    let system = match body.remove("system") {
        None | Some(Value::Null) => None,
        Some(Value::String(system)) => Some(system),
        Some(_) => return Err(invalid("system", "`system` must be a string")),
    };
    only(&body, "`system`")?;
    Ok(system)
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

/// A chat id in a body that is not one: the code every route gives a bad chat id.
fn invalid_chat_id(param: &'static str) -> ApiError {
    ApiError::BadParam {
        code: "invalid_chat_id",
        param,
        message: format!(
            "`{param}` must be a chat id: 1 to 128 characters of A-Z a-z 0-9 . _ : @ -"
        ),
    }
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
    let place = places(&turns).nth(index);
    match place {
        Some((at, Place::Asked(question))) => {
            let kept = turns[at].asked[..=question].to_vec();
            turns.truncate(at);
            turns.push(Turn::unanswered(Turn::new_id(), kept));
            Ok(turns)
        }
        Some((at, Place::Reply)) => {
            turns.truncate(at + 1);
            Ok(turns)
        }
        None => Err(invalid_index(format!(
            "the chat has {} messages; there is no message {index}",
            places(&turns).count()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::transcript;

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
    fn a_cursor_reads_back_as_written() {
        let cursor = ChatCursor {
            at_ms: 1_796_000_000_123,
            id: ChatId::parse_decoded("my.chat@x").unwrap(),
        };
        assert_eq!(parse_cursor(&cursor_text(&cursor)), Some(cursor));
        assert_eq!(parse_cursor("nope"), None);
        assert_eq!(parse_cursor("12.{bad}"), None);
    }
}
