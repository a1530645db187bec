//! Background runs (`background: true` on `POST /v1/responses`): a response answered at
//! once as `queued`, then made by another invocation of the function. What the store keeps
//! of a run while it lives: its status and its deadline, the ticket the run is made from
//! (what the request asked, sealed), a cancellation asked for, the events it streamed so
//! far (sealed, a batch each), and the response it ended with.
//!
//! A run moves one way: `queued`, then `in_progress` (one invocation takes it, and only one:
//! a second delivery of its event finds it taken), then `completed`, `failed`, `incomplete`
//! or `cancelled`. A cancellation of a queued run ends it at once; of a run in progress, it
//! is asked for, and the run ends itself at its next batch. A run whose invocation died is
//! not written `failed` by anyone: whoever reads it after its deadline sees it so
//! ([`RunState::as_of`]). The record lives [`RUN_SECONDS`]; a completed run's answer is a
//! turn of its chat and lives with it.
//!
//! A streamed seed turn is kept the same way while it is made, as a *live* run
//! ([`Runs::begin_live`]): in progress from its start, taken by itself (its id is its
//! runner), recording what it streams, and named as its chat's live turn until it ends (or
//! its deadline passes), so that another connection can find it, follow it from any
//! position and ask it to stop. Its record lives [`LIVE_SECONDS`] from its start, and
//! [`ENDED_LIVE_SECONDS`] once it has ended (its answer is a turn of its chat by then).

use super::StoreError;
use crate::chat::{ChatId, Tenant};

/// How long a run's record lives after it was queued: a day, as an answered
/// `Idempotency-Key` does.
pub const RUN_SECONDS: u64 = 24 * 3600;

/// How long a live turn's record lives from its start: an hour, past any invocation's
/// fifteen minutes, so that a page reloaded late still reads how the turn ended.
pub const LIVE_SECONDS: u64 = 3600;

/// How long a live turn's record lives once it has ended: long enough for its followers to
/// read how it ended.
pub const ENDED_LIVE_SECONDS: u64 = 60;

/// A live turn as it starts: a streamed turn that other connections may follow.
#[derive(Debug, Clone, Copy)]
pub struct NewLive<'a> {
    /// The live turn's id, which is also its runner's.
    pub id: &'a str,
    /// What it asks, as the front door wrote it (kept sealed, as a run's ticket).
    pub asked: &'a str,
    /// When it must have ended (Unix milliseconds): past it, it has failed, and the chat
    /// names it no longer.
    pub deadline_ms: u64,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    Incomplete,
    Cancelled,
}

impl RunStatus {
    /// As OpenAI names it, and as the store keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Incomplete => "incomplete",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(status: &str) -> Option<RunStatus> {
        Some(match status {
            "queued" => RunStatus::Queued,
            "in_progress" => RunStatus::InProgress,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "incomplete" => RunStatus::Incomplete,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the run has ended: nothing will change it any more.
    pub fn ended(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::InProgress)
    }
}

/// A run as it is queued.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// The run's id: its answer's turn id.
    pub id: &'a str,
    /// What the run is made from, as the front door wrote it (kept sealed).
    pub ticket: &'a str,
    /// When it must have started (Unix milliseconds): past it, a queued run has failed.
    pub start_by_ms: u64,
}

/// A run as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub status: RunStatus,
    /// Queued, when it must have started; in progress, when its invocation ends (Unix
    /// milliseconds).
    pub deadline_ms: u64,
    /// A cancellation was asked for while it ran.
    pub cancel_asked: bool,
    pub ticket: String,
    /// The response it ended with (as its caller sees it), once it has ended.
    pub response: Option<String>,
    /// How many batches of events it has recorded.
    pub batches: u64,
}

impl RunState {
    /// The run as seen at `now_ms`: one still queued or in progress past its deadline has
    /// failed (its invocation never started, or died), whoever reads it.
    pub fn as_of(mut self, now_ms: u64) -> RunState {
        if !self.status.ended() && now_ms > self.deadline_ms {
            self.status = RunStatus::Failed;
        }
        self
    }
}

/// What a cancellation does to a run as it stands at `now_ms` (`cancel_run.lua` makes the
/// same decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelling {
    /// Queued: it ends `cancelled` now.
    EndNow,
    /// In progress: it is asked to stop, and ends itself.
    AskToStop,
    /// Ended, or past its deadline: nothing changes.
    Nothing,
}

impl RunState {
    /// Whether `runner` may take the run at `now_ms`: a queued run within its deadline, or
    /// one this runner took already (`start_run.lua` makes the same decision).
    pub fn may_start(&self, taken_by: Option<&str>, runner: &str, now_ms: u64) -> bool {
        match self.status {
            RunStatus::Queued => now_ms <= self.deadline_ms,
            RunStatus::InProgress => taken_by == Some(runner),
            _ => false,
        }
    }

    pub fn cancelling(&self, now_ms: u64) -> Cancelling {
        match self.status {
            _ if now_ms > self.deadline_ms => Cancelling::Nothing,
            RunStatus::Queued => Cancelling::EndNow,
            RunStatus::InProgress => Cancelling::AskToStop,
            _ => Cancelling::Nothing,
        }
    }
}

/// Who ends a run, and so from what it may end: only a run still queued is abandoned (its
/// hand-over failed), and only the runner that took a run ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending<'a> {
    /// The invocation that queued it, when Lambda would not take it.
    Queued,
    /// The runner (an invocation's own random id) that took it.
    Runner(&'a str),
}

impl Ending<'_> {
    /// Whether a run that stands at `status`, taken by `taken_by`, may end `ending` now
    /// (`end_run.lua` makes the same decision). An end sent again finds the run already so,
    /// and is taken as made.
    pub fn may_end(self, status: RunStatus, taken_by: Option<&str>, ending: RunStatus) -> bool {
        match self {
            Ending::Queued => status == RunStatus::Queued || status == ending && taken_by.is_none(),
            Ending::Runner(runner) => {
                taken_by == Some(runner) && (status == RunStatus::InProgress || status == ending)
            }
        }
    }
}

/// What asking to start a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The run is this runner's to make (taken now, or by this runner before).
    Taken(RunState),
    /// Another runner took it, or it has ended (cancelled while queued): nothing to do.
    Not(RunState),
    /// No such run (it expired, or never was).
    Missing,
}

#[async_trait::async_trait]
pub trait Runs: Send + Sync {
    /// Keeps a run, `queued`, in the slot of the chat its answer lands in. Safe to send
    /// twice: a run already kept is left as it is.
    async fn queue_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        run: NewRun<'_>,
    ) -> Result<(), StoreError>;
    /// Takes a queued run for `runner` (an invocation's id), in progress until
    /// `deadline_ms`. Safe to send twice: the same runner finds it its own.
    async fn start_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        runner: &str,
        deadline_ms: u64,
    ) -> Result<Start, StoreError>;
    /// The run, as kept (see [`RunState::as_of`] for how it reads).
    async fn run_state(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
    ) -> Result<Option<RunState>, StoreError>;
    /// Cancels a run: a queued one ends `cancelled` with `response`; one in progress is
    /// asked to stop. Answers the run as it is after. Safe to send twice.
    async fn cancel_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        response: &str,
    ) -> Result<Option<RunState>, StoreError>;
    /// Records a batch of events, the run's `batch`th (from 0), and answers whether a
    /// cancellation was asked for (an empty `events` records nothing, and only asks). Safe
    /// to send twice: a batch already recorded is not recorded again.
    async fn record_events(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        batch: u64,
        events: &str,
    ) -> Result<bool, StoreError>;
    /// The batches of events recorded from the `from`th on, in order.
    async fn run_events(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        from: u64,
    ) -> Result<Vec<String>, StoreError>;
    /// Keeps a live turn, in progress and taken by itself, and names it as the chat's live
    /// turn (in place of any before it) until its deadline. Safe to send twice: a run
    /// kept already is left as it is.
    async fn begin_live(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        live: NewLive<'_>,
    ) -> Result<(), StoreError>;
    /// The id of the chat's live turn, while one is being made.
    async fn live_turn(&self, tenant: &Tenant, chat: &ChatId)
        -> Result<Option<String>, StoreError>;
    /// Ends a run with `status` and the response it ended with, when [`Ending::may_end`]:
    /// answers whether it did; a live turn stops being its chat's. Safe to send twice.
    async fn end_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        by: Ending<'_>,
        status: RunStatus,
        response: &str,
    ) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: RunStatus) -> RunState {
        RunState {
            status,
            deadline_ms: 1_000,
            cancel_asked: false,
            ticket: String::new(),
            response: None,
            batches: 0,
        }
    }

    #[test]
    fn a_run_past_its_deadline_reads_failed_unless_it_ended() {
        assert_eq!(
            state(RunStatus::InProgress).as_of(1_001).status,
            RunStatus::Failed
        );
        assert_eq!(
            state(RunStatus::Queued).as_of(1_001).status,
            RunStatus::Failed
        );
        assert_eq!(
            state(RunStatus::Queued).as_of(1_000).status,
            RunStatus::Queued
        );
        assert_eq!(
            state(RunStatus::Cancelled).as_of(5_000).status,
            RunStatus::Cancelled
        );
    }

    #[test]
    fn statuses_read_back_as_written() {
        for status in [
            RunStatus::Queued,
            RunStatus::InProgress,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Incomplete,
            RunStatus::Cancelled,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("done"), None);
    }
}
