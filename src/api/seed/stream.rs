//! A seed turn's answer as server-sent events: each `delta` at its position (its `id:`),
//! then `done` or `error`; the turn recorded beside it as it goes (`crate::live`), for
//! other connections to follow and stop (`live.rs`).

use bytes::Bytes;
use lambda_http::Response;
use serde_json::json;
use tokio::time::Instant;

use super::{kept_reply, to_json, Reply};
use crate::app::App;
use crate::chat::{ChatId, Tenant};
use crate::http::{event_stream, sse_event, sse_event_at, FrameSender, ResponseBody, KEEP_ALIVE};
use crate::live::{LiveFeed, SILENT_CHECK};
use crate::store::RunStatus;
use crate::turn::{Answered, OpenTurn, StreamSink};
use crate::upstream::Chunk;

/// Streams an opened turn to its client on a task of its own, with its recorder beside it:
/// both within what the invocation awaits. `live` is what the turn asks, as followers are
/// told; `deadline` the turn's.
pub(super) fn answer(
    app: &App,
    tenant: &Tenant,
    chat: &ChatId,
    open: OpenTurn,
    live: String,
    deadline: Instant,
) -> Response<ResponseBody> {
    let (frames, body) = ResponseBody::channel(app.stream_stall);
    let (feed, recorder) = crate::live::start(app.store.clone(), tenant, chat, live, deadline);
    let mut sink = SeedEvents {
        frames,
        live: feed,
        position: 0,
        quiet: Instant::now(),
        keep_alive: app.stream_stall / 2,
    };
    let turn = async move {
        let (status, name, data) = match open.finish(&mut sink).await {
            Ok(answered) => {
                let reply = Reply {
                    stored: (!answered.stored).then_some(false),
                    ..Reply::of(&answered)
                };
                let status = match answered.stopped {
                    true => RunStatus::Cancelled,
                    false => RunStatus::Completed,
                };
                (status, "done", to_json(&reply))
            }
            Err(error) => {
                error.log();
                (RunStatus::Failed, "error", error.body())
            }
        };
        // Stored (or not) by now: followers are told how it ended as the client is.
        sink.live
            .end(status, String::from_utf8_lossy(&data).into_owned());
        sink.frames.send(sse_event(Some(name), &data)).await;
    };
    app.spawn(async move {
        tokio::join!(turn, recorder.run());
    });
    event_stream(body)
}

/// The seed's events for a streamed turn's chunks, each `delta` at its position (its
/// `id:`), and handed to the turn's recorder for its followers.
struct SeedEvents {
    frames: FrameSender,
    live: LiveFeed,
    /// The deltas sent so far.
    position: u64,
    /// When the client was last sent something.
    quiet: Instant,
    keep_alive: std::time::Duration,
}

impl StreamSink for SeedEvents {
    async fn chunk(&mut self, chunk: &Chunk) {
        if chunk.delta.is_empty() {
            return;
        }
        self.position += 1;
        let data = to_json(&json!({ "content": chunk.delta }));
        self.frames
            .send(sse_event_at("delta", self.position, &data))
            .await;
        // After the client's frame: recording never goes before it.
        self.live.record(to_json_text(&chunk.delta));
        self.quiet = Instant::now();
    }

    async fn keep_alive(&mut self) {
        // Woken to look for a Stop more often than a keep-alive is due.
        if self.quiet.elapsed() >= self.keep_alive {
            self.frames.send(Bytes::from_static(KEEP_ALIVE)).await;
            self.quiet = Instant::now();
        }
    }

    fn wake_every(&self) -> Option<std::time::Duration> {
        Some(SILENT_CHECK)
    }

    fn kept_answer(&self, answered: &Answered) -> String {
        kept_reply(answered)
    }

    fn stop_asked(&self) -> bool {
        self.live.stop_asked()
    }

    fn keeps_when_stopped(&self) -> bool {
        true
    }
}

/// A string as JSON text.
fn to_json_text(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}
