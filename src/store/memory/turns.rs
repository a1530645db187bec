//! A chat's turns in memory: the read, with its version and its claim, and the writes,
//! each checked with the write model's own decision (`Expect::check`).

use std::time::Instant;

use super::idempotency::keep;
use super::{key, MemoryStore};
use crate::chat::{auto_title, ChatId, Tenant, Turn};
use crate::store::{
    record_apart, Expect, Recorded, Rewritten, Spent, StoreError, TailClaim, TurnContext,
    TurnExtras, TurnRewrite, Turns, Written,
};

#[async_trait::async_trait]
impl Turns for MemoryStore {
    async fn turn_context(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        claim: Option<TailClaim<'_>>,
    ) -> Result<TurnContext, StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        let kept = self.found(&mut state, &chat);
        let found = kept.found();
        let mut claimed = false;
        if let (Some(claim), Some(newest)) = (claim, &kept.newest) {
            if claim.newest.is_none_or(|wanted| wanted == newest) {
                let now = Instant::now();
                // A claim on another turn is spent: that turn is no longer the newest.
                let free = match state.claims.get(&chat) {
                    None => true,
                    Some((turn, claimant, until)) => {
                        turn != newest || claimant == claim.claimant || *until <= now
                    }
                };
                if free {
                    let held = (newest.clone(), claim.claimant.to_owned(), now + claim.hold);
                    state.claims.insert(chat.clone(), held);
                    claimed = true;
                }
            }
        }
        let global_prompt = state.global_prompts.get(tenant).cloned();
        let live = self.live(&mut state, &chat);
        let chat_prompt = live.as_ref().and_then(|c| c.prompt.clone());
        let window_start = live.as_ref().and_then(|c| c.window.clone());
        let compacted = live
            .as_ref()
            .and_then(|c| c.compacted.clone())
            .filter(|compacted| compacted.precedes(window_start.as_deref()));
        let conversation = live.as_ref().is_some_and(|c| c.created_at.is_some());
        let temporary = live.as_ref().and_then(|c| c.temporary);
        Ok(TurnContext {
            global_prompt,
            chat_prompt,
            history: self.newest_turns(live),
            window_start,
            compacted,
            conversation,
            version: found.seen(),
            claimed,
            temporary,
        })
    }

    async fn release_claim(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        claimant: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        if state
            .claims
            .get(&chat)
            .is_some_and(|(_, holder, _)| holder == claimant)
        {
            state.claims.remove(&chat);
        }
        Ok(())
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
    ) -> Result<Written, StoreError> {
        let (max_messages, max_bytes) = (
            self.settings.max_history_messages,
            self.settings.max_chat_bytes,
        );
        let mut state = self.state();
        let chat = key(tenant, chat);
        // One process, one lock: a write cannot be in doubt here, but the contract is the
        // same as Redis's, so a turn whose id is stored is not stored again.
        let stored = self.live(&mut state, &chat).is_some_and(|c| {
            turn.id.is_some() && c.turns.iter().any(|(kept, _)| kept.id == turn.id)
        });
        if stored {
            return Ok(Written::Stored);
        }
        let kept = self.found(&mut state, &chat);
        let found = kept.found();
        let verdict = extras.expect.check(&found);
        if verdict != Written::Stored {
            return Ok(verdict);
        }
        // A temporary chat that expired since the read is made again temporary.
        if let Some(ttl) = extras.temporary {
            self.live(&mut state, &chat);
            state
                .chats
                .entry(chat.clone())
                .or_default()
                .temporary
                .get_or_insert(ttl);
        }
        let entry = self.touched(&mut state, &chat);
        let temporary = entry.temporary;
        if let Some(replaced) = extras.replaces {
            let at = entry
                .turns
                .iter()
                .position(|(kept, _)| kept.id.as_deref() == Some(replaced));
            match at {
                Some(at) => entry.cut(at),
                None => return Ok(Written::Moved),
            }
        }
        if entry.auto_title.is_none() {
            entry.auto_title = extras
                .prefix
                .first()
                .and_then(auto_title)
                .or_else(|| auto_title(turn));
        }
        for earlier in extras.prefix {
            entry.push(earlier.clone());
        }
        entry.push(turn.clone());
        while entry.turns.len() > 1 && (entry.messages > max_messages || entry.bytes > max_bytes) {
            entry.cut_oldest();
        }
        if let Some(start) = extras.window_start {
            entry.window = Some(start.to_owned());
            entry.compacted = extras.compacted.cloned();
        }
        if let Some(prompt) = extras.chat_prompt {
            entry.prompt = Some(prompt.to_owned());
        }
        let tokens = turn.tokens.unwrap_or_default();
        entry.usage.turns += 1;
        let (also_prompt, also_completion, also_cached) = extras.also_spent;
        entry.usage.prompt_tokens += u64::from(tokens.prompt) + u64::from(also_prompt);
        entry.usage.completion_tokens += u64::from(tokens.completion) + u64::from(also_completion);
        entry.usage.cached_tokens += u64::from(tokens.cached) + u64::from(also_cached);
        entry.version = found.next_version();
        if let (Some(claimed), Some(id)) = (extras.claimed, &turn.id) {
            let mine = state
                .claims
                .get(&chat)
                .is_some_and(|(turn, claimant, _)| turn == claimed && claimant == id);
            if mine {
                state.claims.remove(&chat);
            }
        }
        if let Some(kept) = extras.answer {
            keep(&mut state, tenant, kept, temporary);
        }
        Ok(Written::Stored)
    }

    async fn record(
        &self,
        tenant: &Tenant,
        turn: Option<(&ChatId, &Turn, TurnExtras<'_>)>,
        spent: Spent<'_>,
    ) -> Recorded {
        record_apart(self, tenant, turn, spent).await
    }

    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError> {
        let mut state = self.state();
        let chat = self.live(&mut state, &key(tenant, chat));
        Ok(self.newest_turns(chat))
    }

    async fn rewrite_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        rewrite: TurnRewrite<'_>,
        seen: u64,
    ) -> Result<Rewritten, StoreError> {
        // Nothing is sealed here: the turns around it need no new seal.
        let (turn, with) = (rewrite.id, rewrite.with);
        let mut state = self.state();
        let chat = key(tenant, chat);
        let kept = self.found(&mut state, &chat);
        let found = kept.found();
        if Expect::Exactly(seen).check(&found) != Written::Stored {
            return Ok(Rewritten::Moved);
        }
        let Some(entry) = self.live(&mut state, &chat) else {
            return Ok(Rewritten::Missing);
        };
        let Some(at) = entry
            .turns
            .iter()
            .position(|(kept, _)| kept.id.as_deref() == Some(turn))
        else {
            return Ok(Rewritten::Missing);
        };
        entry.replace(at, with.cloned());
        if rewrite.drops_compacted {
            entry.compacted = None;
        }
        entry.version = found.next_version();
        Ok(Rewritten::Done)
    }

    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        let raised = self.raise_floor(&mut state, &chat);
        let entry = self.touched(&mut state, &chat);
        entry.cut(0);
        entry.window = None;
        entry.compacted = None;
        entry.auto_title = None;
        entry.version = raised;
        Ok(())
    }
}
