//! Stored responses: `GET` and `DELETE /v1/responses/{id}`, and its input items,
//! `GET /v1/responses/{id}/input_items`, in OpenAI's list shape with its paging.

use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde_json::{json, Value};

use super::hide_encrypted_reasoning;
use crate::app::App;
use crate::chat::{parse_response_id, ChatId, Tenant, Turn};
use crate::error::ApiError;
use crate::http::{json_response, ResponseBody};
use crate::request_log::RequestLog;

fn not_found(id: &str) -> ApiError {
    ApiError::Missing {
        code: "response_not_found",
        param: None,
        message: format!("Response with id '{id}' not found."),
    }
}

/// The stored turn a response id names, read with the caller's rate limit.
async fn stored_turn(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<(Turn, ChatId), ApiError> {
    let (turn_id, chat) = parse_response_id(id).ok_or_else(|| not_found(id))?;
    let limit = app.guard.rate_limit(tenant, request);
    let read = async { tokio::join!(limit, app.store.turns(tenant, &chat)) };
    let (allowed, turns) = log.redis(read).await;
    allowed?;
    let turn = turns?
        .into_iter()
        .find(|turn| turn.id.as_deref() == Some(turn_id) && turn.exchange.is_some())
        .ok_or_else(|| not_found(id))?;
    Ok((turn, chat))
}

/// The query's values of `name`, percent-decoded (`include[]` and `include` alike).
fn query_values<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = String> + 'a {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = key.strip_suffix("[]").unwrap_or(key);
            let key = key.strip_suffix("%5B%5D").unwrap_or(key);
            (key == name).then(|| {
                let value = value.replace('+', " ");
                percent_encoding::percent_decode_str(&value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
}

/// `GET /v1/responses/{id}`: the response as it was answered (the reasoning's encrypted
/// content with `include=reasoning.encrypted_content`).
pub async fn get(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let (turn, _) = stored_turn(app, tenant, id, request, log).await?;
    let mut response = turn
        .exchange
        .map(|exchange| exchange.response)
        .unwrap_or(Value::Null);
    let reveal = query_values(request, "include").any(|v| v == crate::turn::ENCRYPTED_REASONING);
    if !reveal {
        hide_encrypted_reasoning(&mut response);
    }
    Ok(json_response(StatusCode::OK, &response))
}

/// `DELETE /v1/responses/{id}`: the response is gone from its chain or conversation; a
/// chain that continued from it before keeps its own copy of it.
pub async fn delete(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let (turn_id, chat) = parse_response_id(id).ok_or_else(|| not_found(id))?;
    let limit = app.guard.rate_limit(tenant, request);
    let delete = async { tokio::join!(limit, app.store.delete_turn(tenant, &chat, turn_id)) };
    let (allowed, deleted) = log.redis(delete).await;
    allowed?;
    if !deleted? {
        return Err(not_found(id));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "object": "response", "deleted": true}),
    ))
}

/// A list's paging, as OpenAI's list routes take it.
pub(super) struct Paging {
    pub limit: usize,
    pub descending: bool,
    pub after: Option<String>,
}

impl Paging {
    /// `limit` (1 to 100, default 20), `order` (`asc` or `desc`, default `desc`), `after`.
    pub fn of(request: &Request) -> Result<Paging, ApiError> {
        let invalid = |param: &'static str, message: &str| ApiError::BadParam {
            code: "invalid_value",
            param,
            message: message.to_owned(),
        };
        let limit = match query_values(request, "limit").next() {
            None => 20,
            Some(limit) => match limit.parse::<usize>() {
                Ok(limit @ 1..=100) => limit,
                _ => return Err(invalid("limit", "`limit` must be an integer from 1 to 100")),
            },
        };
        let descending = match query_values(request, "order").next().as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => return Err(invalid("order", "`order` must be `asc` or `desc`")),
        };
        Ok(Paging {
            limit,
            descending,
            after: query_values(request, "after").next(),
        })
    }

    /// One page of `items` (each with an `id`, oldest first), in OpenAI's list shape.
    pub fn page(&self, mut items: Vec<Value>) -> Value {
        if self.descending {
            items.reverse();
        }
        let start = match &self.after {
            Some(after) => items
                .iter()
                .position(|item| item["id"] == after.as_str())
                .map_or(items.len(), |at| at + 1),
            None => 0,
        };
        let rest = items.len().saturating_sub(start);
        let data: Vec<Value> = items.into_iter().skip(start).take(self.limit).collect();
        json!({
            "object": "list",
            "data": data,
            "first_id": data.first().map_or(Value::Null, |item| item["id"].clone()),
            "last_id": data.last().map_or(Value::Null, |item| item["id"].clone()),
            "has_more": rest > self.limit,
        })
    }
}

/// A turn's input items, each with an id: its own when it came with one, else one made
/// from the turn's id and its place, the same on every read.
pub(super) fn identified_input(turn: &Turn) -> Vec<Value> {
    let turn_id = turn.id.as_deref().unwrap_or("");
    let input = turn
        .exchange
        .as_ref()
        .map_or(&[][..], |e| e.input.as_slice());
    input
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let mut item = item.clone();
            if let Value::Object(fields) = &mut item {
                if !fields.contains_key("type") {
                    fields.insert("type".to_owned(), json!("message"));
                }
                if !fields.contains_key("id") {
                    let prefix = match fields["type"].as_str() {
                        Some("message") => "msg",
                        Some("function_call_output") => "fco",
                        _ => "item",
                    };
                    fields.insert(
                        "id".to_owned(),
                        json!(format!("{prefix}_{turn_id}{index:04x}")),
                    );
                }
            }
            item
        })
        .collect()
}

/// `GET /v1/responses/{id}/input_items`: the items the response was asked with.
pub async fn input_items(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let paging = Paging::of(request)?;
    let (turn, _) = stored_turn(app, tenant, id, request, log).await?;
    Ok(json_response(
        StatusCode::OK,
        &paging.page(identified_input(&turn)),
    ))
}
