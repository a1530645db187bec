//! The `Store` trait: what the proxy keeps, whichever database keeps it.
//!
//! A chat is a system prompt and a list of turns. A turn (a question with its answer) is the
//! unit of storage, so a question can never be stored without its answer, and concurrent
//! turns on one chat cannot interleave halves of each other.

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

mod turn;

pub use self::turn::{ImageRef, Part, Turn, UserContent};

use crate::auth::Tenant;
use crate::routes::ChatId;

/// What a turn needs before calling upstream, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnContext {
    /// The global prompt, when one was set with `POST /system`.
    pub global_prompt: Option<String>,
    /// This chat's own prompt, when it has one.
    pub chat_prompt: Option<String>,
    /// The newest turns, oldest first, at most `max_turns` of them.
    pub history: Vec<Turn>,
}

/// Storage failed: the database is unreachable, timed out, or answered with something the
/// proxy did not write. The message is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        StoreError(message.into())
    }
}

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
    /// Appends a turn, trims the chat to its caps (oldest turns first, by count and by bytes)
    /// and renews its expiry: one atomic write. Idempotent by the turn's id: a turn whose id
    /// was stored in the last hour is not stored again, so a write that may or may not have
    /// run can be sent again.
    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
    ) -> Result<(), StoreError>;
    /// Every kept turn of a chat, oldest first.
    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError>;
    /// Drops the chat's turns; its prompt stays.
    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;

    /// Counts one request by `who` in its current window and returns the count so far;
    /// shared by every instance of the function, so a limit holds across all of them.
    async fn count_request(&self, who: &str) -> Result<RequestCount, StoreError>;
}
