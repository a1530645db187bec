//! Stored responses: `GET` and `DELETE /v1/responses/{id}`, and its input items,
//! `GET /v1/responses/{id}/input_items`, in OpenAI's list shape with its paging.

use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde_json::{json, Value};

use super::hide_encrypted_reasoning;
use crate::app::App;
use crate::chat::{listed_items, parse_response_id, ChatId, Tenant, Turn};
use crate::error::ApiError;
use crate::http::{json_response, ResponseBody};
use crate::paging::{query_flag, query_position, query_values, Paging};
use crate::request_log::RequestLog;
use crate::store::{RunState, RunStatus};
use crate::turn::Rewrite;

pub(super) fn not_found(id: &str) -> ApiError {
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
    let turn = response_in(turns?, turn_id).ok_or_else(|| not_found(id))?;
    Ok((turn, chat))
}

/// What a response id names: its stored turn and its background run, each if there is
/// one, read side by side with the caller's rate limit (one round trip).
pub(super) struct Named {
    pub turn_id: String,
    pub chat: ChatId,
    pub turn: Option<Turn>,
    pub run: Option<RunState>,
}

pub(super) async fn named(
    app: &App,
    tenant: &Tenant,
    id: &str,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Named, ApiError> {
    let (turn_id, chat) = parse_response_id(id).ok_or_else(|| not_found(id))?;
    let limit = app.guard.rate_limit(tenant, request);
    let read = async {
        tokio::join!(
            limit,
            app.store.turns(tenant, &chat),
            app.store.run_state(tenant, &chat, turn_id)
        )
    };
    let (allowed, turns, run) = log.redis(read).await;
    allowed?;
    Ok(Named {
        turn: response_in(turns?, turn_id),
        run: run?,
        turn_id: turn_id.to_owned(),
        chat,
    })
}

/// The response `turn_id` among a chat's turns.
fn response_in(turns: Vec<Turn>, turn_id: &str) -> Option<Turn> {
    turns
        .into_iter()
        .find(|turn| turn.id.as_deref() == Some(turn_id) && is_response(turn))
}

/// Whether a stored turn is a response: a Responses turn that upstream answered (not the
/// items a caller added to a conversation by hand, nor a turn of the other doors).
fn is_response(turn: &Turn) -> bool {
    turn.exchange
        .as_ref()
        .is_some_and(|exchange| !exchange.response.is_null())
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
    // `stream` and `starting_after` as the document says, whichever way it is read.
    let stream = query_flag(request, "stream")?;
    let after = query_position(request, "starting_after", "an event's sequence_number")?;
    if stream {
        return super::follow::resume(app, tenant, id, after, request, log).await;
    }
    // A background response is its run until its turn is stored.
    let Named {
        turn_id,
        chat,
        mut turn,
        run,
    } = named(app, tenant, id, request, log).await?;
    // The two were read side by side: a run that ended as its turn was stored in between
    // reads completed with no turn, so its chat is read once more.
    if turn.is_none()
        && run
            .as_ref()
            .is_some_and(|run| run.status == RunStatus::Completed)
    {
        let turns = log.redis(app.store.turns(tenant, &chat)).await?;
        turn = response_in(turns, &turn_id);
    }
    let mut response = match (turn, run) {
        (Some(turn), _) => turn
            .exchange
            .map_or(Value::Null, |exchange| exchange.response.to_value()),
        (None, Some(run)) => super::background::answer_of(run).ok_or_else(|| not_found(id))?,
        (None, None) => return Err(not_found(id)),
    };
    if !wants_encrypted(request) {
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
    app.turns
        .rewrite(tenant, &chat, limit, log, |read| {
            read.history
                .iter()
                .find(|turn| turn.id.as_deref() == Some(turn_id) && is_response(turn))
                .ok_or_else(|| not_found(id))?;
            Ok(Rewrite {
                turn: turn_id.to_owned(),
                with: None,
                answer: (),
            })
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "object": "response", "deleted": true}),
    ))
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
    Ok(json_response(StatusCode::OK, &paging.page(input_of(&turn))))
}

/// A response's input items, as listed (its output items are the response's own).
fn input_of(turn: &Turn) -> Vec<Value> {
    let inputs = turn
        .exchange
        .as_ref()
        .map_or(0, |e| e.input.iter().filter(|item| !item.is_null()).count());
    listed_items(turn).into_iter().take(inputs).collect()
}

/// Whether a read asked for the reasoning's encrypted content (`include=`).
pub(super) fn wants_encrypted(request: &Request) -> bool {
    query_values(request, "include").any(|v| v == crate::turn::ENCRYPTED_REASONING)
}
