//! Compaction of a stored chat (`COMPACT_AT_TOKENS`): when a turn's window moves, the turns
//! it moves past (with the compaction that stood for the turns before them) are compacted
//! by one more upstream call before the turn's own, and what it answers is sent before the
//! window's turns, in the same place, until the window moves again, so the cached prefix
//! holds from turn to turn. It is kept with the window's start in the turn's one write.
//!
//! The chat door's compaction is a summary (a Chat Completions call that asks
//! `COMPACT_PROMPT` after the turns); the Responses door's is upstream's own
//! `/responses/compact` of their items. A call that fails, or answers nothing usable, leaves
//! the turn as without compaction: its window moved, the turns before it cut.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::prepare::Ready;
use super::sent::{compacted_items, history_messages, window_items};
use super::{Ask, ResponsesCall, TurnEngine};
use crate::chat::{
    is_compaction, summary_message, text_of, turn_items, Compacted, Compaction, Tenant, Turn,
};
use crate::clock::{now_ms, UtcDay};
use crate::request_log::RequestLog;
use crate::store::{Spent, Store};
use crate::tokens::{estimate, estimate_message, PER_MESSAGE};
use crate::upstream::wire::{ChatRequest, Message, UserContentOut};
use crate::upstream::UpstreamError;

/// What compacting the window cost the turn that did it: upstream's tokens, and the time.
/// Counted to the caller (under the model that compacted) whether or not the compaction
/// could be kept, and whether or not the turn's own call then succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionCost {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// How long the call took, in milliseconds.
    pub ms: u64,
    /// How many messages (items, on the Responses door) the compaction stands for.
    pub messages: u32,
    /// It is sent with the turn, and kept: false when it came out unusable or too long.
    pub kept: bool,
}

/// What a compaction weighs when sent, in tokens.
pub(super) fn sent_weight(compacted: &Compacted) -> u32 {
    compacted.tokens.saturating_add(PER_MESSAGE)
}

impl TurnEngine {
    /// Compacts what the turn's window moved past, when stored chats compact and it did;
    /// `ready.context.compacted` becomes what is sent and kept from now on (`None` when
    /// the window moved without one). Says what it cost, when a compaction was made.
    pub(super) async fn compact(
        &self,
        ready: &mut Ready,
        ask: &Ask<'_>,
        log: &mut RequestLog,
    ) -> Option<CompactionCost> {
        ready.window.moved_to.as_ref()?;
        // What stood for the turns before the old window stands for none before the new.
        let previous = ready.context.compacted.take();
        if let Some(previous) = &previous {
            ready.window.tokens = ready.window.tokens.saturating_sub(sent_weight(previous));
        }
        let settings = self.settings.compaction.as_ref()?;
        // Only a turn kept in the chat it read: a branch starts a chain whose window is its
        // own, and a call that keeps nothing moves nothing.
        // Nor a Responses input that brings its own compaction item: it stands for all the
        // history, which is not sent.
        let kept_in_read_chat = ask.chat.is_some()
            && ready.chain.is_none()
            && ask.responses.as_ref().is_none_or(|r| {
                r.store && r.call == ResponsesCall::Create && !r.input.iter().any(is_compaction)
            });
        let window = &ready.window;
        let moved_past = &ready.context.history[window.moved_from..window.start];
        if !kept_in_read_chat || moved_past.is_empty() {
            return None;
        }
        let model = settings.model.as_deref().unwrap_or(ask.model);
        let messages = previous.as_ref().map_or(0, |p| p.messages) + count(moved_past, ask);
        let started = Instant::now();
        // Upstream's answer (billed) and what could be made of it.
        let made = match &ask.responses {
            Some(_) => {
                let input = compaction_input(previous.as_ref(), moved_past);
                let request = json!({"model": model, "input": input});
                log.upstream(self.upstream.compact(&request, ask.deadline))
                    .await
                    .map(|made| {
                        let items = compacted_output(&made.raw).map(|items| {
                            let tokens = items.iter().map(item_weight).sum();
                            (Compaction::Items(items), tokens)
                        });
                        (items, made.usage)
                    })
            }
            None => {
                let mut sent = Vec::with_capacity(2 + moved_past.len() * 2);
                if let Some(Compaction::Summary(summary)) = previous.as_ref().map(|p| &p.with) {
                    sent.push(Message::System {
                        content: Cow::Owned(summary_message(summary)),
                    });
                }
                history_messages(moved_past, true, &mut sent);
                sent.push(Message::User {
                    content: UserContentOut::Text(Cow::Borrowed(&settings.prompt)),
                });
                let request = ChatRequest::whole(model, &sent);
                log.upstream(self.upstream.chat(&request, ask.deadline))
                    .await
                    .map(|made| {
                        let summary = match made.content.filter(|s| !s.trim().is_empty()) {
                            Some(summary) => {
                                let tokens = estimate(&summary_message(&summary));
                                Ok((Compaction::Summary(summary), tokens))
                            }
                            None => Err(UpstreamError::Unreadable(
                                "the summary's answer holds no text".to_owned(),
                            )),
                        };
                        (summary, made.usage)
                    })
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        let (made, usage) = match made {
            Ok(made) => made,
            // Nothing billed: nothing to count.
            Err(error) => {
                tracing::warn!(
                    %error,
                    compaction_ms = ms,
                    "compacting the chat's window failed; its oldest turns are cut instead"
                );
                return None;
            }
        };
        let mut cost = CompactionCost {
            model: model.to_owned(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            ms,
            messages,
            kept: false,
        };
        let (with, tokens) = match made {
            Ok(made) => made,
            Err(error) => {
                tracing::warn!(
                    %error,
                    compaction_ms = ms,
                    compaction_prompt_tokens = cost.prompt_tokens,
                    "the chat's compaction answered nothing usable; its oldest turns are cut instead"
                );
                return Some(cost);
            }
        };
        let compacted = Compacted {
            before: window.moved_to.clone().unwrap_or_default(),
            with,
            messages,
            tokens,
            model: model.to_owned(),
            created_at: now_ms() / 1000,
        };
        // The window was planned with room for it. One that leaves the turns to come less
        // than an eighth of COMPACT_AT_TOKENS would make every next turn move the window and
        // compact again: the turn goes without it, cut alone (a Responses compaction keeps
        // the user's messages whole, and grows with them; the next one starts afresh).
        let weight = sent_weight(&compacted);
        let room = settings.at_tokens - settings.at_tokens / 8;
        if ready.window.tokens.saturating_add(weight) > room {
            tracing::warn!(
                compaction_tokens = weight,
                window_tokens = ready.window.tokens,
                compaction_prompt_tokens = cost.prompt_tokens,
                "the chat's compaction came out too long to keep; its oldest turns are cut instead"
            );
            return Some(cost);
        }
        ready.window.tokens += weight;
        cost.kept = true;
        tracing::info!(
            compaction_prompt_tokens = cost.prompt_tokens,
            compaction_completion_tokens = cost.completion_tokens,
            compaction_ms = cost.ms,
            compacted_messages = messages,
            compaction_model = model,
            "compacted the turns the chat's window moved past"
        );
        ready.context.compacted = Some(compacted);
        Some(cost)
    }

    /// Counts the compaction's cost of a turn that failed after it, when it made one.
    pub(super) async fn count_compaction(&self, ask: &Ask<'_>, ready: &Ready) {
        if let Some(cost) = &ready.compaction {
            let ip = self.limited_ip(ask);
            count_alone(&*self.store, ask.tenant, cost, &ready.turn_id, ip).await;
        }
    }
}

/// Counts a compaction's cost to the caller on its own, for a turn that failed after it
/// (nothing else of the turn is written); a failure to count is logged.
pub(super) async fn count_alone(
    store: &dyn Store,
    tenant: &Tenant,
    cost: &CompactionCost,
    turn_id: &str,
    ip: Option<&str>,
) {
    let day = UtcDay::today();
    let id = compaction_id(turn_id);
    if let Err(error) = store.add_usage(tenant, cost.spent(&id, &day, ip)).await {
        tracing::error!(%error, "a compaction's tokens could not be counted");
    }
}

/// The id a turn's compaction is counted under (its own: the turn's tokens are counted
/// under the turn's), so that a count sent twice counts once.
pub(super) fn compaction_id(turn_id: &str) -> String {
    format!("{turn_id}-compaction")
}

impl CompactionCost {
    /// Its tokens as a count for the caller, under the model that compacted.
    pub(super) fn spent<'a>(
        &'a self,
        id: &'a str,
        day: &'a UtcDay,
        ip: Option<&'a str>,
    ) -> Spent<'a> {
        Spent {
            id,
            model: &self.model,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            day,
            ip,
            answer: None,
            listed: None,
            items: None,
        }
    }
}

/// How many messages (the chat door) or items (the Responses door) `turns` hold.
fn count(turns: &[Turn], ask: &Ask<'_>) -> u32 {
    let n: usize = match ask.responses {
        Some(_) => {
            let mut items = Vec::new();
            for turn in turns {
                turn_items(turn, true, &mut items);
            }
            items.len()
        }
        None => turns.iter().map(Turn::messages).sum(),
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The input a Responses compaction is asked for: what stood for the turns before, then
/// the turns' items.
fn compaction_input(previous: Option<&Compacted>, turns: &[Turn]) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(previous) = previous {
        compacted_items(previous, &mut items);
    }
    window_items(turns, false, &mut items);
    items
}

/// The items of upstream's `response.compaction`, which must hold one.
fn compacted_output(raw: &RawValue) -> Result<Vec<Value>, UpstreamError> {
    let answer: Value =
        serde_json::from_str(raw.get()).map_err(|e| UpstreamError::Unreadable(e.to_string()))?;
    match answer.get("output") {
        Some(Value::Array(items)) if items.iter().any(is_compaction) => Ok(items.clone()),
        _ => Err(UpstreamError::Unreadable(
            "the compaction's output holds no compaction item".to_owned(),
        )),
    }
}

impl CompactionCost {
    /// As a usage's `compaction` field: in the Responses API's words (`input_tokens`,
    /// `items`) or in Chat Completions' (`prompt_tokens`, `messages`).
    pub fn to_json(&self, responses_api: bool) -> Value {
        let total = self.prompt_tokens + self.completion_tokens;
        match responses_api {
            true => json!({
                "input_tokens": self.prompt_tokens,
                "output_tokens": self.completion_tokens,
                "total_tokens": total,
                "ms": self.ms,
                "items": self.messages,
            }),
            false => json!({
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": total,
                "ms": self.ms,
                "messages": self.messages,
            }),
        }
    }
}

/// An answer (a `chat.completion`, a response, a stream's usage chunk or its
/// `response.completed` event) with the compaction's cost in its usage.
pub(super) fn reported(
    raw: Box<RawValue>,
    cost: &CompactionCost,
    responses_api: bool,
) -> Box<RawValue> {
    let Ok(Value::Object(mut answer)) = serde_json::from_str::<Value>(raw.get()) else {
        return raw;
    };
    let usage = match answer.get_mut("response") {
        Some(response) => response.get_mut("usage"),
        None => answer.get_mut("usage"),
    };
    match usage {
        Some(Value::Object(usage)) => {
            usage.insert("compaction".to_owned(), cost.to_json(responses_api));
        }
        _ => return raw,
    }
    serde_json::value::to_raw_value(&answer).unwrap_or(raw)
}

/// What an item of a compaction weighs when sent: a message by its text, any other item
/// (the compaction item itself) by its JSON.
fn item_weight(item: &Value) -> u32 {
    match item.get("content") {
        Some(content) if item["role"].is_string() => estimate_message(&text_of(content)),
        _ => estimate(&item.to_string()),
    }
}
