//! The record of a turn: what is written once upstream has answered, owned so that a
//! streamed turn can write it on its own after its client has gone. One round trip: the
//! chat's turn (with the chat's usage, the window and the kept answer) and the caller's
//! counters, two scripts sent together.

use std::sync::Arc;

use tokio::time::Instant;

use super::prepare::{release, Ready};
use super::{Answered, Ask, Keep, TurnEngine};
use crate::budget::{self, Window};
use crate::chat::{Asked, ChatId, Tenant, Turn};
use crate::clock::UtcDay;
use crate::store::{KeptAnswer, Recorded, Spent, Store, TurnContext, TurnExtras};

/// What a turn writes when upstream has answered, owned so that a streamed turn can write
/// it on its own.
pub(super) struct Record {
    store: Arc<dyn Store>,
    tenant: Tenant,
    pub chat: Option<(ChatId, TurnContext, Window)>,
    /// The request gave the chat a new prompt (the context's), stored with the turn.
    new_prompt: bool,
    global_prompt: String,
    turn_id: String,
    model: String,
    ip: Option<String>,
    pub keep: Option<Keep>,
    deadline: Instant,
}

impl Record {
    /// The record of `ask`'s turn, taking over what its read found.
    pub fn new(engine: &TurnEngine, ask: &Ask<'_>, ready: Ready) -> Record {
        let global_prompt = engine.global_prompt(&ready.context).to_owned();
        Record {
            store: engine.store.clone(),
            tenant: ask.tenant.clone(),
            chat: ask
                .chat
                .map(|chat| (chat.clone(), ready.context, ready.window)),
            new_prompt: ready.new_prompt,
            global_prompt,
            turn_id: ready.turn_id,
            model: ask.model.to_owned(),
            ip: engine.limited_ip(ask).map(str::to_owned),
            keep: ask.keep.clone(),
            deadline: ask.deadline,
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
            let request = budget::Request {
                global_prompt: &self.global_prompt,
                chat_prompt: context.chat_prompt.as_deref(),
                asked: &asked,
            };
            let tokens = budget::turn_tokens(context, &request, window, &answered.usage);
            let extras = TurnExtras {
                window_start: window.moved_to.as_deref(),
                answer: kept,
                chat_prompt: context.chat_prompt.as_deref().filter(|_| self.new_prompt),
            };
            (chat, tokens, extras)
        });
        let turn = turn.map(|(chat, tokens, extras)| {
            let turn = Turn {
                id: Some(self.turn_id.clone()),
                asked,
                assistant: answered.reply.clone(),
                calls: answered.calls.clone(),
                tokens: Some(tokens),
            };
            (chat, turn, extras)
        });
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
        };
        let Recorded { stored, counted } = self
            .store
            .record(
                &self.tenant,
                turn.as_ref()
                    .map(|(chat, turn, extras)| (*chat, turn, *extras)),
                spent,
            )
            .await;
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
            Ok(()) => true,
            Err(error) => {
                tracing::error!(
                    error = %error,
                    "the answer was paid for but could not be stored; answering it unstored"
                );
                false
            }
        }
    }

    pub async fn release(&self) {
        release(
            &*self.store,
            &self.tenant,
            self.keep.as_ref(),
            self.deadline,
        )
        .await;
    }
}
