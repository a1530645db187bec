//! A background response's run: the invocation Lambda starts with a [`RunEvent`] takes the
//! run (only one invocation ever does), makes the turn through the engine as a streamed turn
//! with what its queueing decided, and records what upstream streams in batches
//! (`live::Batches`: at most every 100 ms, each write also telling whether a cancellation
//! was asked for). The
//! turn is stored as any other; the run ends `completed`, `failed` or `cancelled`, with the
//! response to read when it is not a turn.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::background::{ended_object, RunEvent, RunRef, Ticket};
use super::{caller_view, hide_encrypted_reasoning, Reading};
use crate::app::App;
use crate::chat::{ChatId, Tenant, Turn};
use crate::clock::now_ms;
use crate::live::{Batches, RunAt, SILENT_CHECK};
use crate::request_log::RequestLog;
use crate::store::{Ending, RunStatus, Start};
use crate::turn::{Answered, Fixed, Opened, StreamSink};
use crate::upstream::Chunk;

/// Runs a background response in an invocation that must end by `deadline_ms` (Unix
/// milliseconds, as Lambda gives it).
pub async fn run(app: &App, event: RunEvent, deadline_ms: u64) {
    let RunRef { caller, chat, id } = event.chat_proxy_run;
    let tenant = caller.map_or(Tenant::Open, Tenant::Caller);
    let Some(chat) = ChatId::named_by_response(&chat) else {
        tracing::warn!("a run's event names no chat this proxy makes; nothing run");
        return;
    };
    // A runner of its own each time: Lambda may deliver one event twice (and keeps its
    // request id when it does), and only one delivery may make the run.
    let runner = Turn::new_id();
    let (deadline, ends_at_ms) = app.guard.run_deadline(deadline_ms);
    let started = app
        .store
        .start_run(&tenant, &chat, &id, &runner, ends_at_ms)
        .await;
    let run = Run {
        app,
        tenant: &tenant,
        chat: &chat,
        id: &id,
    };
    let state = match started {
        Ok(Start::Taken(state)) => state,
        Ok(Start::Not(state)) => {
            // Cancelled while queued, or queued past its start: nobody will make it, so
            // what its queueing claimed is freed here. (Taken by another delivery of the
            // same event: that one makes it.)
            let state = state.as_of(now_ms());
            if state.status.ended() {
                run.free_claims().await;
            }
            tracing::info!(
                status = state.status.as_str(),
                "a background run was not taken: it is not queued"
            );
            return;
        }
        Ok(Start::Missing) => {
            tracing::warn!("a background run's record is gone; nothing run");
            run.free_claims().await;
            return;
        }
        Err(error) => {
            // Left queued: it reads `failed` once its deadline passes, and its claims
            // lapse with their own.
            tracing::error!(%error, "a background run could not be taken");
            return;
        }
    };
    let (status, response) = match serde_json::from_str::<Ticket>(&state.ticket) {
        Ok(ticket) => run.make(&ticket, deadline).await,
        Err(error) => {
            tracing::error!(%error, "a background run's ticket does not read");
            let why = json!({"status": "failed", "error": {"code": "server_error",
                "message": "the background run's request could not be read"}});
            (RunStatus::Failed, why.to_string())
        }
    };
    // A turn stored freed its claims in its write; any other end frees them here.
    if status != RunStatus::Completed {
        run.free_claims().await;
    }
    let ended = app
        .store
        .end_run(
            &tenant,
            &chat,
            &id,
            Ending::Runner(&runner),
            status,
            &response,
        )
        .await;
    match ended {
        Ok(true) => tracing::info!(status = status.as_str(), "background run ended"),
        Ok(false) => {
            tracing::error!("a background run's end was refused: it was not this runner's")
        }
        Err(error) => tracing::error!(%error, "a background run's end could not be kept"),
    }
}

/// One run being made.
struct Run<'a> {
    app: &'a App,
    tenant: &'a Tenant,
    chat: &'a ChatId,
    id: &'a str,
}

impl Run<'_> {
    /// Frees what the run's queueing claimed (the chain's newest turn) when the run will not
    /// store its turn.
    async fn free_claims(&self) {
        self.app
            .turns
            .free_queued(self.tenant, self.chat, self.id)
            .await;
    }

    /// Makes the turn; answers how the run ended and the response to keep with it (none
    /// for a stored turn: that is read from its chat, and a deletion of it holds).
    async fn make(&self, ticket: &Ticket, deadline: Instant) -> (RunStatus, String) {
        let failed = |why: &str| {
            let response = ended_object(&ticket.response, RunStatus::Failed, Some(why));
            (RunStatus::Failed, response.to_string())
        };
        let mut reading = match Reading::of(self.app, ticket.body.as_bytes()) {
            Ok(reading) => reading,
            Err(error) => return failed(&error.to_string()),
        };
        let reveal = reading.asked.wants_encrypted_reasoning;
        let fixed = Fixed {
            turn_id: ticket.turn.clone(),
            chain: ticket.chain.as_deref().and_then(ChatId::named_by_response),
        };
        let ask = reading.ask(
            self.tenant,
            deadline,
            ticket.ip.as_deref(),
            None,
            Some(fixed),
        );
        let mut log = RequestLog::default();
        // The rate limit was counted when it was queued.
        let opened = self.app.turns.open(ask, async { Ok(()) }, &mut log).await;
        let open = match opened {
            Ok(Opened::Streaming(open)) => open,
            Ok(Opened::Replayed(_)) => return failed("the run was answered before"),
            Err(error) => {
                error.log();
                return failed(&error.to_string());
            }
        };
        let mut own = reading.fields.clone();
        own.insert("id".to_owned(), json!(open.answer_id().unwrap_or_default()));
        let at = RunAt {
            store: self.app.store.clone(),
            tenant: self.tenant.clone(),
            chat: self.chat.clone(),
            id: self.id.to_owned(),
        };
        let mut sink = RunSink {
            run: self,
            own,
            reveal,
            batches: Batches::new(at),
            stop: false,
            output: Vec::new(),
            text: String::new(),
            latest: ticket.response.clone(),
        };
        let finished = open.finish(&mut sink).await;
        sink.stop |= sink.batches.flush().await;
        match finished {
            Ok(answered) if answered.stored => (RunStatus::Completed, String::new()),
            // Paid for but not kept (its conversation was deleted meanwhile): kept with
            // the run, for its caller to read.
            Ok(answered) => (RunStatus::Completed, full_view(&answered)),
            Err(_) if sink.stop => (RunStatus::Cancelled, sink.cancelled().to_string()),
            // Upstream's own account of its failure, when it gave one.
            Err(_) if sink.latest["status"] == "failed" => {
                (RunStatus::Failed, sink.latest.to_string())
            }
            Err(error) => {
                error.log();
                failed(&error.to_string())
            }
        }
    }
}

/// A response with everything it holds (the reasoning's encrypted content too): a read
/// hides what its request did not ask for.
fn full_view(answered: &Answered) -> String {
    caller_view(answered, true)
}

/// Where a run's streamed events go: recorded in batches, with what a cancelled response
/// keeps of them.
struct RunSink<'a> {
    run: &'a Run<'a>,
    /// The fields the proxy sets on the response in every event (its id among them).
    own: Map<String, Value>,
    reveal: bool,
    /// What it streamed, recorded for its followers.
    batches: Batches,
    /// A cancellation was asked for: the turn stops at this chunk.
    stop: bool,
    /// The output items upstream finished, and the text of the message it is writing.
    output: Vec<Value>,
    text: String,
    /// The newest response upstream described (`response.created`, `.in_progress`).
    latest: Value,
}

impl RunSink<'_> {
    /// The response as it stood when the run stopped: what upstream finished, and the
    /// message it was writing, cut where it was.
    fn cancelled(&self) -> Value {
        let mut output = self.output.clone();
        if !self.text.is_empty() {
            output.push(json!({
                "type": "message",
                "id": format!("msg_{}", self.run.id),
                "status": "incomplete",
                "role": "assistant",
                "content": [{"type": "output_text", "text": self.text, "annotations": []}],
            }));
        }
        let mut response = self.latest.clone();
        response["status"] = json!(RunStatus::Cancelled.as_str());
        response["output"] = Value::Array(output);
        response["usage"] = Value::Null;
        response
    }
}

impl StreamSink for RunSink<'_> {
    async fn chunk(&mut self, chunk: &Chunk) {
        let Ok(mut event) = serde_json::from_str::<Value>(chunk.raw.get()) else {
            return;
        };
        if let Some(Value::Object(response)) = event.get_mut("response") {
            for (field, value) in &self.own {
                response.insert(field.clone(), value.clone());
            }
            self.latest = Value::Object(response.clone());
        }
        match event["type"].as_str() {
            Some("response.output_text.delta") => {
                self.text
                    .push_str(event["delta"].as_str().unwrap_or_default());
            }
            Some("response.output_item.done") => {
                self.output.push(event["item"].clone());
                self.text.clear();
            }
            _ => {}
        }
        if !self.reveal {
            hide_encrypted_reasoning(&mut event);
        }
        self.batches.push(event.to_string());
        if self.batches.due() {
            self.stop |= self.batches.flush().await;
        }
    }

    async fn keep_alive(&mut self) {
        self.stop |= self.batches.flush().await;
    }

    fn kept_answer(&self, answered: &Answered) -> String {
        caller_view(answered, self.reveal)
    }

    fn stop_asked(&self) -> bool {
        self.stop
    }

    fn wake_every(&self) -> Option<Duration> {
        Some(SILENT_CHECK)
    }
}
