//! Recording a turn while it is made, so that other connections can follow it: a live seed
//! turn (`api::seed`) and a background response's run (`api::responses`) both write what
//! they stream here, in batches, as a run's events (`store/runs.rs`).
//!
//! A live turn's recorder runs beside the turn, fed through a channel that never waits:
//! the turn's sink hands each event over and goes on, so recording stays off the path of
//! the first delta, and a turn nobody follows still waits only for its own two round trips.
//! The recorder keeps the turn (`begin_live`) as soon as it starts, writes what came at
//! most every [`BATCH_EVERY`] (each write also telling whether a stop was asked for), asks
//! every [`SILENT_CHECK`] while nothing comes, and ends the run once the turn has been
//! stored, so that when a chat names no live turn its transcript holds the turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{Ending, NewLive, RunStatus, Store};

/// How often a recorder writes what was streamed (and learns of a stop), at most.
pub const BATCH_EVERY: Duration = Duration::from_millis(100);

/// How often a recorder asks whether to stop while nothing is streamed (a model thinking).
pub const SILENT_CHECK: Duration = Duration::from_millis(500);

/// How often a follower reads what the run recorded since.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// How long a live turn waits for its first event before it is kept all the same.
const KEEP_AFTER: Duration = Duration::from_millis(50);

/// How long past its turn's deadline a live turn may take to be stored and ended, before a
/// reader takes it as failed (its invocation died).
const END_MARGIN: Duration = Duration::from_secs(15);

/// Which run the events are recorded to.
#[derive(Clone)]
pub struct RunAt {
    pub store: Arc<dyn Store>,
    pub tenant: Tenant,
    pub chat: ChatId,
    pub id: String,
}

/// A run's events in batches, each written once, in its place.
pub struct Batches {
    run: RunAt,
    /// Events not written yet, each a JSON value's text.
    pending: Vec<String>,
    /// A batch whose write failed, to send again in its place.
    unsent: Option<String>,
    /// The next batch's place.
    next: u64,
    flushed_at: Instant,
}

impl Batches {
    pub fn new(run: RunAt) -> Batches {
        Batches {
            run,
            pending: Vec::new(),
            unsent: None,
            next: 0,
            flushed_at: Instant::now(),
        }
    }

    /// Keeps an event (a JSON value's text) for the next batch.
    pub fn push(&mut self, event: String) {
        self.pending.push(event);
    }

    /// Whether a batch is due: events wait and the last write was [`BATCH_EVERY`] ago.
    pub fn due(&self) -> bool {
        !self.pending.is_empty() && self.flushed_at.elapsed() >= BATCH_EVERY
    }

    /// When the next write is due: a batch's, or a question whether to stop.
    fn next_write(&self) -> Instant {
        let wait = match self.pending.is_empty() {
            true => SILENT_CHECK,
            false => BATCH_EVERY,
        };
        self.flushed_at + wait
    }

    /// Writes the events not written yet (with nothing new, only asks), and answers
    /// whether a stop was asked for. A batch whose write failed is sent again first, as it
    /// was and in its place: the write may have been made with only its answer lost, and a
    /// batch is recorded once by its place.
    pub async fn flush(&mut self) -> bool {
        self.flushed_at = Instant::now();
        if let Some(unsent) = self.unsent.take() {
            match self.write(unsent).await {
                Some(stop) if self.pending.is_empty() => return stop,
                Some(_) => {}
                None => return false,
            }
        }
        let batch = match self.pending.is_empty() {
            true => String::new(),
            false => format!("[{}]", std::mem::take(&mut self.pending).join(",")),
        };
        self.write(batch).await.unwrap_or(false)
    }

    /// Writes `batch` in its place: whether a stop was asked for, or `None` (and kept to
    /// send again) when it could not be written.
    async fn write(&mut self, batch: String) -> Option<bool> {
        let RunAt {
            store,
            tenant,
            chat,
            id,
        } = &self.run;
        match store
            .record_events(tenant, chat, id, self.next, &batch)
            .await
        {
            Ok(stop) => {
                self.next += u64::from(!batch.is_empty());
                Some(stop)
            }
            Err(error) => {
                tracing::warn!(%error, "a run's events could not be recorded; sending them again with the next");
                self.unsent = Some(batch).filter(|batch| !batch.is_empty());
                None
            }
        }
    }
}

/// What a live turn's sink hands its recorder.
enum Note {
    Event(String),
    End(RunStatus, String),
}

/// A live turn's side of its recorder: hands events over without waiting, and tells
/// whether a stop was asked for.
pub struct LiveFeed {
    notes: mpsc::UnboundedSender<Note>,
    stop: Arc<AtomicBool>,
    id: String,
}

impl LiveFeed {
    /// The live turn's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records an event: a JSON value's text.
    pub fn record(&self, event: String) {
        // The recorder has gone only if its task ended early; the turn goes on without it.
        let _ = self.notes.send(Note::Event(event));
    }

    /// Ends the run (once the turn has been stored) with how it ended and the answer that
    /// says so, as a follower is to be given it.
    pub fn end(&self, status: RunStatus, answer: String) {
        let _ = self.notes.send(Note::End(status, answer));
    }

    /// Whether someone asked the turn to stop.
    pub fn stop_asked(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Records a live turn: run it beside the turn, within what the invocation awaits.
pub struct Recorder {
    batches: Batches,
    asked: String,
    deadline_ms: u64,
    notes: mpsc::UnboundedReceiver<Note>,
    stop: Arc<AtomicBool>,
}

/// A live turn of `run.chat` asking `asked` (a JSON object's text, as the front door
/// describes it), which must end by `deadline`: its feed and its recorder.
pub fn start(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    chat: &ChatId,
    asked: String,
    deadline: Instant,
) -> (LiveFeed, Recorder) {
    let id = crate::chat::Turn::new_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let left = deadline.saturating_duration_since(Instant::now()) + END_MARGIN;
    let run = RunAt {
        store,
        tenant: tenant.clone(),
        chat: chat.clone(),
        id: id.clone(),
    };
    let feed = LiveFeed {
        notes: tx,
        stop: stop.clone(),
        id,
    };
    let recorder = Recorder {
        batches: Batches::new(run),
        asked,
        deadline_ms: now_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX / 2),
        notes: rx,
        stop,
    };
    (feed, recorder)
}

impl Recorder {
    /// Keeps the turn, records what it streams, and ends it when its feed says so.
    pub async fn run(mut self) {
        let RunAt {
            store,
            tenant,
            chat,
            id,
        } = self.batches.run.clone();
        // Off the first delta's path: the recorder runs in the task that streams the turn
        // (or beside it, on Lambda's one thread), so it waits for the turn's first event (or
        // a moment of silence: a model thinking), and lets that event reach its client
        // before it does any work of its own.
        let first = tokio::time::timeout(KEEP_AFTER, self.notes.recv()).await;
        tokio::task::yield_now().await;
        let live = NewLive {
            id: &id,
            asked: &self.asked,
            deadline_ms: self.deadline_ms,
        };
        if let Err(error) = store.begin_live(&tenant, &chat, live).await {
            // Nobody can follow this turn; it goes on, and is stored, as any other.
            tracing::warn!(%error, "a live turn could not be kept; it is not followable");
            while self.notes.recv().await.is_some() {}
            return;
        }
        let mut first = first.ok();
        let (status, answer) = loop {
            let next = match first.take() {
                Some(note) => Ok(note),
                None => {
                    let due = self.batches.next_write();
                    tokio::time::timeout_at(due, self.notes.recv()).await
                }
            };
            match next {
                Ok(Some(Note::Event(event))) => {
                    self.batches.push(event);
                    if self.batches.due() {
                        self.flush().await;
                    }
                }
                Ok(Some(Note::End(status, answer))) => break (status, answer),
                Ok(None) => {
                    let failed = r#"{"error":{"message":"the turn ended without an answer","type":"api_error","param":null,"code":"internal_error"}}"#;
                    break (RunStatus::Failed, failed.to_owned());
                }
                Err(_due) => self.flush().await,
            }
        };
        self.flush().await;
        let ended = store
            .end_run(&tenant, &chat, &id, Ending::Runner(&id), status, &answer)
            .await;
        match ended {
            Ok(true) => {}
            // Deleted with its chat meanwhile, or expired.
            Ok(false) => tracing::info!("a live turn's record was gone at its end"),
            Err(error) => {
                tracing::warn!(%error, "a live turn's end could not be kept; it reads failed past its deadline")
            }
        }
    }

    async fn flush(&mut self) {
        // The event that made a batch due goes to its client first.
        tokio::task::yield_now().await;
        if self.batches.flush().await {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Reads a run's events as they are recorded, from any instance: the batches it has not
/// read yet and the run's state, in one round trip.
pub struct Follower {
    run: RunAt,
    /// The next batch to read.
    next: u64,
    /// The run was seen ended by an earlier read.
    ended_before: bool,
}

/// What one read of a followed run found.
pub struct Polled {
    /// The events recorded since the last read, in order.
    pub events: Vec<serde_json::Value>,
    /// The run as it stands now (`None`: its record is gone, deleted or expired).
    pub state: Option<crate::store::RunState>,
    /// The run had ended already at the read before this one, so this read holds every
    /// batch it wrote: a run's last batch may be written just before it ends, between the
    /// read of its events and the read of its state.
    pub settled: bool,
}

impl Follower {
    pub fn new(run: RunAt) -> Follower {
        Follower {
            run,
            next: 0,
            ended_before: false,
        }
    }

    /// Reads what the run recorded since the last read, and how it stands.
    pub async fn read(&mut self) -> Result<Polled, crate::store::StoreError> {
        let RunAt {
            store,
            tenant,
            chat,
            id,
        } = &self.run;
        let (batches, state) = tokio::join!(
            store.run_events(tenant, chat, id, self.next),
            store.run_state(tenant, chat, id)
        );
        let (batches, state) = (batches?, state?);
        let mut events = Vec::new();
        for batch in &batches {
            self.next += 1;
            if let Ok(serde_json::Value::Array(batch)) = serde_json::from_str(batch) {
                events.extend(batch);
            }
        }
        let state = state.map(|state| state.as_of(now_ms()));
        let settled = self.ended_before;
        self.ended_before = state.as_ref().is_some_and(|state| state.status.ended());
        Ok(Polled {
            events,
            state,
            settled,
        })
    }
}
