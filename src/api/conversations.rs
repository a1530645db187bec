//! OpenAI's Conversations API over the proxy's chats (one door: its routes share the
//! conversation's lookup and its items' listing): a conversation is a chat (the seed's
//! `/trip/chat` is the conversation `trip`), and its items are its turns' items, in order,
//! whichever door made them. `POST /v1/conversations` makes a new one; its id, and its items,
//! are then read, added to and deleted here, and its turns made with `/v1/responses`.

use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::body::json_object;
use crate::chat::{
    check_items, listed_items, referenced_ids, turn_parts, ChatId, Exchange, StoredResponse,
    Tenant, Turn,
};
use crate::error::ApiError;
use crate::http::{json_response, ResponseBody};
use crate::paging::{self, Paging};
use crate::request_log::RequestLog;
use crate::store::{ConversationInfo, ListOrder, StoreError, TurnExtras};
use crate::turn::Rewrite;

/// The most items one request adds, as at OpenAI.
const MAX_ITEMS: usize = 20;

fn not_found(id: &str) -> ApiError {
    ApiError::Missing {
        code: "conversation_not_found",
        param: None,
        message: format!("Conversation with id '{id}' not found."),
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        code: "invalid_value",
        param,
        message: message.into(),
    }
}

/// A conversation's id is a chat's id; any other names no conversation.
fn chat_of(id: &str) -> Result<ChatId, ApiError> {
    ChatId::parse_decoded(id).map_err(|_| not_found(id))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The conversation object.
fn conversation(chat: &ChatId, info: &ConversationInfo) -> Value {
    let metadata = info
        .metadata
        .as_deref()
        .and_then(|json| serde_json::from_str::<Value>(json).ok())
        .unwrap_or_else(|| json!({}));
    json!({"id": chat.as_str(), "object": "conversation", "created_at": info.created_at,
           "metadata": metadata})
}

/// A body that may be empty: `{}` then.
fn optional_object(request: &Request, limit: usize) -> Result<Map<String, Value>, ApiError> {
    if request.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    json_object(request.body(), limit)
}

/// `metadata`: an object of at most 16 string values, as OpenAI takes it; its JSON text.
fn metadata_of(body: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    match body.remove("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(metadata))
            if metadata.len() <= 16 && metadata.values().all(Value::is_string) =>
        {
            Ok(Some(Value::Object(metadata).to_string()))
        }
        Some(_) => Err(invalid(
            "metadata",
            "`metadata` must be an object of at most 16 string values",
        )),
    }
}

/// `items`: 1 to 20 items, each an object with a `type` or a `role`.
fn items_of(body: &mut Map<String, Value>, required: bool) -> Result<Vec<Value>, ApiError> {
    let items = match body.remove("items") {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        // A new conversation may start empty.
        Some(Value::Array(items)) if items.is_empty() && !required => return Ok(items),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_ITEMS => items,
        _ => {
            return Err(invalid(
                "items",
                format!("`items` must be an array of 1 to {MAX_ITEMS} items"),
            ))
        }
    };
    // Checked as `/v1/responses` checks its input: an item upstream would refuse, kept,
    // would make every later turn of the conversation fail.
    check_items(&items)
        .map_err(|(index, why)| invalid("items", format!("items[{index}] {why}")))?;
    if let Err(index) = referenced_ids(&items) {
        return Err(invalid(
            "items",
            format!("items[{index}] is an item_reference without an `id` (a string)"),
        ));
    }
    Ok(items)
}

/// Refuses what is left of a body once its fields are read, as OpenAI does.
fn nothing_else(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.keys().next() {
        None => Ok(()),
        Some(name) => Err(ApiError::bad_request(
            "unknown_parameter",
            format!("Unrecognized request argument supplied: {name}"),
        )),
    }
}

/// `POST /v1/conversations`: a new conversation, with its first items and metadata.
pub async fn create(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let limit = app.guard.rate_limit(tenant, request);
    let mut body = optional_object(request, app.max_body_bytes)?;
    let metadata = metadata_of(&mut body)?;
    let items = items_of(&mut body, false)?;
    nothing_else(&body)?;
    log.redis(limit).await?;
    let chat = ChatId::parse_decoded(&format!("conv_{:032x}", fastrand::u128(..)))
        .map_err(|_| ApiError::Internal)?;
    let info = ConversationInfo {
        created_at: now(),
        metadata,
    };
    // Checked (and their references filled in) before anything is written: a new
    // conversation's items may answer only the calls made among them.
    let turn = match items.is_empty() {
        true => None,
        false => Some(app.turns.checked_items(tenant, &[], items, log).await?.turn),
    };
    let store = &app.store;
    let write = async {
        store
            .set_conversation(tenant, &chat, info.created_at, info.metadata.as_deref())
            .await?;
        if let Some(turn) = &turn {
            // A new conversation of a fresh id: nothing to check.
            store
                .append_turn(tenant, &chat, turn, TurnExtras::default())
                .await?;
        }
        Ok::<(), StoreError>(())
    };
    log.redis(write).await?;
    Ok(json_response(StatusCode::OK, &conversation(&chat, &info)))
}

/// `GET /v1/conversations`: the caller's conversations (every chat of theirs is one), most
/// recently made first, in OpenAI's list shape; beyond OpenAI's API, which lists none.
/// `after` is a conversation id of an earlier page (`last_id`): the list is by birth, which
/// no write changes, so the place it names stays where it was (a list by last write would
/// move it to the top with its next turn, and the next page would repeat the first).
/// `order` is `desc` only.
pub async fn list(
    app: &App,
    tenant: &Tenant,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let paging = Paging::of(request)?;
    if !paging.descending {
        return Err(invalid(
            "order",
            "conversations are listed by when they were made, newest first: `order` is `desc`",
        ));
    }
    let limit = app.guard.rate_limit(tenant, request);
    let store = &app.store;
    let after = match &paging.after {
        Some(after) => Some(chat_of(after).map_err(|_| unknown_after(after))?),
        None => None,
    };
    // The cursor's place is read with the rate limit: the page's read needs it.
    let read = async {
        tokio::join!(limit, async {
            match &after {
                Some(chat) => store.place(tenant, chat, ListOrder::Made).await,
                None => Ok(None),
            }
        })
    };
    let (allowed, cursor) = log.redis(read).await;
    allowed?;
    let cursor = match (cursor?, &paging.after) {
        (Some(place), _) => Some(place),
        (None, Some(after)) => return Err(unknown_after(after)),
        (None, None) => None,
    };
    let page = log
        .redis(store.list_chats(tenant, ListOrder::Made, cursor.as_ref(), paging.limit))
        .await?;
    let data: Vec<Value> = page
        .chats
        .iter()
        .map(|chat| {
            let info = chat.conversation.clone().unwrap_or(ConversationInfo {
                created_at: chat.created_at,
                metadata: None,
            });
            conversation(&chat.id, &info)
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &paging::list(data, page.next.is_some()),
    ))
}

fn unknown_after(after: &str) -> ApiError {
    ApiError::Missing {
        code: "conversation_not_found",
        param: Some("after"),
        message: format!("`after` names no conversation of yours: '{after}'"),
    }
}

/// The conversation `id`, read with the caller's rate limit: 404 when it does not exist.
async fn existing(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<(ChatId, ConversationInfo), ApiError> {
    let chat = chat_of(id)?;
    let limit = app.guard.rate_limit(tenant, request);
    let read = async { tokio::join!(limit, app.store.conversation(tenant, &chat)) };
    let (allowed, info) = log.redis(read).await;
    allowed?;
    let info = info?.ok_or_else(|| not_found(id))?;
    Ok((chat, info))
}

/// `GET /v1/conversations/{id}`.
pub async fn get(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let (chat, info) = existing(app, tenant, id, request, log).await?;
    Ok(json_response(StatusCode::OK, &conversation(&chat, &info)))
}

/// `POST /v1/conversations/{id}`: sets its metadata.
pub async fn update(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let mut body = json_object(request.body(), app.max_body_bytes)?;
    let metadata =
        metadata_of(&mut body)?.ok_or_else(|| invalid("metadata", "`metadata` is required"))?;
    nothing_else(&body)?;
    let (chat, mut info) = existing(app, tenant, id, request, log).await?;
    let created_at = if info.created_at == 0 {
        now()
    } else {
        info.created_at
    };
    log.redis(
        app.store
            .set_conversation(tenant, &chat, created_at, Some(&metadata)),
    )
    .await?;
    info.created_at = created_at;
    info.metadata = Some(metadata);
    Ok(json_response(StatusCode::OK, &conversation(&chat, &info)))
}

/// `DELETE /v1/conversations/{id}`: the chat is gone, its turns, prompt and usage with it.
pub async fn delete(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let (chat, _) = existing(app, tenant, id, request, log).await?;
    log.redis(app.store.delete_chat(tenant, &chat)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": chat.as_str(), "object": "conversation.deleted", "deleted": true}),
    ))
}

/// The conversation's turns, read with its existence and the caller's rate limit.
async fn turns(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<(ChatId, Vec<Turn>), ApiError> {
    let chat = chat_of(id)?;
    let limit = app.guard.rate_limit(tenant, request);
    let read = async {
        tokio::join!(
            limit,
            app.store.conversation(tenant, &chat),
            app.store.turns(tenant, &chat)
        )
    };
    let (allowed, info, turns) = log.redis(read).await;
    allowed?;
    info?.ok_or_else(|| not_found(id))?;
    Ok((chat, turns?))
}

/// `GET /v1/conversations/{id}/items`: every item of every turn, paged.
pub async fn items(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let paging = Paging::of(request)?;
    let (_, turns) = turns(app, tenant, id, request, log).await?;
    let items = turns.iter().flat_map(listed_items).collect();
    Ok(json_response(StatusCode::OK, &paging.page(items)))
}

/// `POST /v1/conversations/{id}/items`: items added by the caller, as a turn of their own.
pub async fn add_items(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let mut body = json_object(request.body(), app.max_body_bytes)?;
    let items = items_of(&mut body, true)?;
    nothing_else(&body)?;
    let chat = chat_of(id)?;
    let limit = app.guard.rate_limit(tenant, request);
    let exists = async {
        let (allowed, info) = tokio::join!(limit, app.store.conversation(tenant, &chat));
        allowed?;
        info?.ok_or_else(|| not_found(id)).map(drop)
    };
    let turn = app
        .turns
        .add_items(tenant, &chat, items, exists, log)
        .await?;
    let added = listed_items(&turn);
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": added, "first_id": added.first().map(|i| &i["id"]),
                "last_id": added.last().map(|i| &i["id"]), "has_more": false}),
    ))
}

fn item_not_found(item: &str) -> ApiError {
    ApiError::Missing {
        code: "item_not_found",
        param: None,
        message: format!("Item with id '{item}' not found."),
    }
}

/// `GET /v1/conversations/{id}/items/{item_id}`.
pub async fn item(
    app: &App,
    tenant: &Tenant,
    id: &str,
    item: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let (_, turns) = turns(app, tenant, id, request, log).await?;
    let found = turns
        .iter()
        .flat_map(listed_items)
        .find(|listed| listed["id"] == item)
        .ok_or_else(|| item_not_found(item))?;
    Ok(json_response(StatusCode::OK, &found))
}

/// `DELETE /v1/conversations/{id}/items/{item_id}`: the item is gone from its turn (the
/// turn is rewritten with the item's place left empty, so no other item's id changes; a
/// turn left with no item goes); answers the conversation.
pub async fn delete_item(
    app: &App,
    tenant: &Tenant,
    id: &str,
    item: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let chat = chat_of(id)?;
    let limit = app.guard.rate_limit(tenant, request);
    let mut info = None;
    let exists = async {
        let (allowed, found) = tokio::join!(limit, app.store.conversation(tenant, &chat));
        allowed?;
        info = Some(found?.ok_or_else(|| not_found(id))?);
        Ok(())
    };
    // Against the turn as read: two items of one turn deleted at once are both gone.
    app.turns
        .rewrite(tenant, &chat, exists, log, |read| {
            let (turn, with) = read
                .history
                .iter()
                .find_map(|turn| without_item(turn, item).map(|with| (turn, with)))
                .ok_or_else(|| item_not_found(item))?;
            Ok(Rewrite {
                turn: turn.id.clone().unwrap_or_default(),
                with,
                answer: (),
            })
        })
        .await?;
    let info = info.unwrap_or_default();
    Ok(json_response(StatusCode::OK, &conversation(&chat, &info)))
}

/// `turn` without the item `item`, when it holds it: `Some(None)` when nothing is left.
fn without_item(turn: &Turn, item: &str) -> Option<Option<Turn>> {
    let listed = listed_items(turn);
    let (input, output) = turn_parts(turn);
    // Listed items are the places that hold one, input first: find the place of this one.
    let mut places = input
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, _)| (false, i))
        .chain(
            output
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(i, _)| (true, i)),
        );
    let at = listed.iter().position(|listed| listed["id"] == item)?;
    let (in_output, place) = places.nth(at)?;
    let (mut input, mut output) = (input, output);
    if in_output {
        output[place] = Value::Null;
    } else {
        input[place] = Value::Null;
    }
    if input.iter().chain(&output).all(Value::is_null) {
        return Some(None);
    }
    let response = match (&turn.exchange, output.iter().all(Value::is_null)) {
        (_, true) => StoredResponse::none(),
        (Some(exchange), false) => exchange.response.with_output(output),
        (None, false) => StoredResponse::from_value(&json!({"output": output})),
    };
    let exchange = Exchange { input, response };
    Some(Some(Turn {
        id: turn.id.clone(),
        asked: exchange.asked(),
        assistant: exchange.reply_text(),
        calls: exchange.calls(),
        exchange: Some(Box::new(exchange)),
        tokens: None,
    }))
}
