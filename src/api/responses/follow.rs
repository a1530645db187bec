//! Following a background run's events, from any instance: what it recorded after a given
//! `sequence_number`, then what it records next, live, until it ends. A streamed background
//! response (`background: true, stream: true`) is answered this way from its first event,
//! and `GET /v1/responses/{id}?stream=true&starting_after=N` resumes one where a client
//! left it: every later event once, in order, and the same end.
//!
//! The run writes its events in batches (`run.rs`); the follower reads the batches it has
//! not seen and the run's state in one round trip, every [`POLL_EVERY`] (`live::Follower`).
//! A run that has ended is read once more, so the batch it wrote just before it ended is
//! not missed; one
//! that ended without upstream's own last event (it failed, or its invocation died) ends
//! with a `response.failed` event of the proxy's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use lambda_http::{Request, Response};

use super::background::answer_of;
use super::stored::{named, not_found, wants_encrypted};
use crate::app::App;
use crate::chat::{ChatId, Tenant};
use crate::error::ApiError;
use crate::http::{event_stream, ResponseBody};
use crate::http::{sse_event, FrameSender, KEEP_ALIVE};
use crate::live::{Follower, RunAt, POLL_EVERY};
use crate::request_log::RequestLog;
use crate::store::{RunStatus, Store};

/// Which run to follow, and from where.
pub(super) struct Following {
    pub tenant: Tenant,
    pub chat: ChatId,
    pub id: String,
    /// Send only the events after this `sequence_number` (all of them when `None`).
    pub after: Option<u64>,
    /// Hide the reasoning's encrypted content (the reader did not ask for it).
    pub hide_reasoning: bool,
}

/// Streams the run's events to `frames` until the run ends or the client goes.
/// `stall` is how long a stream may wait for its client (a keep-alive goes every half of
/// it); past `deadline` (the invocation's) it ends with an error event that says to resume.
pub(super) async fn follow(
    store: Arc<dyn Store>,
    stall: Duration,
    deadline: tokio::time::Instant,
    run: Following,
    mut frames: FrameSender,
) {
    let Following {
        tenant,
        chat,
        id,
        after,
        hide_reasoning,
    } = run;
    let mut follower = Follower::new(RunAt {
        store,
        tenant,
        chat,
        id,
    });
    let mut last = after;
    // Upstream's own last event was sent (in any pass).
    let mut sent_end = false;
    let mut quiet = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= deadline {
            // This invocation is ending: the client resumes from where it got to.
            let event = json!({"type": "error", "code": "stream_timeout",
                "message": "this stream reached its time limit; resume it with \
                    GET /v1/responses/{id}?stream=true&starting_after=<its last sequence_number>",
                "param": null, "sequence_number": last.map_or(0, |n| n + 1)});
            frames
                .send(sse_event(Some("error"), event.to_string().as_bytes()))
                .await;
            return;
        }
        let polled = match follower.read().await {
            Ok(polled) => polled,
            Err(error) => {
                tracing::warn!(%error, "a background run's events could not be read");
                let event = json!({"type": "error", "code": "storage_unavailable",
                    "message": "the response's events could not be read; resume it later",
                    "param": null, "sequence_number": last.map_or(0, |n| n + 1)});
                frames
                    .send(sse_event(Some("error"), event.to_string().as_bytes()))
                    .await;
                return;
            }
        };
        for mut event in polled.events {
            let sequence = event["sequence_number"].as_u64();
            if matches!((sequence, last), (Some(n), Some(seen)) if n <= seen) {
                continue;
            }
            last = sequence.or(last);
            let kind = event["type"].as_str().unwrap_or("message").to_owned();
            sent_end |= matches!(
                kind.as_str(),
                "response.completed" | "response.failed" | "response.incomplete"
            );
            if hide_reasoning {
                super::hide_encrypted_reasoning(&mut event);
            }
            frames
                .send(sse_event(Some(&kind), event.to_string().as_bytes()))
                .await;
            quiet = tokio::time::Instant::now();
        }
        if frames.client_gone() {
            return;
        }
        let Some(state) = polled.state else {
            return;
        };
        let ended = state.status.ended();
        if ended && (polled.settled || sent_end) {
            if !sent_end && state.status == RunStatus::Failed {
                if let Some(response) = answer_of(state) {
                    let event = json!({"type": "response.failed", "response": response,
                        "sequence_number": last.map_or(0, |n| n + 1)});
                    frames
                        .send(sse_event(
                            Some("response.failed"),
                            event.to_string().as_bytes(),
                        ))
                        .await;
                }
            }
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

/// An event stream that follows a run, on a task of its own: the response streams while
/// it follows, until the run ends or the invocation's time does.
pub(super) fn streamed(
    app: &App,
    request: &Request,
    following: Following,
) -> Response<ResponseBody> {
    let (frames, body) = ResponseBody::channel(app.stream_stall);
    let deadline = app.guard.deadline(request, true);
    let store = app.store.clone();
    app.spawn(follow(store, app.stream_stall, deadline, following, frames));
    event_stream(body)
}

/// `GET /v1/responses/{id}?stream=true[&starting_after=N]`: a background response's events
/// after `N` (all of them without it), then live until it ends.
pub async fn resume(
    app: &App,
    tenant: &Tenant,
    id: &str,
    after: Option<u64>,
    request: &Request,
    log: &mut RequestLog,
) -> Result<Response<ResponseBody>, ApiError> {
    let not_found = || not_found(id);
    let named = named(app, tenant, id, request, log).await?;
    let stored = named.turn.is_some();
    match named.run {
        // A completed run whose turn is gone was deleted: its events are not shown again.
        Some(run) if run.status == RunStatus::Completed && run.response.is_none() && !stored => {
            return Err(not_found())
        }
        Some(_) => {}
        None if stored => {
            return Err(ApiError::BadParam {
                code: "invalid_request",
                param: "stream",
                message: "only a response created with `background: true` can be streamed \
                          again: read it whole without `stream`"
                    .to_owned(),
            })
        }
        None => return Err(not_found()),
    }
    let following = Following {
        tenant: tenant.clone(),
        chat: named.chat,
        id: named.turn_id,
        after,
        hide_reasoning: !wants_encrypted(request),
    };
    Ok(streamed(app, request, following))
}
