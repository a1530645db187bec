//! A caller's chats as a whole: the list of them, each one's title, usage and conversation
//! fields, and making, copying and deleting whole chats.

use serde::Serialize;

use super::StoreError;
use crate::chat::{ChatId, Tenant, Turn};

/// A conversation's own fields, besides its turns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationInfo {
    /// When it was made a conversation (Unix seconds); 0 for a chat that only turns made.
    pub created_at: u64,
    /// Its `metadata`, as JSON text.
    pub metadata: Option<String>,
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
    /// It was made temporary (`POST /chats/temporary`): never listed or searched, and
    /// kept only `TEMPORARY_CHAT_SECONDS` after its last write.
    pub temporary: bool,
}

/// The order a caller's chats are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Most recently written first (`GET /chats`): a chat moves to the top with each write.
    Written,
    /// Most recently made first (`GET /v1/conversations`): a chat keeps its place, so a
    /// cursor that names a chat (`after=<id>`) never moves with it.
    Made,
}

/// A place in a caller's list of chats: after the chat `id`, at `at_ms` in the list's order
/// (its last write, or when it was made; Unix milliseconds). Chats at the same millisecond
/// are ordered by id, descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCursor {
    pub at_ms: u64,
    pub id: ChatId,
}

impl ChatCursor {
    /// Whether a chat at `at_ms` comes after this place in the list.
    pub fn precedes(&self, at_ms: u64, id: &ChatId) -> bool {
        at_ms < self.at_ms
            || (at_ms == self.at_ms && id.as_str().as_bytes() < self.id.as_str().as_bytes())
    }
}

/// One page of a caller's chats, in the list's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatPage {
    pub chats: Vec<ChatSummary>,
    /// Where the next page starts, when there are more.
    pub next: Option<ChatCursor>,
}

impl ChatPage {
    /// A page of the first `limit` of `found` (each chat with its place in the list's
    /// order), found in list order (one more than `limit` when there are more), and where
    /// the next page starts.
    pub fn of(mut found: Vec<(ChatSummary, u64)>, limit: usize) -> ChatPage {
        let next = (found.len() > limit).then(|| ChatCursor {
            at_ms: found[limit - 1].1,
            id: found[limit - 1].0.id.clone(),
        });
        found.truncate(limit);
        ChatPage {
            chats: found.into_iter().map(|(chat, _)| chat).collect(),
            next,
        }
    }

    /// The page, going on from `next`.
    pub fn with_next(self, next: Option<ChatCursor>) -> ChatPage {
        ChatPage { next, ..self }
    }
}

/// A chat made whole at once: a fork, an import.
#[derive(Debug, Clone, Copy)]
pub struct NewChat<'a> {
    pub prompt: Option<&'a str>,
    pub title: Option<&'a str>,
    pub turns: &'a [Turn],
    /// Its usage so far (an import keeps the exported chat's).
    pub usage: ChatUsage,
    /// Made temporary: never listed or searched, and every key of it kept only
    /// `TEMPORARY_CHAT_SECONDS` after each write (a new temporary chat, a temporary chat's
    /// fork).
    pub temporary: bool,
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

#[async_trait::async_trait]
pub trait Chats: Send + Sync {
    /// A conversation's fields, when the chat exists (any of its keys does: turns, a
    /// prompt, or its fields, which a cleared chat keeps).
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
    /// keep what it spent). Leaves its floor for an hour, so that no write from a read
    /// before the deletion brings it back (`store/mod.rs`).
    async fn delete_chat(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;
    /// A page of at most `limit` of the caller's chats in `order`, from `after` on; never a
    /// chat that expired or was deleted. Chains (`previous_response_id` with no
    /// conversation) are not chats the caller made, and are not listed.
    async fn list_chats(
        &self,
        tenant: &Tenant,
        order: ListOrder,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, StoreError>;
    /// Where a listed chat of the caller's is in `order`: the cursor of the page after it.
    async fn place(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        order: ListOrder,
    ) -> Result<Option<ChatCursor>, StoreError>;
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
    /// exists. A chat made where one was deleted starts above its floor. A temporary one is
    /// not listed.
    async fn create_chat(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        new: NewChat<'_>,
    ) -> Result<bool, StoreError>;
    /// The chat's token usage over its life (cleared turns included).
    async fn chat_usage(&self, tenant: &Tenant, chat: &ChatId) -> Result<ChatUsage, StoreError>;
    /// How long after each write a temporary chat is kept; `None` for a chat that is not
    /// temporary (or does not exist).
    async fn temporary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<std::time::Duration>, StoreError>;
}
