//! Preparing a turn: its one read round trip (the chat, and beside it the rate limit, the
//! tokens spent today and the claim on the `Idempotency-Key`), every limit checked, and the
//! window of history it sends; then the messages that window makes.

use std::future::Future;

use tokio::time::Instant;

use super::{Ask, Keep, TurnEngine};
use crate::budget::{self, Window};
use crate::chat::{first_difference, Asked, Tenant, Turn};
use crate::clock::UtcDay;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{Claim, Store, TurnContext};
use crate::upstream::wire::Message;

/// How a turn sends the images of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HistoryImages {
    AsImages,
    /// As `[image: <url>]` text, after upstream refused an image of the history.
    AsText,
}

/// A turn ready to ask upstream: its chat's context and the window it sends.
pub(super) struct Ready {
    pub context: TurnContext,
    pub window: Window,
    pub turn_id: String,
    pub claimed: bool,
    /// The request gave the chat a new prompt, to be stored with the turn.
    pub new_prompt: bool,
}

pub(super) enum Prepared {
    Ready(Ready),
    Replayed(String),
}

impl TurnEngine {
    /// The turn's read, in one round trip: the chat's context, and beside it the rate
    /// limit, the tokens spent today and the claim on the request's `Idempotency-Key`.
    pub(super) async fn prepare(
        &self,
        ask: &Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Prepared, ApiError> {
        let store = &self.store;
        let day = UtcDay::today();
        let context = async {
            match ask.chat {
                Some(chat) => store.turn_context(ask.tenant, chat).await,
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
        let (allowed, context, spent, claim) = log
            .redis(async { tokio::join!(rate_limit, context, spent, claim) })
            .await;
        let claimed = match claim? {
            None => false,
            Some(Claim::Claimed) => true,
            Some(Claim::InProgress { fingerprint }) => {
                return Err(self
                    .reused(ask, &fingerprint)
                    .unwrap_or(ApiError::RequestInProgress))
            }
            Some(Claim::Answered {
                fingerprint,
                answer,
            }) => {
                return match self.reused(ask, &fingerprint) {
                    Some(error) => Err(error),
                    None => Ok(Prepared::Replayed(answer)),
                }
            }
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
            let mut new_prompt = false;
            if ask.chat.is_some() {
                check_against_history(ask, &context)?;
                if let Some(prompt) = &ask.prompt {
                    new_prompt = context.chat_prompt.as_ref() != Some(prompt);
                    context.chat_prompt = Some(prompt.clone());
                }
            }
            let turn_id = Turn::new_id();
            let window = match ask.chat {
                Some(_) => budget::plan(
                    &context,
                    &self.budget_request(&context, &ask.asked),
                    self.settings.max_prompt_tokens,
                    &turn_id,
                )?,
                None => Window {
                    start: 0,
                    moved_to: None,
                    tokens: 0,
                },
            };
            Ok(Ready {
                context,
                window,
                turn_id,
                claimed,
                new_prompt,
            })
        })();
        match checked {
            Ok(ready) => Ok(Prepared::Ready(ready)),
            Err(error) => {
                if claimed {
                    self.release(ask).await;
                }
                Err(error)
            }
        }
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

    /// A claim held for another request: the same key with a different body.
    fn reused(&self, ask: &Ask<'_>, fingerprint: &str) -> Option<ApiError> {
        let keep = ask.keep.as_ref()?;
        (keep.fingerprint != fingerprint).then_some(ApiError::IdempotencyKeyReused)
    }

    /// Frees the request's `Idempotency-Key` after a failure.
    pub(super) async fn release(&self, ask: &Ask<'_>) {
        release(&*self.store, ask.tenant, ask.keep.as_ref(), ask.deadline).await;
    }

    fn budget_request<'a>(
        &'a self,
        context: &'a TurnContext,
        asked: &'a [Asked],
    ) -> budget::Request<'a> {
        budget::Request {
            global_prompt: self.global_prompt(context),
            chat_prompt: context.chat_prompt.as_deref(),
            asked,
        }
    }

    pub(super) fn global_prompt<'a>(&'a self, context: &'a TurnContext) -> &'a str {
        context
            .global_prompt
            .as_deref()
            .unwrap_or(&self.settings.default_system_prompt)
    }

    /// The global prompt, the chat's prompt, the window's history, then the new messages;
    /// none for a stateless call, whose messages are the caller's own.
    pub(super) fn messages<'a>(
        &'a self,
        context: &'a TurnContext,
        window: &Window,
        ask: &'a Ask<'_>,
        images: HistoryImages,
    ) -> Vec<Message<'a>> {
        if ask.chat.is_none() {
            return Vec::new();
        }
        let history = &context.history[window.start.min(context.history.len())..];
        let past = history.iter().map(|t| t.asked.len() + 1).sum::<usize>();
        let mut messages = Vec::with_capacity(2 + past + ask.asked.len());
        messages.push(Message::System {
            content: self.global_prompt(context),
        });
        if let Some(prompt) = context.chat_prompt.as_deref() {
            messages.push(Message::System { content: prompt });
        }
        let as_text = images == HistoryImages::AsText;
        for turn in history {
            for asked in &turn.asked {
                messages.push(Message::asked(asked, as_text));
            }
            messages.push(Message::reply(turn));
        }
        messages.extend(ask.asked.iter().map(|asked| Message::asked(asked, false)));
        messages
    }
}

/// A turn's messages against the chat they join: a resent history must be the chat's own
/// (`history_conflict` otherwise), and a tool result must answer a call of the chat's last
/// reply (`invalid_messages` otherwise); either way nothing is asked or stored.
fn check_against_history(ask: &Ask<'_>, context: &TurnContext) -> Result<(), ApiError> {
    if let Some(resent) = &ask.resent {
        if let Some(index) = first_difference(&context.history, &resent.messages) {
            return Err(ApiError::Conflict {
                code: "history_conflict",
                message: format!(
                    "messages[{}] differs from the chat's stored message at that point: \
                     with X-Chat-Id, send the chat's history as it is stored (GET \
                     /<chat_id>/chat), or only the new messages",
                    resent.from + index
                ),
            });
        }
    }
    let last = context.history.last();
    for (index, asked) in ask.asked.iter().enumerate() {
        let Asked::ToolResult(result) = asked else {
            continue;
        };
        let known = last.is_some_and(|turn| turn.call_ids().any(|id| id == result.tool_call_id));
        if !known {
            let from = ask.resent.as_ref().map_or(0, |r| r.from + r.messages.len());
            return Err(ApiError::bad_request(
                "invalid_messages",
                format!(
                    "messages[{}] answers tool call `{}`, which the chat's last reply did not make",
                    from + index,
                    result.tool_call_id
                ),
            ));
        }
    }
    Ok(())
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
