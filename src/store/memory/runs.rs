//! Background runs in memory: each run's state with its runner and its batches of events,
//! under the one lock, making the decisions `store/runs.rs` writes down.

use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{
    Cancelling, Ending, NewLive, NewRun, RunState, RunStatus, Runs, Start, StoreError,
    ENDED_LIVE_SECONDS, LIVE_SECONDS, RUN_SECONDS,
};

/// A run as memory keeps it.
pub(super) struct KeptRun {
    state: RunState,
    runner: Option<String>,
    events: Vec<String>,
    expires_at: Instant,
    /// A live turn's (`begin_live`), which lives a short while once ended.
    live: bool,
}

pub(super) type RunKey = (Tenant, ChatId, String);

fn run_key(tenant: &Tenant, chat: &ChatId, id: &str) -> RunKey {
    (tenant.clone(), chat.clone(), id.to_owned())
}

impl MemoryStore {
    /// The run, unless it expired (then it is dropped).
    fn kept_run<'a>(state: &'a mut super::State, key: &RunKey) -> Option<&'a mut KeptRun> {
        if state
            .runs
            .get(key)
            .is_some_and(|run| run.expires_at <= Instant::now())
        {
            state.runs.remove(key);
        }
        state.runs.get_mut(key)
    }
}

#[async_trait::async_trait]
impl Runs for MemoryStore {
    async fn queue_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        run: NewRun<'_>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = run_key(tenant, chat, run.id);
        if Self::kept_run(&mut state, &key).is_none() {
            let kept = KeptRun {
                state: RunState {
                    status: RunStatus::Queued,
                    deadline_ms: run.start_by_ms,
                    cancel_asked: false,
                    ticket: run.ticket.to_owned(),
                    response: None,
                    batches: 0,
                },
                runner: None,
                events: Vec::new(),
                expires_at: Instant::now() + Duration::from_secs(RUN_SECONDS),
                live: false,
            };
            state.runs.insert(key, kept);
        }
        Ok(())
    }

    async fn start_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        runner: &str,
        deadline_ms: u64,
    ) -> Result<Start, StoreError> {
        let mut state = self.state();
        let Some(run) = Self::kept_run(&mut state, &run_key(tenant, chat, id)) else {
            return Ok(Start::Missing);
        };
        if !run.state.may_start(run.runner.as_deref(), runner, now_ms()) {
            return Ok(Start::Not(run.state.clone()));
        }
        run.state.status = RunStatus::InProgress;
        run.state.deadline_ms = deadline_ms;
        run.runner = Some(runner.to_owned());
        Ok(Start::Taken(run.state.clone()))
    }

    async fn run_state(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
    ) -> Result<Option<RunState>, StoreError> {
        let mut state = self.state();
        let run = Self::kept_run(&mut state, &run_key(tenant, chat, id));
        Ok(run.map(|run| run.state.clone()))
    }

    async fn cancel_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        response: &str,
    ) -> Result<Option<RunState>, StoreError> {
        let mut state = self.state();
        // Cancelled while queued, it ends here: in a temporary chat it lives no longer than
        // the chat.
        let temporary = self
            .live(&mut state, &(tenant.clone(), chat.clone()))
            .and_then(|kept| kept.temporary);
        let Some(run) = Self::kept_run(&mut state, &run_key(tenant, chat, id)) else {
            return Ok(None);
        };
        match run.state.cancelling(now_ms()) {
            Cancelling::EndNow => {
                run.state.status = RunStatus::Cancelled;
                run.state.response = Some(response.to_owned());
                if let Some(lives) = temporary {
                    run.expires_at = run.expires_at.min(Instant::now() + lives);
                }
            }
            Cancelling::AskToStop => run.state.cancel_asked = true,
            Cancelling::Nothing => {}
        }
        Ok(Some(run.state.clone()))
    }

    async fn record_events(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        batch: u64,
        events: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(run) = Self::kept_run(&mut state, &run_key(tenant, chat, id)) else {
            return Err(StoreError::new("run gone".to_owned()));
        };
        let have = run.events.len() as u64;
        if events.is_empty() {
            return Ok(run.state.cancel_asked);
        }
        if have < batch {
            return Err(StoreError::new(format!(
                "events missing before batch {batch}"
            )));
        }
        if have == batch {
            run.events.push(events.to_owned());
            run.state.batches = batch + 1;
        }
        Ok(run.state.cancel_asked)
    }

    async fn run_events(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        from: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut state = self.state();
        let run = Self::kept_run(&mut state, &run_key(tenant, chat, id));
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(run
            .map(|run| run.events.iter().skip(from).cloned().collect())
            .unwrap_or_default())
    }

    async fn end_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        by: Ending<'_>,
        status: RunStatus,
        response: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        // An ended live turn's record lives a little longer; any run of a temporary chat no
        // longer than the chat.
        let temporary = self
            .live(&mut state, &(tenant.clone(), chat.clone()))
            .and_then(|kept| kept.temporary);
        let Some(run) = Self::kept_run(&mut state, &run_key(tenant, chat, id)) else {
            return Ok(false);
        };
        if !by.may_end(run.state.status, run.runner.as_deref(), status) {
            return Ok(false);
        }
        run.state.status = status;
        run.state.response = Some(response.to_owned());
        let ended = run.live.then(|| Duration::from_secs(ENDED_LIVE_SECONDS));
        let lives = match (ended, temporary) {
            (Some(ended), Some(temporary)) => Some(ended.min(temporary)),
            (ended, temporary) => ended.or(temporary),
        };
        if let Some(lives) = lives {
            run.expires_at = run.expires_at.min(Instant::now() + lives);
        }
        let chat = (tenant.clone(), chat.clone());
        if state.live.get(&chat).is_some_and(|(live, _)| live == id) {
            state.live.remove(&chat);
        }
        Ok(true)
    }

    async fn begin_live(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        live: NewLive<'_>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = run_key(tenant, chat, live.id);
        if Self::kept_run(&mut state, &key).is_some() {
            return Ok(());
        }
        let kept = KeptRun {
            state: RunState {
                status: RunStatus::InProgress,
                deadline_ms: live.deadline_ms,
                cancel_asked: false,
                ticket: live.asked.to_owned(),
                response: None,
                batches: 0,
            },
            runner: Some(live.id.to_owned()),
            events: Vec::new(),
            expires_at: Instant::now() + Duration::from_secs(LIVE_SECONDS),
            live: true,
        };
        state.runs.insert(key, kept);
        let left = Duration::from_millis(live.deadline_ms.saturating_sub(now_ms()));
        let until = Instant::now() + left;
        state
            .live
            .insert((tenant.clone(), chat.clone()), (live.id.to_owned(), until));
        Ok(())
    }

    async fn live_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError> {
        let mut state = self.state();
        let chat = (tenant.clone(), chat.clone());
        if state
            .live
            .get(&chat)
            .is_some_and(|(_, until)| *until <= Instant::now())
        {
            state.live.remove(&chat);
        }
        Ok(state.live.get(&chat).map(|(live, _)| live.clone()))
    }
}
