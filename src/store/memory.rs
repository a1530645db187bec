//! The in-memory store: the same contract as Redis, for local runs and unit tests.
//!
//! It lives and dies with one process, so on Lambda every instance would see different
//! chats; `main` warns loudly when it is used.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::{RequestCount, Store, StoreError, Turn, TurnContext, RATE_WINDOW};
use crate::auth::Tenant;
use crate::config::StoreSettings;
use crate::routes::ChatId;

pub struct MemoryStore {
    settings: StoreSettings,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    global_prompts: HashMap<Tenant, String>,
    chats: HashMap<(Tenant, ChatId), Chat>,
    /// Requests per caller in its current window, and when the window ends.
    requests: HashMap<String, (u64, Instant)>,
}

type ChatKey = (Tenant, ChatId);

#[derive(Default)]
struct Chat {
    prompt: Option<String>,
    /// Each turn with its size as Redis would store it (its JSON's length).
    turns: VecDeque<(Turn, usize)>,
    bytes: usize,
    expires_at: Option<Instant>,
}

impl MemoryStore {
    pub fn new(settings: StoreSettings) -> Self {
        MemoryStore {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written turn (each write is one
        // push), so the data is still sound and the poison can be ignored.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The chat if it exists and has not expired; an expired chat is dropped on sight.
    fn live<'a>(&self, state: &'a mut State, chat: &ChatKey) -> Option<&'a mut Chat> {
        let now = Instant::now();
        if state
            .chats
            .get(chat)
            .is_some_and(|c| c.expires_at.is_some_and(|at| at <= now))
        {
            state.chats.remove(chat);
        }
        state.chats.get_mut(chat)
    }

    /// The chat for a write, created if needed, with its expiry renewed.
    fn touched<'a>(&self, state: &'a mut State, chat: &ChatKey) -> &'a mut Chat {
        self.live(state, chat);
        let entry = state.chats.entry(chat.clone()).or_default();
        entry.expires_at = self.settings.chat_ttl.map(|ttl| Instant::now() + ttl);
        entry
    }

    fn newest_turns(&self, chat: Option<&mut Chat>) -> Vec<Turn> {
        chat.map(|c| {
            let skip = c.turns.len().saturating_sub(self.settings.max_turns());
            c.turns
                .iter()
                .skip(skip)
                .map(|(turn, _)| turn.clone())
                .collect()
        })
        .unwrap_or_default()
    }
}

fn key(tenant: &Tenant, chat: &ChatId) -> ChatKey {
    (tenant.clone(), chat.clone())
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn global_prompt(&self, tenant: &Tenant) -> Result<Option<String>, StoreError> {
        Ok(self.state().global_prompts.get(tenant).cloned())
    }

    async fn set_global_prompt(&self, tenant: &Tenant, content: &str) -> Result<(), StoreError> {
        self.state()
            .global_prompts
            .insert(tenant.clone(), content.to_owned());
        Ok(())
    }

    async fn chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError> {
        let mut state = self.state();
        Ok(self
            .live(&mut state, &key(tenant, chat))
            .and_then(|c| c.prompt.clone()))
    }

    async fn set_chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        content: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        self.touched(&mut state, &key(tenant, chat)).prompt = Some(content.to_owned());
        Ok(())
    }

    async fn turn_context(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<TurnContext, StoreError> {
        let mut state = self.state();
        let global_prompt = state.global_prompts.get(tenant).cloned();
        let chat = self.live(&mut state, &key(tenant, chat));
        let chat_prompt = chat.as_ref().and_then(|c| c.prompt.clone());
        Ok(TurnContext {
            global_prompt,
            chat_prompt,
            history: self.newest_turns(chat),
        })
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let size = serde_json::to_string(turn)
            .map_err(|e| StoreError::new(format!("cannot encode a turn: {e}")))?
            .len();
        let (max_turns, max_bytes) = (self.settings.max_turns(), self.settings.max_chat_bytes);
        let mut state = self.state();
        let chat = self.touched(&mut state, &key(tenant, chat));
        // One process, one lock: a write cannot be in doubt here, but the contract is the
        // same as Redis's, so a turn whose id is stored is not stored again.
        if turn.id.is_some() && chat.turns.iter().any(|(kept, _)| kept.id == turn.id) {
            return Ok(());
        }
        chat.turns.push_back((turn.clone(), size));
        chat.bytes += size;
        while chat.turns.len() > 1 && (chat.turns.len() > max_turns || chat.bytes > max_bytes) {
            if let Some((_, dropped)) = chat.turns.pop_front() {
                chat.bytes -= dropped;
            }
        }
        Ok(())
    }

    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError> {
        let mut state = self.state();
        let chat = self.live(&mut state, &key(tenant, chat));
        Ok(self.newest_turns(chat))
    }

    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = self.touched(&mut state, &key(tenant, chat));
        chat.turns.clear();
        chat.bytes = 0;
        Ok(())
    }

    async fn count_request(&self, who: &str) -> Result<RequestCount, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state.requests.retain(|_, (_, ends)| *ends > now);
        let (count, ends) = state
            .requests
            .entry(who.to_owned())
            .or_insert((0, now + RATE_WINDOW));
        *count += 1;
        Ok(RequestCount {
            count: *count,
            // Whole seconds, rounded up, as the Redis store counts them.
            resets_in: u64::try_from(
                ends.saturating_duration_since(now)
                    .as_millis()
                    .div_ceil(1000),
            )
            .unwrap_or(u64::MAX)
            .max(1),
        })
    }
}
