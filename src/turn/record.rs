//! The record of a turn: what is written once upstream has answered, owned so that a
//! streamed turn can write it on its own after its client has gone. One round trip: the
//! chat's turn (with the chat's usage, the window and the kept answer) and the caller's
//! counters, two scripts sent together.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::compact::{compaction_id, count_alone, reported, sent_weight};
use super::prepare::{release, release_claim, Ready};
use super::{Answered, Ask, CompactionCost, Keep, ResponsesCall, TurnEngine};
use crate::budget::{self, Window};
use crate::chat::{referable_ids, Asked, ChatId, Exchange, StoredResponse, Tenant, Turn};
use crate::clock::{now_ms, UtcDay};
use crate::store::{
    Expect, KeptAnswer, Recorded, Spent, Store, StoredItems, TurnContext, TurnExtras, Written,
};

/// What a turn writes when upstream has answered, owned so that a streamed turn can write
/// it on its own.
pub(super) struct Record {
    store: Arc<dyn Store>,
    tenant: Tenant,
    pub chat: Option<(ChatId, TurnContext, Window)>,
    /// The request gave the chat a new prompt (the context's), stored with the turn.
    new_prompt: bool,
    /// The turn goes to a new chain that starts with the history read (a branch).
    copies_history: bool,
    /// The turn makes a new chain (a branch, or a chain's first turn): no chat it read.
    new_chain: bool,
    /// The turn replaces this one and every turn after it (a regenerate, an edit).
    replaces: Option<String>,
    /// The chat's newest turn, which this turn must follow (its read claimed it).
    follows: Option<String>,
    /// The chat the read claimed `follows` in.
    read_chat: Option<ChatId>,
    /// A Responses turn: its input items, its answer's id and the fields set on it.
    responses: Option<ResponsesRecord>,
    global_prompt: String,
    turn_id: String,
    model: String,
    ip: Option<String>,
    pub keep: Option<Keep>,
    deadline: Instant,
    /// What compacting the chat's window cost, when this turn did.
    pub compaction: Option<CompactionCost>,
}

impl Record {
    /// The record of `ask`'s turn, taking over what its read found.
    pub fn new(engine: &TurnEngine, ask: &Ask<'_>, ready: Ready) -> Record {
        let global_prompt = engine.global_prompt(&ready.context).to_owned();
        let store = ask.responses.as_ref().is_none_or(|r| r.store);
        // Where the turn is kept: a new chain (a branch copies the history read), or the
        // chat read.
        let copies_history = ready.chain.is_some() && ask.chat.is_some();
        let kept_in = ready
            .chain
            .clone()
            .or_else(|| ask.chat.cloned())
            .filter(|_| store);
        Record {
            store: engine.store.clone(),
            tenant: ask.tenant.clone(),
            chat: kept_in.map(|chat| (chat, ready.context, ready.window)),
            new_prompt: ready.new_prompt,
            copies_history,
            new_chain: ready.chain.is_some(),
            replaces: ready.replaces.clone(),
            follows: ready.follows.clone(),
            read_chat: ask.chat.cloned(),
            responses: ask.responses.as_ref().map(|responses| ResponsesRecord {
                input: responses.input.clone(),
                answer_id: ready.answer_id.clone().unwrap_or_default(),
                fields: responses.fields.clone(),
                call: responses.call,
            }),
            global_prompt,
            turn_id: ready.turn_id,
            model: ask.model.to_owned(),
            ip: engine.limited_ip(ask).map(str::to_owned),
            keep: ask.keep.clone(),
            deadline: ask.deadline,
            compaction: ready.compaction.clone(),
        }
    }

    /// Stores the turn (for a chat) and counts its tokens, in one round trip; says whether
    /// the turn was stored. A failure is logged, never raised: the answer is paid for and
    /// goes to the caller either way.
    pub async fn store(
        &self,
        answered: &Answered,
        asked: Vec<Asked>,
        kept_answer: Option<String>,
    ) -> bool {
        let kept = kept_answer.as_deref().and_then(|answer| {
            self.keep.as_ref().map(|keep| KeptAnswer {
                key: &keep.key,
                fingerprint: &keep.fingerprint,
                answer,
            })
        });
        let day = UtcDay::today();
        // The turn, moved out of what the request asked and what upstream answered.
        let turn = self.chat.as_ref().map(|(chat, context, window)| {
            // What the turn weighs as history: its input, all of it (the once-only part of
            // its request is not sent again).
            let request = budget::Request {
                global_prompt: &self.global_prompt,
                chat_prompt: context.chat_prompt.as_deref(),
                asked: &asked,
                besides: self
                    .responses
                    .as_ref()
                    .map_or(0, |responses| budget::besides(&responses.input)),
                fixed: 0,
                // Not planned again: the window is the one the request sent.
                from: window.start,
                compacted: budget::compacted(context, window).map_or(0, sent_weight),
            };
            let tokens = budget::turn_tokens(context, &request, window, &answered.usage);
            // What the write needs of the chat (`store/mod.rs`): nothing of a chain it
            // makes; the turns it read, exactly, for a redo; the newest turn still newest,
            // for a turn that follows it; else only that the chat was not cleared or
            // deleted since.
            let expect = match (&self.replaces, &self.follows) {
                _ if self.new_chain => Expect::Nothing,
                (Some(_), _) => Expect::Exactly(context.version),
                (None, Some(newest)) => Expect::Follows {
                    seen: context.version,
                    newest,
                },
                (None, None) => Expect::Since(context.version),
            };
            let extras = TurnExtras {
                expect,
                claimed: self.follows.as_deref(),
                // The history as read, cut before a redo's first replaced turn, or a
                // branch's copied history (its turns come first, into a new chain).
                after: match self.copies_history || self.new_chain {
                    true => None,
                    false => context.history.last().and_then(|turn| turn.id.as_deref()),
                },
                window_start: window.moved_to.as_deref(),
                compacted: budget::compacted(context, window),
                also_spent: self.compaction.as_ref().map_or((0, 0, 0), |cost| {
                    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
                    (
                        clamp(cost.prompt_tokens),
                        clamp(cost.completion_tokens),
                        clamp(cost.cached_tokens),
                    )
                }),
                answer: kept,
                chat_prompt: context.chat_prompt.as_deref().filter(|_| self.new_prompt),
                prefix: if self.copies_history {
                    &context.history
                } else {
                    &[]
                },
                replaces: self.replaces.as_deref(),
                // A branch of a temporary chat (a new chain holding its history) is as
                // temporary as the chat it copies.
                temporary: context.temporary,
                has_prompt: context.chat_prompt.is_some(),
            };
            (chat, tokens, extras)
        });
        let turn = turn.map(|(chat, tokens, extras)| {
            let exchange = self.responses.as_ref().and_then(|responses| {
                // Parsed once, so what is stored is compact whatever upstream's layout.
                let response: Value = serde_json::from_str(answered.raw.as_ref()?.get()).ok()?;
                Some(Box::new(Exchange {
                    input: responses.input.clone(),
                    response: StoredResponse::from_value(&response),
                }))
            });
            let turn = Turn {
                id: Some(self.turn_id.clone()),
                asked,
                assistant: answered.reply.clone(),
                calls: answered.calls.clone(),
                exchange,
                tokens: Some(tokens),
            };
            (chat, turn, extras)
        });
        // Where its output items are, for a later `item_reference` to them.
        let item_ids: Vec<String> = turn
            .as_ref()
            .and_then(|(_, turn, _)| turn.exchange.as_ref())
            .map(|exchange| referable_ids(exchange.output()))
            .unwrap_or_default();
        let spent = Spent {
            id: &self.turn_id,
            model: &self.model,
            prompt_tokens: answered.usage.prompt_tokens,
            completion_tokens: answered.usage.completion_tokens,
            cached_tokens: answered.usage.cached_tokens,
            day: &day,
            ip: self.ip.as_deref(),
            // A stateless call keeps its answer with its caller's counters.
            answer: match self.chat {
                Some(_) => None,
                None => kept,
            },
            // A temporary chat is never listed.
            listed: self
                .chat
                .as_ref()
                .filter(|(_, context, _)| context.temporary.is_none())
                .map(|(chat, ..)| (chat, now_ms())),
            items: self
                .responses
                .as_ref()
                .filter(|_| !item_ids.is_empty())
                .map(|responses| StoredItems {
                    response: &responses.answer_id,
                    ids: &item_ids,
                    temporary: self
                        .chat
                        .as_ref()
                        .and_then(|(_, context, _)| context.temporary),
                }),
        };
        let record = self.store.record(
            &self.tenant,
            turn.as_ref()
                .map(|(chat, turn, extras)| (*chat, turn, *extras)),
            spent,
        );
        // A compaction's tokens are the caller's too, under the model that made them:
        // counted beside the turn's, in the same round trip (only a turn that compacted
        // waits on the two together).
        let Recorded { stored, counted } = match &self.compaction {
            None => record.await,
            Some(cost) => {
                let id = compaction_id(&self.turn_id);
                let spent = cost.spent(&id, &day, self.ip.as_deref());
                let compaction = self.store.add_usage(&self.tenant, spent);
                let (recorded, compaction) = tokio::join!(record, compaction);
                if let Err(error) = compaction {
                    tracing::error!(%error, "a compaction's tokens could not be counted");
                }
                recorded
            }
        };
        // The kept answer goes with the chat's write, or with the counters of a stateless
        // call: when that write failed, the key is freed, so that a retry is asked again
        // rather than told for the claim's whole life that this request is in progress.
        let kept_with = match self.chat {
            Some(_) => stored.is_ok(),
            None => counted.is_ok(),
        };
        if let Err(error) = counted {
            tracing::error!(%error, "the turn's tokens could not be counted");
        }
        if !kept_with {
            self.release().await;
        }
        match stored {
            Ok(Written::Stored) => true,
            Ok(refused) => {
                tracing::warn!(
                    refused = ?refused,
                    "the chat changed since the turn's read in a way the turn cannot follow; \
                     answering it unstored"
                );
                false
            }
            Err(error) => {
                tracing::error!(
                    error = %error,
                    "the answer was paid for but could not be stored; answering it unstored"
                );
                false
            }
        }
    }

    /// The proxy's id of a Responses turn's answer.
    pub fn answer_id(&self) -> Option<&str> {
        self.responses.as_ref().map(|r| r.answer_id.as_str())
    }

    /// Upstream's response made the proxy's: its id, and the fields the request sets on
    /// it. Anything else passes as upstream sent it.
    pub fn own_answer(&self, raw: Box<RawValue>) -> Box<RawValue> {
        let raw = self.named(raw);
        match &self.compaction {
            Some(cost) => reported(raw, cost, self.responses.is_some()),
            None => raw,
        }
    }

    /// A stream's chunk or event that carries the usage, with the compaction's cost in it.
    pub fn own_usage(&self, raw: Box<RawValue>) -> Box<RawValue> {
        match &self.compaction {
            Some(cost) => reported(raw, cost, self.responses.is_some()),
            None => raw,
        }
    }

    /// A response with the proxy's id, and the fields the request sets on it.
    fn named(&self, raw: Box<RawValue>) -> Box<RawValue> {
        // A compaction is upstream's as it came: the proxy keeps nothing it could name.
        let Some(responses) = self
            .responses
            .as_ref()
            .filter(|r| r.call == ResponsesCall::Create)
        else {
            return raw;
        };
        let Ok(Value::Object(mut response)) = serde_json::from_str::<Value>(raw.get()) else {
            return raw;
        };
        response.insert("id".to_owned(), Value::String(responses.answer_id.clone()));
        for (field, value) in &responses.fields {
            response.insert(field.clone(), value.clone());
        }
        serde_json::value::to_raw_value(&response).unwrap_or(raw)
    }

    /// Counts what a turn that ends unstored spent (a background run cancelled while it
    /// streamed), once, by the turn's id (a compaction it made is counted apart).
    pub async fn count_spent(&self, usage: &crate::upstream::wire::Usage) {
        let day = UtcDay::today();
        let spent = Spent {
            id: &self.turn_id,
            model: &self.model,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            day: &day,
            ip: self.ip.as_deref(),
            answer: None,
            listed: None,
            items: None,
        };
        if let Err(error) = self.store.add_usage(&self.tenant, spent).await {
            tracing::warn!(%error, "what a stopped turn spent could not be counted");
        }
    }

    /// Counts the compaction's cost of a turn that failed after it, when it made one.
    pub async fn count_compaction(&self) {
        if let Some(cost) = &self.compaction {
            let (store, ip) = (&*self.store, self.ip.as_deref());
            count_alone(store, &self.tenant, cost, &self.turn_id, ip).await;
        }
    }

    /// Frees what the turn's read claimed (its `Idempotency-Key`, the chat's newest turn)
    /// after a failure.
    pub async fn release(&self) {
        let claim = async {
            if let (Some(chat), Some(_)) = (&self.read_chat, &self.follows) {
                release_claim(&*self.store, &self.tenant, chat, &self.turn_id).await;
            }
        };
        let key = release(
            &*self.store,
            &self.tenant,
            self.keep.as_ref(),
            self.deadline,
        );
        tokio::join!(claim, key);
    }
}

/// What a Responses turn keeps besides a turn's messages.
struct ResponsesRecord {
    input: Vec<Value>,
    answer_id: String,
    fields: Map<String, Value>,
    call: ResponsesCall,
}
