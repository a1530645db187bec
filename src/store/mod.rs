//! What the proxy keeps, whichever database keeps it: the `Store` contract, split by
//! concern (`prompts.rs`, `turns.rs`, `chats.rs`, `usage.rs`, `idempotency.rs`, `shares.rs`,
//! `runs.rs`), the write
//! model every change to a chat follows (`write.rs`), and its two implementations, Redis
//! (`redis/`) and memory (`memory/`), each one file per concern.
//!
//! A chat is a system prompt, a list of turns and a few fields beside them. A turn (what
//! was asked with its answer) is the unit of storage, so a question is never stored without
//! its answer, and two turns of one chat never interleave halves of each other.
//!
//! # The write model: what happens when two writers meet
//!
//! Every chat has a *version*, a number that each change to its turns raises by one: a turn
//! stored, turns replaced, a turn rewritten or removed, the chat cleared, deleted or made.
//! A write decides from a read, and that read returns the version it saw
//! ([`TurnContext::version`]), read before the turns and so never newer than them: a change
//! between the two can only make the write find the chat moved when it had not. The write is
//! one atomic script that first checks the chat against what its read saw, as its kind needs
//! ([`Expect`]), then writes:
//!
//! - **a plain turn** (a new question, items added by hand) needs only that the chat was not
//!   cleared or deleted since its read. Turns stored meanwhile stay where they are, before it:
//!   it is re-applied after them, as two people typing into one chat at once would see it;
//! - **a turn that follows the newest** (the results of that turn's tool calls, a chain's
//!   newest response continued in place) needs that turn still to be the newest;
//! - **a change to turns it read** (a regenerate, an edit, a conversation item or a stored
//!   response deleted) needs the chat exactly as read: not one turn added or changed.
//!
//! A write whose check fails writes nothing and says why ([`Written::Moved`],
//! [`Written::Gone`]); nothing else of the chat is touched. The turn engine then answers the
//! caller with its answer unstored (`X-Chat-Stored: false`), and a rewrite that cost no
//! upstream call reads again and retries. Clearing or deleting a chat raises its *floor* to
//! its new version: a late write from a read before that is `Gone`, so a deleted chat stays
//! deleted and a cleared one stays empty. A deleted chat's floor outlives it for an hour
//! (its tombstone), longer than any request lives; a chat made again later starts above it.
//!
//! Two requests that would both follow the same newest turn are told apart before either
//! asks upstream: the read of each *claims* that turn ([`TailClaim`]), and only one claim
//! holds at a time. A second request answering the same tool calls is refused (409); a
//! second continuation of a chain's newest response becomes a branch of its own.
//!
//! Every write is one round trip (one script) and safe to send twice: a turn by its id, a
//! rewrite, a clear or a deletion by a token of its own, each checked first and set last.
//! The decisions above are written once, in `write.rs`; the Redis scripts (`check.lua`)
//! and the memory store make exactly those, and `tests/api/store_contract.rs` holds both to
//! the same cases.

mod chats;
mod error;
mod idempotency;
mod memory;
mod prompts;
mod redis;
mod runs;
mod shares;
mod turns;
mod usage;
mod write;

pub use self::chats::{
    ChatCursor, ChatPage, ChatSummary, ChatUsage, Chats, ConversationInfo, ListOrder, NewChat,
};
pub use self::error::StoreError;
pub use self::idempotency::{
    Claim, Claimant, Idempotency, IdempotencyKey, KeptAnswer, ANSWER_SECONDS,
};
pub use self::memory::MemoryStore;
pub use self::prompts::Prompts;
pub use self::redis::{RedisStore, Resealed};
pub use self::runs::{
    Cancelling, Ending, NewLive, NewRun, RunState, RunStatus, Runs, Start, ENDED_LIVE_SECONDS,
    LIVE_SECONDS, RUN_SECONDS,
};
pub use self::shares::{link_id, ShareLink, Shared, Shares, MAX_LINKS_PER_CHAT};
pub use self::turns::{
    newest_within, record_apart, Recorded, Rewritten, TailClaim, TurnContext, TurnExtras,
    TurnRewrite, Turns,
};
pub use self::usage::{
    CallerUsage, PeriodUsage, RequestCount, Spent, StoredItems, Tokens, Usage, RATE_WINDOW,
};
pub use self::write::{Expect, Found, Written, FLOOR_SECONDS};

/// The whole contract: every concern, as both stores keep it. Every method works inside one
/// tenant's namespace: callers never see each other's data.
pub trait Store: Prompts + Turns + Chats + Usage + Idempotency + Shares + Runs {}

impl<T: Prompts + Turns + Chats + Usage + Idempotency + Shares + Runs> Store for T {}
