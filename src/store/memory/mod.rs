//! The in-memory store: the same contract as Redis, for local runs and unit tests, one file
//! per concern beside this one (`prompts.rs`, `turns.rs`, `chats.rs`, `usage.rs`,
//! `idempotency.rs`), each to be read beside its Redis twin. Its writes make the write
//! model's decisions by calling them (`store/write.rs`), where the Redis scripts make the
//! same ones in Lua.
//!
//! It lives and dies with one process, so on Lambda every instance would see different
//! chats; `main` warns loudly when it is used. One lock over the whole state makes each
//! write atomic, as a script is in Redis.

mod chats;
mod idempotency;
mod prompts;
mod runs;
mod shares;
mod turns;
mod usage;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    newest_within, ChatSummary, ChatUsage, ConversationInfo, Found, IdempotencyKey, ListOrder,
    PeriodUsage, ShareLink, FLOOR_SECONDS,
};
use crate::chat::{ChatId, Tenant, Turn};
use crate::clock::now_ms;
use crate::config::StoreSettings;

pub struct MemoryStore {
    settings: StoreSettings,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    global_prompts: HashMap<Tenant, String>,
    chats: HashMap<ChatKey, Chat>,
    /// The floors of cleared and deleted chats, until they expire.
    floors: HashMap<ChatKey, (u64, Instant)>,
    /// The claims on chats' newest turns: the turn, its claimant, until when.
    claims: HashMap<ChatKey, (String, String, Instant)>,
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
    /// Read-only links by id: each one's snapshot and the chat it is a link of.
    shared: HashMap<String, (String, ChatKey, ShareLink)>,
    /// Background runs, by their chat and id.
    runs: HashMap<runs::RunKey, runs::KeptRun>,
    /// Each chat's live turn (a streamed turn being made), until its deadline.
    live: HashMap<ChatKey, (String, Instant)>,
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
    /// Raised by every change to its turns (`store/mod.rs`).
    version: u64,
    window: Option<String>,
    compacted: Option<crate::chat::Compacted>,
    usage: ChatUsage,
    expires_at: Option<Instant>,
    /// When it was made a conversation, and its metadata (JSON).
    created_at: Option<u64>,
    metadata: Option<String>,
    /// When it was made (Unix seconds, and milliseconds) and last written (milliseconds).
    born: u64,
    made_ms: u64,
    updated_ms: u64,
    /// Its title set by hand, and the one its first question gave it.
    title: Option<String>,
    auto_title: Option<String>,
    /// Temporary: kept this long after each write, never listed.
    temporary: Option<Duration>,
}

impl Chat {
    /// Where it sits in a list in `order`.
    fn place(&self, order: ListOrder) -> u64 {
        match order {
            ListOrder::Written => self.updated_ms,
            ListOrder::Made => self.made_ms,
        }
    }

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
            temporary: self.temporary.is_some(),
        }
    }

    /// Adds a turn at the end, counting its size and messages.
    fn push(&mut self, turn: Turn) {
        let size = serde_json::to_string(&turn).map_or(0, |json| json.len());
        self.bytes += size;
        self.messages += turn.messages();
        self.turns.push_back((turn, size));
    }

    /// Drops the turns from `at` on.
    fn cut(&mut self, at: usize) {
        for (dropped, bytes) in self.turns.drain(at..) {
            self.bytes -= bytes;
            self.messages -= dropped.messages();
        }
    }

    /// Drops the oldest turn, as a trim to the caps does.
    fn cut_oldest(&mut self) {
        if let Some((dropped, bytes)) = self.turns.pop_front() {
            self.bytes -= bytes;
            self.messages -= dropped.messages();
        }
    }

    /// Puts `with` in the place of the turn at `at`, or removes that turn.
    fn replace(&mut self, at: usize, with: Option<Turn>) {
        if let Some((removed, bytes)) = self.turns.remove(at) {
            self.bytes -= bytes;
            self.messages -= removed.messages();
        }
        if let Some(with) = with {
            let size = serde_json::to_string(&with).map_or(0, |json| json.len());
            self.bytes += size;
            self.messages += with.messages();
            self.turns.insert(at, (with, size));
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
        entry.expires_at = entry
            .temporary
            .or(self.settings.chat_ttl)
            .map(|ttl| Instant::now() + ttl);
        entry.updated_ms = now_ms();
        if entry.born == 0 {
            entry.born = entry.updated_ms / 1000;
            entry.made_ms = entry.updated_ms;
        }
        entry
    }

    /// The chat as a write finds it (`store/write.rs`).
    fn found(&self, state: &mut State, chat: &ChatKey) -> Kept {
        let now = Instant::now();
        state.floors.retain(|_, (_, until)| *until > now);
        let floor = state.floors.get(chat).map_or(0, |(floor, _)| *floor);
        let live = self.live(state, chat);
        let version = live.as_ref().map_or(0, |c| c.version);
        let newest = live.and_then(|c| c.turns.back().and_then(|(turn, _)| turn.id.clone()));
        Kept {
            version,
            floor,
            newest,
        }
    }

    /// Raises a chat's floor to its next version, as a clear or a deletion does; returns it.
    fn raise_floor(&self, state: &mut State, chat: &ChatKey) -> u64 {
        let raised = self.found(state, chat).found().next_version();
        let until = Instant::now() + Duration::from_secs(FLOOR_SECONDS);
        state.floors.insert(chat.clone(), (raised, until));
        raised
    }

    /// A chat's turns, at most `MAX_HISTORY_MESSAGES` messages of its newest.
    fn newest_turns(&self, chat: Option<&mut Chat>) -> Vec<Turn> {
        let turns = chat
            .map(|c| c.turns.iter().map(|(turn, _)| turn.clone()).collect())
            .unwrap_or_default();
        newest_within(turns, self.settings.max_history_messages)
    }
}

/// What a chat's version, floor and newest turn are, owned (the state's lock is held).
struct Kept {
    version: u64,
    floor: u64,
    newest: Option<String>,
}

impl Kept {
    fn found(&self) -> Found<'_> {
        Found {
            version: self.version,
            floor: self.floor,
            newest: self.newest.as_deref(),
        }
    }
}

fn key(tenant: &Tenant, chat: &ChatId) -> ChatKey {
    (tenant.clone(), chat.clone())
}
