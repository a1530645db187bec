//! Read-only links to a chat: `POST /<chat_id>/share` makes a snapshot of the chat as it is
//! (its title and transcript; its prompt only when asked) behind a token of 256 random
//! bits, shown once, which `GET /shared/<token>` answers to anyone holding it, with no
//! caller key, until it expires (`SHARE_TTL_SECONDS`, at most `SHARE_MAX_TTL_SECONDS`) or
//! its owner revokes it (`DELETE /<chat_id>/shares/<id or token>`); `GET
//! /<chat_id>/shares` lists them by id (the token's SHA-256: the token is kept nowhere).
//! Nothing of the owner is in the snapshot: not its key, its name, its other chats, nor
//! the chat's id.

use base64::Engine;
use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};

use super::{chat_not_found, invalid, only};
use crate::app::App;
use crate::body::{json_object, whole_number};
use crate::chat::{transcript, ChatId, Tenant};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::http::{empty_object, json_response, ResponseBody};
use crate::request_log::RequestLog;
use crate::routes::is_share_token;
use crate::store::{link_id, ShareLink, Shared, MAX_LINKS_PER_CHAT};

/// What `GET /shared/<token>` answers.
const SHARED_OBJECT: &str = "chat.shared";

/// `POST /<chat_id>/share`: `{"expires_in": seconds, "include_system": bool}`, both
/// optional.
pub(super) async fn share(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    request: &Request,
    first: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let (expires_in, include_system) = share_of(app, request)?;
    let store = &app.store;
    let read = async {
        tokio::join!(
            first,
            store.turns(tenant, chat),
            store.chat_prompt(tenant, chat),
            store.chat_summary(tenant, chat),
        )
    };
    let (allowed, turns, prompt, summary) = log.redis(read).await;
    allowed?;
    let summary = summary?.ok_or_else(|| chat_not_found(chat))?;
    let (turns, prompt) = (turns?, prompt?);
    // A link would keep what the chat says past the chat's own short life.
    if summary.temporary {
        return Err(ApiError::Conflict {
            code: "temporary_chat",
            message: "a temporary chat cannot be shared: a link would keep it past its expiry"
                .to_owned(),
        });
    }
    if turns.is_empty() {
        return Err(ApiError::Conflict {
            code: "nothing_to_share",
            message: "the chat has no messages yet: a link would show nothing".to_owned(),
        });
    }
    let created_at = now_ms() / 1000;
    let token = new_token()?;
    let link = ShareLink {
        id: link_id(&token),
        created_at,
        expires_at: created_at + expires_in,
    };
    let snapshot = json!({
        "object": SHARED_OBJECT,
        "title": summary.title,
        "system": prompt.filter(|_| include_system),
        "messages": transcript(&turns),
        "created_at": link.created_at,
        "expires_at": link.expires_at,
    });
    match log
        .redis(store.share(tenant, chat, &link, &snapshot.to_string()))
        .await?
    {
        Shared::Made => {}
        Shared::ChatGone => return Err(chat_not_found(chat)),
        Shared::TooMany => {
            return Err(ApiError::Conflict {
                code: "too_many_links",
                message: format!(
                    "the chat has {MAX_LINKS_PER_CHAT} links that have not expired; revoke \
                     one first"
                ),
            })
        }
    }
    let mut made = listed(&link);
    made["token"] = json!(token);
    made["path"] = json!(format!("/shared/{token}"));
    Ok(json_response(StatusCode::OK, &made))
}

/// `GET /<chat_id>/shares`: the chat's links that have not expired, newest first.
pub(super) async fn shares(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    first: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let store = &app.store;
    let read = async {
        tokio::join!(
            first,
            store.shares(tenant, chat),
            store.chat_summary(tenant, chat)
        )
    };
    let (allowed, links, summary) = log.redis(read).await;
    allowed?;
    let links = links?;
    if links.is_empty() && summary?.is_none() {
        return Err(chat_not_found(chat));
    }
    let data: Vec<Value> = links.iter().map(listed).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

/// `DELETE /<chat_id>/shares/<link>`: the link revoked, its snapshot gone; `<link>` is its
/// id (as the list shows it) or its token.
pub(super) async fn revoke(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    link: &str,
    first: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let id = match link {
        token if is_share_token(token) => Some(link_id(token)),
        id if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(id.to_ascii_lowercase())
        }
        _ => None,
    };
    let revoked = async {
        match &id {
            Some(id) => app.store.revoke(tenant, chat, id).await.map(Some),
            None => Ok(None),
        }
    };
    let (allowed, revoked) = log.redis(async { tokio::join!(first, revoked) }).await;
    allowed?;
    match revoked? {
        Some(true) => Ok(empty_object()),
        _ => Err(share_not_found()),
    }
}

/// `GET /shared/<token>`: the snapshot, to anyone holding the token (counted against the
/// address's `RATE_LIMIT_PER_MINUTE`, as an open API's caller is). Never cached on the way:
/// a revoked link must stop answering at once.
pub async fn shared(
    app: &App,
    token: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let id = link_id(token);
    let read = async {
        tokio::join!(
            app.guard.rate_limit(&Tenant::Open, request),
            app.store.shared(&id)
        )
    };
    let (allowed, snapshot) = log.redis(read).await;
    allowed?;
    let snapshot = snapshot?.ok_or_else(share_not_found)?;
    let snapshot: Value = serde_json::from_str(&snapshot).map_err(|_| ApiError::Internal)?;
    let mut response = json_response(StatusCode::OK, &snapshot);
    response.headers_mut().insert(
        lambda_http::http::header::CACHE_CONTROL,
        lambda_http::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// A link as its owner's list shows it: by its id (its token, shown once when it is made,
/// is kept nowhere).
fn listed(link: &ShareLink) -> Value {
    json!({
        "object": "chat.share",
        "id": link.id,
        "created_at": link.created_at,
        "expires_at": link.expires_at,
    })
}

/// 256 bits from the system's secure random source, as unpadded base64url.
fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn share_not_found() -> ApiError {
    ApiError::Missing {
        code: "share_not_found",
        param: None,
        message: "there is no such link: it may have expired or been revoked".to_owned(),
    }
}

/// The body of `POST /<chat_id>/share`: how long the link lives (seconds, from 60 to
/// `SHARE_MAX_TTL_SECONDS`; `SHARE_TTL_SECONDS` when absent), and whether the snapshot
/// shows the chat's prompt (false when absent).
fn share_of(app: &App, request: &Request) -> Result<(u64, bool), ApiError> {
    let (default, max) = app.share_ttl;
    if request.body().is_empty() {
        return Ok((default, false));
    }
    let mut body = json_object(request.body(), app.max_body_bytes)?;
    let expires_in = match body.remove("expires_in") {
        None | Some(Value::Null) => default,
        Some(value) => match whole_number(&value) {
            Some(seconds) if (60..=max).contains(&seconds) => seconds,
            _ => {
                return Err(invalid(
                    "expires_in",
                    format!("`expires_in` must be a whole number of seconds from 60 to {max}"),
                ))
            }
        },
    };
    let include_system = match body.remove("include_system") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(include)) => include,
        Some(_) => {
            return Err(invalid(
                "include_system",
                "`include_system` must be true or false",
            ))
        }
    };
    only(&body, "`expires_in` and `include_system`")?;
    Ok((expires_in, include_system))
}
