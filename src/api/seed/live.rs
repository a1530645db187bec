//! A seed turn while it is made, from another connection: `GET /<chat_id>/live` answers how
//! far it is (what it asks, its reply so far, the position of its newest `delta`), or, with
//! `stream=true` (or `Accept: text/event-stream`), follows it: every `delta` after
//! `after=<position>`, each at its position (`id:`), then live, then `done` or `error` as
//! the turn's own stream ends. `POST /<chat_id>/stop` stops it: it ends at its next chunk
//! (or within half a second of silence), and what it wrote so far is kept as the turn.
//!
//! Both name the chat, not the turn: a chat has one live turn at a time to a reader (the
//! newest started). With none, they answer 404 `no_live_turn`: the transcript then holds
//! the turn (a turn stops being live only once it has been stored, or has failed).

use std::time::Duration;

use bytes::Bytes;
use lambda_http::http::StatusCode;
use lambda_http::{Request, Response};
use serde_json::{json, Value};

use crate::app::App;
use crate::chat::{ChatId, Tenant};
use crate::error::ApiError;
use crate::http::{
    accepts_event_stream, event_stream, json_response, sse_event, sse_event_at, FrameSender,
    ResponseBody, KEEP_ALIVE,
};
use crate::live::{Follower, RunAt, POLL_EVERY};
use crate::paging::{query_flag, query_position};
use crate::request_log::RequestLog;
use crate::store::{RunState, RunStatus};

fn no_live_turn() -> ApiError {
    ApiError::Missing {
        code: "no_live_turn",
        param: None,
        message: "no turn of this chat is being made: its transcript \
                  (GET /<chat_id>/chat) holds every turn that ended"
            .to_owned(),
    }
}

/// The chat's live turn, read with the caller's rate limit counted.
async fn live_run(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    log: &mut RequestLog,
) -> Result<RunAt, ApiError> {
    let id = log.redis(app.store.live_turn(tenant, chat)).await?;
    let id = id.ok_or_else(no_live_turn)?;
    Ok(RunAt {
        store: app.store.clone(),
        tenant: tenant.clone(),
        chat: chat.clone(),
        id,
    })
}

/// `GET /<chat_id>/live`: the live turn so far, or followed.
pub(super) async fn follow(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let stream = query_flag(request, "stream")? || accepts_event_stream(request.headers());
    let after = query_position(request, "after", "a delta's position")?.unwrap_or(0);
    let run = live_run(app, tenant, chat, log).await?;
    let id = run.id.clone();
    if stream {
        let (frames, body) = ResponseBody::channel(app.stream_stall);
        let deadline = app.guard.deadline(request, true);
        let follower = Follower::new(run);
        app.spawn(send_events(
            follower,
            after,
            app.stream_stall,
            deadline,
            frames,
        ));
        return Ok(event_stream(body));
    }
    let polled = log.redis(Follower::new(run).read()).await?;
    let state = polled.state.ok_or_else(no_live_turn)?;
    let content: String = polled.events.iter().filter_map(Value::as_str).collect();
    let asked = serde_json::from_str::<Value>(&state.ticket).unwrap_or(Value::Null);
    let body = json!({
        "id": id,
        "status": state.status.as_str(),
        "asked": asked,
        "content": content,
        "position": polled.events.len(),
        "stop_asked": state.cancel_asked,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// Sends the turn's deltas after `after`, then how it ended, until it ends, the client
/// goes, or this invocation's time does.
async fn send_events(
    mut follower: Follower,
    after: u64,
    stall: Duration,
    deadline: tokio::time::Instant,
    mut frames: FrameSender,
) {
    let mut position = 0u64;
    let mut quiet = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= deadline {
            let message = format!(
                "this stream reached its time limit; follow it again with \
                 GET /<chat_id>/live?stream=true&after={}",
                position.max(after)
            );
            frames.send(error_event("stream_timeout", &message)).await;
            return;
        }
        let polled = match follower.read().await {
            Ok(polled) => polled,
            Err(error) => {
                tracing::warn!(%error, "a live turn's events could not be read");
                let error = ApiError::from(error);
                frames.send(sse_event(Some("error"), &error.body())).await;
                return;
            }
        };
        for delta in polled.events {
            position += 1;
            let Some(delta) = delta.as_str().filter(|_| position > after) else {
                continue;
            };
            let data = json!({ "content": delta }).to_string();
            frames
                .send(sse_event_at("delta", position, data.as_bytes()))
                .await;
            quiet = tokio::time::Instant::now();
        }
        if frames.client_gone() {
            return;
        }
        let Some(state) = polled.state else {
            // Deleted with its chat meanwhile.
            frames
                .send(sse_event(Some("error"), &no_live_turn().body()))
                .await;
            return;
        };
        let ended = state.status.ended();
        if ended && polled.settled {
            frames.send(last_event(state)).await;
            return;
        }
        if quiet.elapsed() >= stall / 2 {
            frames.send(Bytes::from_static(KEEP_ALIVE)).await;
            quiet = tokio::time::Instant::now();
        }
        // Ended: read again at once, for a batch written just before the end.
        if !ended {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// How a live turn ended, as its own stream said it: `done` with the turn's answer, or
/// `error`.
fn last_event(state: RunState) -> Bytes {
    match (state.status, state.response) {
        (RunStatus::Completed | RunStatus::Cancelled, Some(done)) => {
            sse_event(Some("done"), done.as_bytes())
        }
        (_, Some(error)) => sse_event(Some("error"), error.as_bytes()),
        // Its invocation ended before the turn did.
        (_, None) => error_event(
            "turn_failed",
            "the turn ended before its answer did; nothing was stored",
        ),
    }
}

/// An `error` event of the proxy's own, shaped as every error it answers.
fn error_event(code: &str, message: &str) -> Bytes {
    let error = json!({"error": {"message": message, "type": "api_error", "param": null,
        "code": code}});
    sse_event(Some("error"), error.to_string().as_bytes())
}

/// `POST /<chat_id>/stop`: asks the chat's live turn to stop. It ends at its next chunk,
/// keeping what it wrote so far as the turn, and its streams end with that as `done`.
pub(super) async fn stop(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let run = live_run(app, tenant, chat, log).await?;
    let stopped = app.store.cancel_run(tenant, chat, &run.id, "").await;
    let state = log.redis(std::future::ready(stopped)).await?;
    let state = state.ok_or_else(no_live_turn)?;
    let body = json!({
        "id": run.id,
        "status": state.status.as_str(),
        "stop_asked": state.cancel_asked || state.status.ended(),
    });
    Ok(json_response(StatusCode::OK, &body))
}
