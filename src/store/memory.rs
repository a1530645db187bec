//! The in-memory store, one room because it is one implementation of the `Store` trait,
//! kept method for method beside Redis's.
//!
//! The in-memory store: the same contract as Redis, for local runs and unit tests.
//!
//! It lives and dies with one process, so on Lambda every instance would see different
//! chats; `main` warns loudly when it is used. One room, at about 400 lines: the whole
//! contract, method for method in the trait's order, to be read beside `store/mod.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    newest_within, CallerUsage, ChatCursor, ChatPage, ChatSummary, ChatUsage, Claim, Claimant,
    ConversationInfo, IdempotencyKey, KeptAnswer, NewChat, PeriodUsage, RequestCount, Spent, Store,
    StoreError, Tokens, TurnContext, TurnExtras, ANSWER_SECONDS, RATE_WINDOW,
};
use crate::chat::{auto_title, ChatId, Tenant, Turn};
use crate::clock::{now_ms, UtcDay};
use crate::config::StoreSettings;

pub struct MemoryStore {
    settings: StoreSettings,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    global_prompts: HashMap<Tenant, String>,
    chats: HashMap<(Tenant, ChatId), Chat>,
    /// Requests per caller in its current window (each by its id, with its place in the
    /// count), and when the window ends.
    requests: HashMap<String, (HashMap<String, u64>, Instant)>,
    /// A caller's counters by period (`day:<date>`, `month:<month>`).
    usage: HashMap<(Tenant, String), PeriodUsage>,
    /// An open API's tokens per address and day.
    ip_tokens: HashMap<(Tenant, String, String), u64>,
    /// Requests already counted.
    counted: HashSet<(Tenant, String)>,
    /// `Idempotency-Key`s: what each holds, until when.
    keys: HashMap<(Tenant, IdempotencyKey), (Held, Instant)>,
    /// Which stored response holds each output item, by the item's id.
    items: HashMap<(Tenant, String), String>,
}

#[derive(Clone)]
enum Held {
    /// Claimed: the fingerprint and the claimant's token.
    Pending(String, String),
    Answered(String, String),
}

type ChatKey = (Tenant, ChatId);

#[derive(Default)]
struct Chat {
    prompt: Option<String>,
    /// Each turn with its size as Redis would store it (its JSON's length).
    turns: VecDeque<(Turn, usize)>,
    bytes: usize,
    messages: usize,
    window: Option<String>,
    usage: ChatUsage,
    expires_at: Option<Instant>,
    /// When it was made a conversation, and its metadata (JSON).
    created_at: Option<u64>,
    metadata: Option<String>,
    /// When it was made (Unix seconds) and last written (Unix milliseconds).
    born: u64,
    updated_ms: u64,
    /// Its title set by hand, and the one its first question gave it.
    title: Option<String>,
    auto_title: Option<String>,
}

impl Chat {
    fn summary(&self, id: &ChatId) -> ChatSummary {
        ChatSummary {
            id: id.clone(),
            title: self.title.clone().or_else(|| self.auto_title.clone()),
            created_at: self.born,
            updated_ms: self.updated_ms,
            messages: self.messages as u64,
            conversation: self.created_at.map(|created_at| ConversationInfo {
                created_at,
                metadata: self.metadata.clone(),
            }),
        }
    }
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
        entry.updated_ms = now_ms();
        if entry.born == 0 {
            entry.born = entry.updated_ms / 1000;
        }
        entry
    }

    fn newest_turns(&self, chat: Option<&mut Chat>) -> Vec<Turn> {
        let turns = chat
            .map(|c| {
                let skip = c.turns.len().saturating_sub(self.settings.read_turns());
                c.turns
                    .iter()
                    .skip(skip)
                    .map(|(turn, _)| turn.clone())
                    .collect()
            })
            .unwrap_or_default();
        newest_within(turns, self.settings.max_history_messages)
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
        let window_start = chat.as_ref().and_then(|c| c.window.clone());
        let conversation = chat.as_ref().is_some_and(|c| c.created_at.is_some());
        Ok(TurnContext {
            global_prompt,
            chat_prompt,
            history: self.newest_turns(chat),
            window_start,
            conversation,
        })
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
    ) -> Result<(), StoreError> {
        let size = serde_json::to_string(turn)
            .map_err(|e| StoreError::new(format!("cannot encode a turn: {e}")))?
            .len();
        let (max_messages, max_bytes) = (
            self.settings.max_history_messages,
            self.settings.max_chat_bytes,
        );
        let mut state = self.state();
        let chat = self.touched(&mut state, &key(tenant, chat));
        // One process, one lock: a write cannot be in doubt here, but the contract is the
        // same as Redis's, so a turn whose id is stored is not stored again.
        if turn.id.is_some() && chat.turns.iter().any(|(kept, _)| kept.id == turn.id) {
            return Ok(());
        }
        if let Some(replaced) = extras.replaces {
            let at = chat
                .turns
                .iter()
                .position(|(kept, _)| kept.id.as_deref() == Some(replaced))
                .ok_or_else(|| StoreError::new("the turn to replace is no longer in the chat"))?;
            for (dropped, bytes) in chat.turns.drain(at..) {
                chat.bytes -= bytes;
                chat.messages -= dropped.messages();
            }
        }
        if chat.auto_title.is_none() {
            chat.auto_title = extras
                .prefix
                .first()
                .and_then(auto_title)
                .or_else(|| auto_title(turn));
        }
        for earlier in extras.prefix {
            let size = serde_json::to_string(earlier).map_or(0, |json| json.len());
            chat.turns.push_back((earlier.clone(), size));
            chat.bytes += size;
            chat.messages += earlier.messages();
        }
        chat.turns.push_back((turn.clone(), size));
        chat.bytes += size;
        chat.messages += turn.messages();
        while chat.turns.len() > 1 && (chat.messages > max_messages || chat.bytes > max_bytes) {
            if let Some((dropped, bytes)) = chat.turns.pop_front() {
                chat.bytes -= bytes;
                chat.messages -= dropped.messages();
            }
        }
        if let Some(start) = extras.window_start {
            chat.window = Some(start.to_owned());
        }
        if let Some(prompt) = extras.chat_prompt {
            chat.prompt = Some(prompt.to_owned());
        }
        let tokens = turn.tokens.unwrap_or_default();
        chat.usage.turns += 1;
        chat.usage.prompt_tokens += u64::from(tokens.prompt);
        chat.usage.completion_tokens += u64::from(tokens.completion);
        chat.usage.cached_tokens += u64::from(tokens.cached);
        if let Some(kept) = extras.answer {
            keep(&mut state, tenant, kept);
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
        chat.messages = 0;
        chat.window = None;
        chat.auto_title = None;
        Ok(())
    }

    async fn replace_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &str,
        with: Option<&Turn>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(chat) = self.live(&mut state, &key(tenant, chat)) else {
            return Ok(false);
        };
        let found = chat
            .turns
            .iter()
            .position(|(kept, _)| kept.id.as_deref() == Some(turn));
        let Some(at) = found else {
            return Ok(false);
        };
        if let Some((removed, bytes)) = chat.turns.remove(at) {
            chat.bytes -= bytes;
            chat.messages -= removed.messages();
        }
        if let Some(with) = with {
            let size = serde_json::to_string(with).map_or(0, |json| json.len());
            chat.turns.insert(at, (with.clone(), size));
            chat.bytes += size;
            chat.messages += with.messages();
        }
        Ok(true)
    }

    async fn conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ConversationInfo>, StoreError> {
        let mut state = self.state();
        let chat = self.live(&mut state, &key(tenant, chat));
        Ok(chat
            .filter(|c| !c.turns.is_empty() || c.prompt.is_some() || c.created_at.is_some())
            .map(|c| ConversationInfo {
                created_at: c.created_at.unwrap_or(0),
                metadata: c.metadata.clone(),
            }))
    }

    async fn set_conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        created_at: u64,
        metadata: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = self.touched(&mut state, &key(tenant, chat));
        chat.created_at.get_or_insert(created_at);
        if let Some(metadata) = metadata {
            chat.metadata = Some(metadata.to_owned());
        }
        Ok(())
    }

    async fn delete_chat(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let mut state = self.state();
        state.chats.remove(&key(tenant, chat));
        state
            .keys
            .retain(|(owner, key), _| owner != tenant || key.chat.as_ref() != Some(chat));
        Ok(())
    }

    async fn list_chats(
        &self,
        tenant: &Tenant,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state
            .chats
            .retain(|_, chat| chat.expires_at.is_none_or(|at| at > now));
        // The page's chats (and one more, to tell whether more follow) found by their order
        // alone, and only those made into summaries: a store of many chats pages cheaply.
        let mut listed: Vec<(u64, &ChatId, &Chat)> = state
            .chats
            .iter()
            .filter(|((owner, id), _)| owner == tenant && !id.is_chain())
            .map(|((_, id), chat)| (chat.updated_ms, id, chat))
            .filter(|(updated, id, _)| after.is_none_or(|after| after.precedes(*updated, id)))
            .collect();
        let newest_first = |a: &(u64, &ChatId, &Chat), b: &(u64, &ChatId, &Chat)| {
            (b.0, b.1.as_str().as_bytes()).cmp(&(a.0, a.1.as_str().as_bytes()))
        };
        if listed.len() > limit + 1 {
            listed.select_nth_unstable_by(limit, newest_first);
            listed.truncate(limit + 1);
        }
        listed.sort_by(newest_first);
        let chats = listed
            .into_iter()
            .map(|(_, id, chat)| chat.summary(id))
            .collect();
        Ok(ChatPage::of(chats, limit))
    }

    async fn chat_summary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ChatSummary>, StoreError> {
        let mut state = self.state();
        Ok(self
            .live(&mut state, &key(tenant, chat))
            .map(|found| found.summary(chat)))
    }

    async fn set_title(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        title: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        if self.live(&mut state, &chat).is_none() {
            return Ok(false);
        }
        self.touched(&mut state, &chat).title = Some(title.to_owned());
        Ok(true)
    }

    async fn create_chat(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        new: NewChat<'_>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        if self.live(&mut state, &chat).is_some() {
            return Ok(false);
        }
        let made = self.touched(&mut state, &chat);
        for turn in new.turns {
            let size = serde_json::to_string(turn).map_or(0, |json| json.len());
            made.turns.push_back((turn.clone(), size));
            made.bytes += size;
            made.messages += turn.messages();
        }
        made.prompt = new.prompt.map(str::to_owned);
        made.title = new.title.map(str::to_owned);
        made.auto_title = new.turns.first().and_then(auto_title);
        Ok(true)
    }

    async fn chat_usage(&self, tenant: &Tenant, chat: &ChatId) -> Result<ChatUsage, StoreError> {
        let mut state = self.state();
        let mut usage = self
            .live(&mut state, &key(tenant, chat))
            .map(|c| c.usage)
            .unwrap_or_default();
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        Ok(usage)
    }

    async fn add_usage(&self, tenant: &Tenant, spent: Spent<'_>) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.counted.insert((tenant.clone(), spent.id.to_owned())) {
            return Ok(());
        }
        let tokens = Tokens {
            prompt_tokens: spent.prompt_tokens,
            completion_tokens: spent.completion_tokens,
            cached_tokens: spent.cached_tokens,
            total_tokens: spent.prompt_tokens + spent.completion_tokens,
        };
        for period in [
            format!("day:{}", spent.day.date),
            format!("month:{}", spent.day.month),
        ] {
            let usage = state.usage.entry((tenant.clone(), period)).or_default();
            add(&mut usage.total, tokens);
            add(
                usage.models.entry(spent.model.to_owned()).or_default(),
                tokens,
            );
        }
        if let Some(ip) = spent.ip {
            let key = (tenant.clone(), ip.to_owned(), spent.day.date.clone());
            *state.ip_tokens.entry(key).or_default() += tokens.total_tokens;
        }
        if let Some(kept) = spent.answer {
            keep(&mut state, tenant, kept);
        }
        if let Some(items) = spent.items {
            for id in items.ids {
                let key = (tenant.clone(), id.clone());
                state.items.insert(key, items.response.to_owned());
            }
        }
        Ok(())
    }

    async fn item_responses(
        &self,
        tenant: &Tenant,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let state = self.state();
        Ok(ids
            .iter()
            .map(|id| state.items.get(&(tenant.clone(), id.clone())).cloned())
            .collect())
    }

    async fn caller_usage(&self, tenant: &Tenant, day: &UtcDay) -> Result<CallerUsage, StoreError> {
        let state = self.state();
        let period = |name: String| {
            state
                .usage
                .get(&(tenant.clone(), name))
                .cloned()
                .unwrap_or_default()
        };
        Ok(CallerUsage {
            day: period(format!("day:{}", day.date)),
            month: period(format!("month:{}", day.month)),
        })
    }

    async fn tokens_spent(
        &self,
        tenant: &Tenant,
        ip: Option<&str>,
        day: &UtcDay,
    ) -> Result<u64, StoreError> {
        let state = self.state();
        Ok(match ip {
            Some(ip) => state
                .ip_tokens
                .get(&(tenant.clone(), ip.to_owned(), day.date.clone()))
                .copied()
                .unwrap_or(0),
            None => state
                .usage
                .get(&(tenant.clone(), format!("day:{}", day.date)))
                .map_or(0, |usage| usage.total.total_tokens),
        })
    }

    async fn claim(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state.keys.retain(|_, (_, until)| *until > now);
        let held = (tenant.clone(), key.clone());
        Ok(match state.keys.get(&held) {
            Some((Held::Pending(fingerprint, token), _))
                if fingerprint == claimant.fingerprint && token == claimant.token =>
            {
                Claim::Claimed
            }
            Some((Held::Pending(fingerprint, _), _)) => Claim::InProgress {
                fingerprint: fingerprint.clone(),
            },
            Some((Held::Answered(fingerprint, answer), _)) => Claim::Answered {
                fingerprint: fingerprint.clone(),
                answer: answer.clone(),
            },
            None => {
                let pending =
                    Held::Pending(claimant.fingerprint.to_owned(), claimant.token.to_owned());
                state.keys.insert(
                    held,
                    (pending, now + claimant.hold.max(Duration::from_secs(1))),
                );
                Claim::Claimed
            }
        })
    }

    async fn release(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let held = (tenant.clone(), key.clone());
        let mine = matches!(
            state.keys.get(&held),
            Some((Held::Pending(fingerprint, token), _))
                if fingerprint == claimant.fingerprint && token == claimant.token
        );
        if mine {
            state.keys.remove(&held);
        }
        Ok(())
    }

    async fn count_request(
        &self,
        who: &str,
        request: &str,
        limit: u64,
    ) -> Result<RequestCount, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state.requests.retain(|_, (_, ends)| *ends > now);
        let (counted, ends) = state
            .requests
            .entry(who.to_owned())
            .or_insert_with(|| (HashMap::new(), now + RATE_WINDOW));
        let count = match counted.get(request) {
            Some(count) => *count,
            None => {
                let count = counted.len() as u64 + 1;
                if count <= limit {
                    counted.insert(request.to_owned(), count);
                }
                count
            }
        };
        Ok(RequestCount {
            count,
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

fn add(tokens: &mut Tokens, more: Tokens) {
    tokens.prompt_tokens += more.prompt_tokens;
    tokens.completion_tokens += more.completion_tokens;
    tokens.cached_tokens += more.cached_tokens;
    tokens.total_tokens += more.total_tokens;
}

fn keep(state: &mut State, tenant: &Tenant, kept: KeptAnswer<'_>) {
    let held = Held::Answered(kept.fingerprint.to_owned(), kept.answer.to_owned());
    let until = Instant::now() + Duration::from_secs(ANSWER_SECONDS);
    state
        .keys
        .insert((tenant.clone(), kept.key.clone()), (held, until));
}
