//! Preparing a turn: its one read round trip (the chat, and beside it the rate limit, the
//! tokens spent today, the claim on the `Idempotency-Key` and where the items its input
//! references are kept), every limit checked, the references filled in, how the turn joins
//! its chat (`joins.rs`), and the window of history it sends. What that window makes is
//! `sent.rs`'s. One room: every check is decided from the one read, and a refusal frees
//! what that read claimed.

use std::collections::HashMap;
use std::future::Future;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

use super::compact::sent_weight;
use super::joins::{check_against_history, continue_from, follows_newest};
use super::{Ask, Keep, TurnEngine, CLAIM_MARGIN};
use crate::budget::{self, Window};
use crate::chat::{
    asked_in, find_items, is_compaction, parse_response_id, referenced_ids, resolve, response_id,
    ChatId, Tenant, Turn,
};
use crate::clock::UtcDay;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{Claim, Store, StoreError, TailClaim, TurnContext};

/// A turn ready to ask upstream: its chat's context and the window it sends.
pub(super) struct Ready {
    pub context: TurnContext,
    pub window: Window,
    pub turn_id: String,
    pub claimed: bool,
    /// The request gave the chat a new prompt, to be stored with the turn.
    pub new_prompt: bool,
    /// Where a Responses turn is kept when not in the chat it read: a new chain, or a
    /// branch of one (which gets the history read, up to the turn it continues, copied).
    pub chain: Option<ChatId>,
    /// The proxy's id of a Responses turn's answer.
    pub answer_id: Option<String>,
    /// The stored turn this one replaces, with every turn after it (a redo).
    pub replaces: Option<String>,
    /// The chat's newest turn as read, when this turn must follow it (it answers that
    /// turn's tool calls, or continues a chain in place): the read claimed it.
    pub follows: Option<String>,
    /// What compacting the window cost, when this turn's window moved and it was
    /// compacted (`compact.rs`).
    pub compaction: Option<super::CompactionCost>,
}

pub(super) enum Prepared {
    Ready(Box<Ready>),
    Replayed(String),
}

/// How many other chains or conversations one request's `item_reference`s may make it
/// read (each whole, up to `MAX_CHAT_BYTES`): the Vercel AI SDK's references name items of
/// the chain the request continues, found in its own read.
const MAX_REFERENCED_CHATS: usize = 8;

impl TurnEngine {
    /// The turn's read, in one round trip: the chat's context, and beside it the rate
    /// limit, the tokens spent today and the claim on the request's `Idempotency-Key`.
    pub(super) async fn prepare(
        &self,
        ask: &mut Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Prepared, ApiError> {
        let store = &self.store;
        let day = UtcDay::today();
        // A background run's turn keeps the id it was queued with (`queue.rs`).
        let fixed = ask.responses.as_ref().and_then(|r| r.fixed.as_ref());
        let turn_id = fixed.map_or_else(Turn::new_id, |fixed| fixed.turn_id.clone());
        // A turn that will follow the chat's newest turn claims it in its read: only one
        // request at a time answers a turn's tool calls or continues a chain in place.
        let follow = follows_newest(ask);
        let hold = ask.deadline.saturating_duration_since(Instant::now()) + CLAIM_MARGIN;
        let claim = follow.as_ref().map(|newest| TailClaim {
            newest: newest.as_deref(),
            claimant: &turn_id,
            hold,
        });
        let context = async {
            match ask.chat {
                Some(chat) => store.turn_context(ask.tenant, chat, claim).await,
                None => Ok(TurnContext::default()),
            }
        };
        let spent = async {
            match self.settings.token_limit_per_day {
                Some(_) => store
                    .tokens_spent(ask.tenant, self.limited_ip(ask), &day)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let claim = async {
            match &ask.keep {
                Some(keep) => store
                    .claim(ask.tenant, &keep.key, keep.claimant(ask.deadline))
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        // Where the items the input references are kept, looked up beside the rest.
        let references = match &ask.responses {
            Some(responses) => referenced_ids(&responses.input).unwrap_or_default(),
            None => Vec::new(),
        };
        let located = async {
            match references.is_empty() {
                true => Ok(Vec::new()),
                false => store.item_responses(ask.tenant, &references).await,
            }
        };
        let (allowed, context, spent, claim, located) = log
            .redis(async { tokio::join!(rate_limit, context, spent, claim, located) })
            .await;
        let newest_claimed = matches!(&context, Ok(context) if context.claimed);
        let referenced = match (&allowed, &context) {
            (Ok(()), Ok(context)) if !references.is_empty() => {
                self.referenced(ask.tenant, &references, located, &context.history, log)
                    .await
            }
            _ => Ok(HashMap::new()),
        };
        let claimed = match claim? {
            None => false,
            Some(Claim::Claimed) => true,
            Some(Claim::InProgress { same: true }) => return Err(ApiError::RequestInProgress),
            Some(Claim::InProgress { same: false } | Claim::Answered { same: false, .. }) => {
                return Err(ApiError::IdempotencyKeyReused)
            }
            Some(Claim::Answered { same: true, answer }) => return Ok(Prepared::Replayed(answer)),
        };
        let checked = (|| {
            allowed?;
            if let (Some(limit), Some(spent)) = (self.settings.token_limit_per_day, spent?) {
                if spent >= limit {
                    return Err(ApiError::TokenLimitExceeded {
                        limit,
                        retry_after: day.seconds_left,
                    });
                }
            }
            let mut context = context?;
            // A redo is found in the history just read: what it asks, and what it replaces.
            let mut replaces = None;
            if let Some(redo) = ask.redo.take() {
                let (asked, replaced) = super::redo::resolve(redo, &mut context)?;
                ask.asked = asked;
                replaces = Some(replaced);
            }
            if let Some(responses) = ask.responses.as_mut().filter(|_| !references.is_empty()) {
                resolve(&mut responses.input, &referenced?).map_err(|id| ApiError::Missing {
                    code: "item_not_found",
                    param: Some("input"),
                    message: format!("Item with id '{id}' not found."),
                })?;
                ask.asked = asked_in(&responses.input);
            }
            let mut new_prompt = false;
            let mut chain = None;
            if let Some(responses) = &ask.responses {
                chain = continue_from(ask, responses, &mut context)?;
            }
            if ask.chat.is_some() || ask.responses.is_some() {
                // A redo asks what the chat holds, which was checked when it was stored.
                if replaces.is_none() {
                    check_against_history(ask, &context)?;
                }
                if let Some(prompt) = &ask.prompt {
                    new_prompt = context.chat_prompt.as_ref() != Some(prompt);
                    context.chat_prompt = Some(prompt.clone());
                }
            }
            // The newest turn this one follows, when its read claimed it; a claim held by
            // another request refuses tool results (a chain continued in place has become
            // a branch above instead).
            let newest = context.history.last().and_then(|turn| turn.id.clone());
            let follows = match (&follow, chain.is_some()) {
                (Some(_), false) if context.claimed => newest,
                (Some(_), false) => {
                    return Err(ApiError::Conflict {
                        code: "tool_call_in_progress",
                        message: "another request is answering this chat's newest tool calls; \
                                  read the chat again when it has been answered"
                            .to_owned(),
                    })
                }
                _ => None,
            };
            let answer_id = ask.responses.as_ref().map(|responses| {
                let kept_in = match (&chain, ask.chat) {
                    (Some(chain), _) => chain.clone(),
                    (None, Some(chat)) if responses.store => chat.clone(),
                    // Kept nowhere: an id no chat answers to.
                    _ => ChatId::new_chain(),
                };
                response_id(&turn_id, &kept_in)
            });
            // A compaction stands for the turns before the window only while the window's
            // first turn is in the history read (a redo may have replaced it), and only
            // when nothing later stands for them: a compaction item in the history sent
            // (the Responses door's `compacted_from`), or in the new input, stands for all
            // before it. The chat door cannot send a Responses compaction's items.
            let superseded = |start: usize| {
                ask.responses.is_some() && context.history[start..].iter().any(Turn::compacts)
            };
            let brings_its_own = ask
                .responses
                .as_ref()
                .is_some_and(|r| r.input.iter().any(is_compaction));
            let sendable = match &context.compacted {
                Some(compacted) => {
                    compacted.sendable_by(ask.responses.is_some())
                        && !brings_its_own
                        && budget::window_position(&context).is_some_and(|at| !superseded(at))
                }
                None => false,
            };
            if !sendable {
                context.compacted = None;
            }
            let window = match (ask.chat, &ask.responses) {
                (None, None) => Window {
                    start: 0,
                    moved_to: None,
                    moved_from: 0,
                    tokens: 0,
                },
                _ => budget::plan(
                    &context,
                    &self.budget_request(&context, ask),
                    self.limits(),
                    &turn_id,
                )?,
            };
            Ok(Ready {
                context,
                window,
                turn_id: turn_id.clone(),
                claimed,
                new_prompt,
                chain,
                answer_id,
                replaces,
                follows,
                compaction: None,
            })
        })();
        match checked {
            Ok(ready) => Ok(Prepared::Ready(Box::new(ready))),
            Err(error) => {
                let key = async {
                    if claimed {
                        self.release(ask).await;
                    }
                };
                let newest = async {
                    if newest_claimed {
                        self.release_claim(ask, &turn_id).await;
                    }
                };
                tokio::join!(key, newest);
                Err(error)
            }
        }
    }

    /// The items `ids` names, found in the history just read, or else in the chains and
    /// conversations their records name, read together in one more round trip (only a
    /// request that references items it did not continue from pays it). An id found
    /// nowhere is left out.
    pub(super) async fn referenced(
        &self,
        tenant: &Tenant,
        ids: &[String],
        located: Result<Vec<Option<String>>, StoreError>,
        history: &[Turn],
        log: &mut RequestLog,
    ) -> Result<HashMap<String, Value>, ApiError> {
        let mut found = HashMap::new();
        find_items(history, ids, &mut found);
        let mut chats: Vec<ChatId> = Vec::new();
        for (id, response) in ids.iter().zip(located?) {
            let chat = response
                .as_deref()
                .and_then(parse_response_id)
                .map(|(_, chat)| chat);
            if let (false, Some(chat)) = (found.contains_key(id), chat) {
                if !chats.contains(&chat) {
                    chats.push(chat);
                }
            }
        }
        if chats.is_empty() {
            return Ok(found);
        }
        // Each chat is read whole (up to MAX_CHAT_BYTES): what one request may make the
        // function read and hold at once is bounded here.
        if chats.len() > MAX_REFERENCED_CHATS {
            return Err(ApiError::BadParam {
                code: "too_many_references",
                param: "input",
                message: format!(
                    "the input's item_references name items of {} stored chains or \
                     conversations; one request may name items of at most \
                     {MAX_REFERENCED_CHATS} besides its own",
                    chats.len()
                ),
            });
        }
        let reads = chats.iter().map(|chat| self.store.turns(tenant, chat));
        for turns in log.redis(join_all(reads)).await {
            find_items(&turns?, ids, &mut found);
        }
        Ok(found)
    }

    /// The address an open API counts tokens by, for its `TOKEN_LIMIT_PER_DAY` (without a
    /// limit nothing reads that count, so none is kept); a caller with a key is counted as
    /// itself.
    pub(super) fn limited_ip<'a>(&self, ask: &Ask<'a>) -> Option<&'a str> {
        match ask.tenant {
            Tenant::Open if self.settings.token_limit_per_day.is_some() => {
                Some(ask.ip.unwrap_or("unknown"))
            }
            Tenant::Open | Tenant::Caller(_) => None,
        }
    }

    /// Frees the request's `Idempotency-Key` after a failure.
    pub(super) async fn release(&self, ask: &Ask<'_>) {
        release(&*self.store, ask.tenant, ask.keep.as_ref(), ask.deadline).await;
    }

    /// Frees the read's claim on the chat's newest turn after a failure.
    pub(super) async fn release_claim(&self, ask: &Ask<'_>, turn_id: &str) {
        if let Some(chat) = ask.chat {
            release_claim(&*self.store, ask.tenant, chat, turn_id).await;
        }
    }

    /// What the turn sends besides its history, for the budget: everything counts.
    fn budget_request<'a>(
        &'a self,
        context: &'a TurnContext,
        ask: &'a Ask<'_>,
    ) -> budget::Request<'a> {
        let responses = ask.responses.as_ref();
        budget::Request {
            global_prompt: self.global_prompt(context),
            chat_prompt: context.chat_prompt.as_deref(),
            asked: &ask.asked,
            besides: responses.map_or(0, |responses| budget::besides(&responses.input)),
            fixed: budget::fixed(
                responses.and_then(|responses| responses.instructions.as_deref()),
                ask.params,
            ),
            from: self.compacted_from(context, ask),
            compacted: context.compacted.as_ref().map_or(0, sent_weight),
        }
    }

    /// Where a Responses turn's history starts at the earliest ([`budget::compacted_from`]);
    /// 0 for the other doors.
    fn compacted_from(&self, context: &TurnContext, ask: &Ask<'_>) -> usize {
        match ask.responses {
            Some(_) => budget::compacted_from(&context.history),
            None => 0,
        }
    }

    /// The sizes a turn's request is planned within.
    pub(super) fn limits(&self) -> budget::Limits {
        let compact_at = self.settings.compaction.as_ref().map(|c| c.at_tokens);
        budget::Limits::new(self.settings.max_prompt_tokens, compact_at)
    }

    pub(super) fn global_prompt<'a>(&'a self, context: &'a TurnContext) -> &'a str {
        context
            .global_prompt
            .as_deref()
            .unwrap_or(&self.settings.default_system_prompt)
    }
}

/// Frees a claim on a chat's newest turn; a failure only makes the next request that would
/// follow that turn wait for the claim to expire (at the request's deadline and a margin).
pub(super) async fn release_claim(store: &dyn Store, tenant: &Tenant, chat: &ChatId, turn: &str) {
    if let Err(error) = store.release_claim(tenant, chat, turn).await {
        tracing::warn!(%error, "could not free a claim on a chat's newest turn after a failure");
    }
}

/// Frees a failed request's `Idempotency-Key`, if it sent one; a failure to free it only
/// makes a retry wait for the claim to expire (at the request's deadline and a margin).
pub(super) async fn release(
    store: &dyn Store,
    tenant: &Tenant,
    keep: Option<&Keep>,
    deadline: Instant,
) {
    if let Some(keep) = keep {
        if let Err(error) = store
            .release(tenant, &keep.key, keep.claimant(deadline))
            .await
        {
            tracing::warn!(%error, "could not free an Idempotency-Key after a failure");
        }
    }
}
