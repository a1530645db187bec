//! A background turn's first half (`background: true`): its read, with every check and claim
//! a turn makes, and its run kept `queued` (`store/runs.rs`), two round trips, so that the
//! caller is answered at once with its answer's id and every refusal keeps its status. The
//! turn itself is made by another invocation, the run, through [`TurnEngine::open`] with
//! what this read decided ([`Fixed`]): it reads the chat again and lands its answer where
//! the id it was given says.

use tokio::time::Instant;

use super::prepare::{release, release_claim, Prepared};
use super::{Ask, Fixed, Keep, TurnEngine};
use crate::chat::{ChatId, Tenant};
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{Ending, KeptAnswer, NewRun, RunStatus};
use std::future::Future;

/// A turn kept to run in the background.
pub struct Queued {
    /// The proxy's id of its answer.
    pub answer_id: String,
    /// The chat its answer lands in, which keeps the run.
    pub kept_in: ChatId,
    pub fixed: Fixed,
    tenant: Tenant,
    /// The chat read, and the newest turn the read claimed in it (the run claims it again).
    claimed_newest: Option<(ChatId, String)>,
    keep: Option<Keep>,
    /// The read claimed the request's `Idempotency-Key`.
    claimed_key: bool,
    deadline: Instant,
}

/// How queueing a turn ended.
pub enum Queuing {
    Queued(Box<Queued>),
    /// A retry of a request already queued: its kept answer.
    Replayed(String),
}

impl TurnEngine {
    /// Reads and checks a background turn, and keeps its run, queued until `start_by_ms`,
    /// with the ticket `ticket` writes from what the read decided and the answer's id. Claims hold until the
    /// ask's deadline: the run's own, at the latest.
    pub async fn queue(
        &self,
        mut ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
        start_by_ms: u64,
        ticket: impl FnOnce(&Fixed, &str) -> Result<String, serde_json::Error>,
    ) -> Result<Queuing, ApiError> {
        let ready = match self.prepare(&mut ask, rate_limit, log).await? {
            Prepared::Ready(ready) => *ready,
            Prepared::Replayed(answer) => return Ok(Queuing::Replayed(answer)),
        };
        let fixed = Fixed {
            turn_id: ready.turn_id.clone(),
            chain: ready.chain.clone(),
        };
        let queued = Queued {
            answer_id: ready.answer_id.clone().unwrap_or_default(),
            kept_in: ready
                .chain
                .clone()
                .or_else(|| ask.chat.cloned())
                .unwrap_or_else(ChatId::new_chain),
            tenant: ask.tenant.clone(),
            claimed_newest: ask.chat.cloned().zip(ready.follows.clone()),
            keep: ask.keep.clone(),
            claimed_key: ready.claimed,
            deadline: ask.deadline,
            fixed,
        };
        let ticket = match ticket(&queued.fixed, &queued.answer_id) {
            Ok(ticket) => ticket,
            Err(_) => {
                self.free_claims(&queued).await;
                return Err(ApiError::Internal);
            }
        };
        let run = NewRun {
            id: &queued.fixed.turn_id,
            ticket: &ticket,
            start_by_ms,
        };
        let kept = log
            .redis(self.store.queue_run(ask.tenant, &queued.kept_in, run))
            .await;
        if let Err(error) = kept {
            self.free_claims(&queued).await;
            return Err(error.into());
        }
        Ok(Queuing::Queued(Box::new(queued)))
    }

    /// The run was handed over: `answer` is kept for the request's `Idempotency-Key`, if
    /// it sent one (a retry is answered it, and queues nothing more).
    pub async fn handed_over(&self, queued: &Queued, answer: &str) {
        let Some(keep) = queued.keep.as_ref().filter(|_| queued.claimed_key) else {
            return;
        };
        let kept = KeptAnswer {
            key: &keep.key,
            fingerprint: &keep.fingerprint,
            answer,
        };
        if let Err(error) = self.store.keep_answer(&queued.tenant, kept).await {
            tracing::warn!(%error, "a background response's Idempotency-Key could not keep its answer");
        }
    }

    /// The run could not be handed over (Lambda refused, or its answer was lost): unless an
    /// invocation took it meanwhile (then Lambda had taken it after all, and it runs), it
    /// ends `failed` with `response`, and what its read claimed is freed, so that a retry
    /// runs again. Answers whether it was abandoned.
    pub async fn abandon(&self, queued: &Queued, response: &str) -> bool {
        let ended = self
            .store
            .end_run(
                &queued.tenant,
                &queued.kept_in,
                &queued.fixed.turn_id,
                Ending::Queued,
                RunStatus::Failed,
                response,
            )
            .await;
        match ended {
            Ok(true) => {
                self.free_claims(queued).await;
                true
            }
            Ok(false) => false,
            Err(error) => {
                // Left queued: it reads `failed` once its start deadline passes, and its
                // claims lapse with their own.
                tracing::warn!(%error, "a background run that could not start could not be marked failed");
                true
            }
        }
    }

    /// Frees the claims a queued turn's read made (its run will not make the turn).
    pub async fn free_claims(&self, queued: &Queued) {
        let store = &*self.store;
        let newest = async {
            if let Some((chat, _)) = &queued.claimed_newest {
                release_claim(store, &queued.tenant, chat, &queued.fixed.turn_id).await;
            }
        };
        let key = async {
            if queued.claimed_key {
                release(store, &queued.tenant, queued.keep.as_ref(), queued.deadline).await;
            }
        };
        tokio::join!(newest, key);
    }

    /// Frees the claim a queued turn's read may have made on `chat`'s newest turn, when its
    /// run will not make it (cancelled while queued): only that turn's own claim.
    pub async fn free_queued(&self, tenant: &Tenant, chat: &ChatId, turn_id: &str) {
        release_claim(&*self.store, tenant, chat, turn_id).await;
    }
}
