//! The `Store` trait: what the proxy keeps, whichever database keeps it. One room because
//! it is one contract, with the types its methods speak in; each store is a room beside it.
//!
//! A chat is a system prompt and a list of turns. A turn (a question with its answer) is the
//! unit of storage, so a question can never be stored without its answer, and concurrent
//! turns on one chat cannot interleave halves of each other.

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, Resealed};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::chat::{ChatId, Tenant, Turn};
use crate::clock::UtcDay;
use crate::error::ApiError;

/// What a turn needs before calling upstream, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnContext {
    /// The global prompt, when one was set with `POST /system`.
    pub global_prompt: Option<String>,
    /// This chat's own prompt, when it has one.
    pub chat_prompt: Option<String>,
    /// The newest turns, oldest first, at most `max_turns` of them.
    pub history: Vec<Turn>,
    /// The id of the oldest turn sent upstream: the context window starts there, and stays
    /// there until the budget moves it.
    pub window_start: Option<String>,
    /// The chat was made a conversation (`POST /v1/conversations`), turns or not.
    pub conversation: bool,
}

/// A conversation's own fields, besides its turns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationInfo {
    /// When it was made a conversation (Unix seconds); 0 for a chat that only turns made.
    pub created_at: u64,
    /// Its `metadata`, as JSON text.
    pub metadata: Option<String>,
}

/// What a turn's write keeps beside the turn, in the same atomic write.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnExtras<'a> {
    /// Where the context window starts from now on, when this turn moved it.
    pub window_start: Option<&'a str>,
    /// The answer kept for an `Idempotency-Key`.
    pub answer: Option<KeptAnswer<'a>>,
    /// The chat's new prompt, when the turn's request gave it one.
    pub chat_prompt: Option<&'a str>,
    /// Turns to store before this one, in a new chat: the history a branch starts with.
    pub prefix: &'a [Turn],
    /// The turn of this id and every turn after it are replaced by this one (a regenerate,
    /// an edit); when the chat no longer holds it, nothing is written.
    pub replaces: Option<&'a str>,
}

/// One chat as its caller's list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSummary {
    pub id: ChatId,
    /// Set by hand, else its first question's.
    pub title: Option<String>,
    /// When it was made (Unix seconds; 0 for a chat older than the list).
    pub created_at: u64,
    /// Its last write (Unix milliseconds): where it sits in the list.
    pub updated_ms: u64,
    /// The messages it holds.
    pub messages: u64,
    /// Its conversation's fields, when it was made one.
    pub conversation: Option<ConversationInfo>,
}

impl ChatSummary {
    /// Where the page after this chat starts.
    pub fn cursor(&self) -> ChatCursor {
        ChatCursor {
            updated_ms: self.updated_ms,
            id: self.id.clone(),
        }
    }
}

/// A place in a caller's list of chats: after the chat `id`, last written at `updated_ms`
/// (chats written in the same millisecond are ordered by id, descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCursor {
    pub updated_ms: u64,
    pub id: ChatId,
}

impl ChatCursor {
    /// Whether a chat written at `updated_ms` comes after this place in the list.
    pub fn precedes(&self, updated_ms: u64, id: &ChatId) -> bool {
        updated_ms < self.updated_ms
            || (updated_ms == self.updated_ms
                && id.as_str().as_bytes() < self.id.as_str().as_bytes())
    }
}

/// One page of a caller's chats, most recently written first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatPage {
    pub chats: Vec<ChatSummary>,
    /// Where the next page starts, when there are more.
    pub next: Option<ChatCursor>,
}

impl ChatPage {
    /// A page of the first `limit` of `chats`, found in list order (one more than `limit`
    /// when there are more), and where the next page starts.
    pub fn of(mut chats: Vec<ChatSummary>, limit: usize) -> ChatPage {
        let next = (chats.len() > limit).then(|| chats[limit - 1].cursor());
        chats.truncate(limit);
        ChatPage { chats, next }
    }
}

/// A chat made whole at once: a fork, an import.
#[derive(Debug, Clone, Copy)]
pub struct NewChat<'a> {
    pub prompt: Option<&'a str>,
    pub title: Option<&'a str>,
    pub turns: &'a [Turn],
}

/// An answer to replay to a retry that sends the same `Idempotency-Key`.
#[derive(Debug, Clone, Copy)]
pub struct KeptAnswer<'a> {
    pub key: &'a IdempotencyKey,
    pub fingerprint: &'a str,
    /// The answer, as the front door will replay it.
    pub answer: &'a str,
}

/// An `Idempotency-Key` in its scope: a caller's chat, or (for a stateless call) the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    pub chat: Option<ChatId>,
    /// The key's SHA-256, hex: the raw key may hold any printable character.
    pub hash: String,
}

/// A request claiming an `Idempotency-Key`: what it asked, and a token of its own, so that
/// its claim sent twice (after a cut connection) is recognised as its own rather than as
/// another request's, and its release frees its own claim and never a newer one.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub fingerprint: &'a str,
    pub token: &'a str,
    /// How long the claim holds if its request never ends it (a process that died): the
    /// request's own time limit and a little more.
    pub hold: std::time::Duration,
}

/// What a claim on an `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free; this request holds it now.
    Claimed,
    /// A request with this key is running.
    InProgress { fingerprint: String },
    /// A request with this key was answered.
    Answered { fingerprint: String, answer: String },
}

/// What a request cost, to add to its caller's counters.
#[derive(Debug, Clone, Copy)]
pub struct Spent<'a> {
    /// Makes the count idempotent: a write sent twice counts once.
    pub id: &'a str,
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub day: &'a UtcDay,
    /// The source address the day's tokens are limited by, for an open API.
    pub ip: Option<&'a str>,
    /// A stateless call's answer for its `Idempotency-Key`.
    pub answer: Option<KeptAnswer<'a>>,
    /// The chat the turn was kept in, to put at the top of its caller's list, with the
    /// time of the write.
    pub listed: Option<(&'a ChatId, u64)>,
    /// A stored response's output items, found again by their ids (`item_reference`).
    pub items: Option<StoredItems<'a>>,
}

/// The output items of a stored response, by id: a later request may name any of them in
/// an `item_reference` instead of sending it again (the Vercel AI SDK does, for the whole
/// history it resends).
#[derive(Debug, Clone, Copy)]
pub struct StoredItems<'a> {
    /// The proxy's id of the response that holds them (which names its chat).
    pub response: &'a str,
    pub ids: &'a [String],
}

/// A chat's token usage over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChatUsage {
    pub turns: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

/// Token counts of a period, overall or for one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

/// A caller's usage in one period, overall and per model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeriodUsage {
    #[serde(flatten)]
    pub total: Tokens,
    pub models: BTreeMap<String, Tokens>,
}

/// A caller's usage today and this month (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerUsage {
    pub day: PeriodUsage,
    pub month: PeriodUsage,
}

/// What a turn's write did: its chat's part (`Ok` when there was none), and its caller's
/// counters.
#[derive(Debug)]
pub struct Recorded {
    pub stored: Result<(), StoreError>,
    pub counted: Result<(), StoreError>,
}

/// A turn's write as two writes sent together: the turn in its chat (when it has one), and
/// its tokens in its caller's counters. What [`Store::record`] does unless a store can do
/// better.
pub async fn record_apart(
    store: &(impl Store + ?Sized),
    tenant: &Tenant,
    turn: Option<(&ChatId, &Turn, TurnExtras<'_>)>,
    spent: Spent<'_>,
) -> Recorded {
    let stored = async {
        match turn {
            Some((chat, turn, extras)) => store.append_turn(tenant, chat, turn, extras).await,
            None => Ok(()),
        }
    };
    let (stored, counted) = tokio::join!(stored, store.add_usage(tenant, spent));
    Recorded { stored, counted }
}

/// The newest turns of `turns` (oldest first) that hold at most `max_messages` messages
/// between them; the newest turn is kept whole even when it alone holds more.
pub fn newest_within(mut turns: Vec<Turn>, max_messages: usize) -> Vec<Turn> {
    let mut messages: usize = turns.iter().map(Turn::messages).sum();
    let mut drop = 0;
    while turns.len() - drop > 1 && messages > max_messages {
        messages -= turns[drop].messages();
        drop += 1;
    }
    turns.drain(..drop);
    turns
}

/// Storage failed: the database is unreachable, timed out, or answered with something the
/// proxy did not write; or a sealed value did not open. The message is for logs, never for
/// clients.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    message: String,
    unreadable: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            unreadable: false,
        }
    }

    /// A sealed value that does not open (`SEAL_KEYS`): the message names its key and the
    /// key id it was sealed with, never the value.
    pub fn unreadable(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            unreadable: true,
        }
    }

    pub fn is_unreadable(&self) -> bool {
        self.unreadable
    }
}

/// Storage failing is the caller's 503: retry shortly; a value that does not open is a
/// 500 of its own (a retry cannot help). The cause goes to the log only.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.unreadable {
            return ApiError::Unreadable(Box::new(error));
        }
        ApiError::Storage(Box::new(error))
    }
}

/// How long an answered `Idempotency-Key` replays its answer.
pub const ANSWER_SECONDS: u64 = 24 * 3600;

/// How long a rate-limit window lasts: the first request of a caller opens one.
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// How many requests a caller has made in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    pub count: u64,
    /// Seconds until the window ends and the count starts again.
    pub resets_in: u64,
}

/// The contract both stores keep; `tests/` runs the same cases against each. Every method
/// works inside one tenant's namespace: callers never see each other's data.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn global_prompt(&self, tenant: &Tenant) -> Result<Option<String>, StoreError>;
    async fn set_global_prompt(&self, tenant: &Tenant, content: &str) -> Result<(), StoreError>;

    async fn chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError>;
    /// Sets the chat's prompt and renews the chat's expiry.
    async fn set_chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        content: &str,
    ) -> Result<(), StoreError>;

    /// The prompts and the newest turns of a chat: one round trip.
    async fn turn_context(&self, tenant: &Tenant, chat: &ChatId)
        -> Result<TurnContext, StoreError>;
    /// Appends a turn, trims the chat to its caps (oldest turns first, by count and by bytes),
    /// adds the turn's tokens to the chat's usage, keeps `extras`, and renews the chat's
    /// expiry: one atomic write. Idempotent by the turn's id: a turn whose id was stored in
    /// the last hour is not stored again, so a write that may or may not have run can be
    /// sent again.
    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
    ) -> Result<(), StoreError>;
    /// What a turn leaves behind, in one round trip: the turn in its chat (when it has one,
    /// as [`Store::append_turn`]) and its tokens in its caller's counters (as
    /// [`Store::add_usage`]). Each part is idempotent as those are.
    async fn record(
        &self,
        tenant: &Tenant,
        turn: Option<(&ChatId, &Turn, TurnExtras<'_>)>,
        spent: Spent<'_>,
    ) -> Recorded {
        record_apart(self, tenant, turn, spent).await
    }
    /// Every kept turn of a chat, oldest first.
    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError>;
    /// Replaces the turn of id `turn` with `with` (a conversation item deleted from it), or
    /// removes it (a deleted response); says whether the chat held it.
    async fn replace_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &str,
        with: Option<&Turn>,
    ) -> Result<bool, StoreError>;
    /// A conversation's fields, when the chat exists (it has turns or a prompt, or was made
    /// a conversation).
    async fn conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ConversationInfo>, StoreError>;
    /// Makes the chat a conversation created at `created_at` (kept if it already is one)
    /// and sets its metadata when given; renews the chat's expiry.
    async fn set_conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        created_at: u64,
        metadata: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Removes the chat entirely: its turns, its prompt, its usage, its title, its metadata,
    /// its `Idempotency-Key`s and its place in its caller's list (the caller's own counters
    /// keep what it spent).
    async fn delete_chat(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;
    /// A page of at most `limit` of the caller's chats, most recently written first, from
    /// `after` on; never a chat that expired or was deleted. Chains (`previous_response_id`
    /// with no conversation) are not chats the caller made, and are not listed.
    async fn list_chats(
        &self,
        tenant: &Tenant,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, StoreError>;
    /// The chat as its caller's list shows it, when it exists.
    async fn chat_summary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ChatSummary>, StoreError>;
    /// Sets the title of a chat that exists (renewing its expiry); false when there is no
    /// such chat.
    async fn set_title(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        title: &str,
    ) -> Result<bool, StoreError>;
    /// Makes a new chat holding `new` whole; false, writing nothing, when a chat of that id
    /// exists.
    async fn create_chat(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        new: NewChat<'_>,
    ) -> Result<bool, StoreError>;
    /// Drops the chat's turns; its prompt and its usage stay.
    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;
    /// The chat's token usage over its life (cleared turns included).
    async fn chat_usage(&self, tenant: &Tenant, chat: &ChatId) -> Result<ChatUsage, StoreError>;

    /// Adds a request's tokens to its caller's counters for the day and the month, overall
    /// and for its model (and to its source address's day, for an open API); idempotent by
    /// `spent.id`. Counters outlive their period by a day (a month's by a month).
    async fn add_usage(&self, tenant: &Tenant, spent: Spent<'_>) -> Result<(), StoreError>;
    /// The response that holds each of the caller's items named by `ids` (an
    /// `item_reference`'s), as recorded with it (`Spent::items`); `None` for an id not
    /// recorded, or whose record expired with its chat.
    async fn item_responses(
        &self,
        tenant: &Tenant,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError>;
    /// The caller's counters for `day` and its month.
    async fn caller_usage(&self, tenant: &Tenant, day: &UtcDay) -> Result<CallerUsage, StoreError>;
    /// Tokens spent on `day`: by the caller, or by `ip` for an open API.
    async fn tokens_spent(
        &self,
        tenant: &Tenant,
        ip: Option<&str>,
        day: &UtcDay,
    ) -> Result<u64, StoreError>;

    /// Claims an `Idempotency-Key` for `claimant` (a free key is held for `claimant.hold`,
    /// an answered one kept for 24 hours), or says who has it. A claim the same claimant
    /// already holds is `Claimed` again.
    async fn claim(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<Claim, StoreError>;
    /// Frees a key whose request failed, so that a retry runs again; only while `claimant`
    /// holds it (never another request's claim, nor an answer).
    async fn release(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<(), StoreError>;

    /// Counts request `request` by `who` in its current window and returns the count so
    /// far, this request included; shared by every instance of the function, so a limit
    /// holds across all of them. Idempotent by `request`: counted twice, it counts once and
    /// answers the same. Past `limit` requests, the count stays at `limit + 1`.
    async fn count_request(
        &self,
        who: &str,
        request: &str,
        limit: u64,
    ) -> Result<RequestCount, StoreError>;
}
