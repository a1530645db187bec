//! A chat's turns: the one read a turn decides from, and the writes that change them, each
//! checked against that read as the write model says (`store/mod.rs`).

use std::time::Duration;

use super::{Expect, KeptAnswer, Spent, StoreError, Usage, Written};
use crate::chat::{ChatId, Compacted, Tenant, Turn};

/// What a turn needs before calling upstream, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnContext {
    /// The global prompt, when one was set with `POST /system`.
    pub global_prompt: Option<String>,
    /// This chat's own prompt, when it has one.
    pub chat_prompt: Option<String>,
    /// The newest turns, oldest first: at most `MAX_HISTORY_MESSAGES` messages.
    pub history: Vec<Turn>,
    /// The id of the oldest turn sent upstream: the context window starts there, and stays
    /// there until the budget moves it.
    pub window_start: Option<String>,
    /// The turns before the window, compacted (`COMPACT_AT_TOKENS`), when they were: only
    /// one that [`Compacted::precedes`] the window is read.
    pub compacted: Option<Compacted>,
    /// The chat was made a conversation (`POST /v1/conversations`), turns or not.
    pub conversation: bool,
    /// The chat's version, read with its turns: what a write from this read commits
    /// against.
    pub version: u64,
    /// The read's claim on the newest turn holds (only when it asked for one).
    pub claimed: bool,
    /// The chat is temporary: kept this long after each write, and never listed.
    pub temporary: Option<Duration>,
}

/// A read's claim on the chat's newest turn: its request alone will follow that turn (with
/// the results of its tool calls, or by continuing a chain in place) while the claim holds.
#[derive(Debug, Clone, Copy)]
pub struct TailClaim<'a> {
    /// The turn to claim: `None` for whichever is newest; `Some(id)` only while `id` is.
    pub newest: Option<&'a str>,
    /// The claiming turn's own id: its claim read again (a resent read) is its own.
    pub claimant: &'a str,
    /// How long the claim holds if its request never ends it (a process that died).
    pub hold: Duration,
}

/// What a turn's write keeps beside the turn, in the same atomic write.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnExtras<'a> {
    /// What the write needs of the chat, from what the turn's read saw.
    pub expect: Expect<'a>,
    /// Where the context window starts from now on, when this turn moved it.
    pub window_start: Option<&'a str>,
    /// What stands for the turns before the window from now on: written only with
    /// `window_start` (a window that moves without one drops the one kept).
    pub compacted: Option<&'a Compacted>,
    /// Tokens the turn spent besides its own request, counted in the chat's usage: a
    /// compaction's call (prompt, completion, cached).
    pub also_spent: (u32, u32, u32),
    /// The answer kept for an `Idempotency-Key`.
    pub answer: Option<KeptAnswer<'a>>,
    /// The chat's new prompt, when the turn's request gave it one.
    pub chat_prompt: Option<&'a str>,
    /// Turns to store before this one, in a new chat: the history a branch starts with.
    pub prefix: &'a [Turn],
    /// The turn of this id and every turn after it are replaced by this one (a regenerate,
    /// an edit): only with `Expect::Exactly`.
    pub replaces: Option<&'a str>,
    /// The turn claimed by the read ([`TailClaim`]), freed by this write.
    pub claimed: Option<&'a str>,
    /// The turn this one (with its `prefix`) comes after in the chat as read: its newest,
    /// or for a redo the turn before the first it replaces (`None`: none, a chat's first).
    /// A sealed turn is bound to it (`redis/sealed.rs`), and sealed again should another
    /// turn have come between.
    pub after: Option<&'a str>,
    /// The chat is temporary (as its read found it): its keys, and the answer kept for an
    /// `Idempotency-Key`, expire this long after the write; it is not listed. A temporary
    /// chat that expired while its turn was made is made again as temporary.
    pub temporary: Option<Duration>,
    /// The chat had a prompt of its own when read: its expiry is renewed with the turns'
    /// (one set since renewed its own).
    pub has_prompt: bool,
}

/// One turn rewritten or removed, where the chat's read found it.
#[derive(Debug, Clone, Copy)]
pub struct TurnRewrite<'a> {
    pub id: &'a str,
    /// What it becomes; `None`: it is removed.
    pub with: Option<&'a Turn>,
    /// The turn before it, and the one after it: a sealed turn is bound to the turn it
    /// follows, so the next turn follows the one before when this one is removed.
    pub before: Option<&'a str>,
    pub next: Option<&'a Turn>,
    /// The chat's compaction stands for this turn (it comes before the window's start), or
    /// is kept with it (it is the start, removed): a changed turn must not go on being
    /// sent in it, so it is dropped, and the window's turns are sent without it until the
    /// window moves again.
    pub drops_compacted: bool,
}

/// What a turn's write did: its chat's part (`Stored` when there was none), and its
/// caller's counters.
#[derive(Debug)]
pub struct Recorded {
    pub stored: Result<Written, StoreError>,
    pub counted: Result<(), StoreError>,
}

/// What a rewrite of one turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewritten {
    Done,
    /// The chat holds no turn of that id.
    Missing,
    /// The chat changed since the read: nothing written; read again.
    Moved,
}

/// A turn's write as two writes sent together: the turn in its chat (when it has one), and
/// its tokens in its caller's counters. What [`Turns::record`] does unless a store can do
/// better.
pub async fn record_apart<S: Turns + Usage + ?Sized>(
    store: &S,
    tenant: &Tenant,
    turn: Option<(&ChatId, &Turn, TurnExtras<'_>)>,
    spent: Spent<'_>,
) -> Recorded {
    let stored = async {
        match turn {
            Some((chat, turn, extras)) => store.append_turn(tenant, chat, turn, extras).await,
            None => Ok(Written::Stored),
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

#[async_trait::async_trait]
pub trait Turns: Send + Sync {
    /// The prompts, the newest turns and the version of a chat, in one round trip; with
    /// `claim`, the claim on its newest turn in the same read.
    async fn turn_context(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        claim: Option<TailClaim<'_>>,
    ) -> Result<TurnContext, StoreError>;
    /// Frees a claim on the chat's newest turn whose request failed, only while `claimant`
    /// holds it.
    async fn release_claim(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        claimant: &str,
    ) -> Result<(), StoreError>;
    /// Appends a turn when the chat is as `extras.expect` needs (else writes nothing and
    /// says why), trims the chat to its caps (oldest turns first, by messages and by
    /// bytes), adds the turn's tokens to the chat's usage, keeps `extras`, raises the
    /// chat's version and renews its expiry: one atomic write. Idempotent by the turn's id:
    /// a turn whose id was stored in the last hour is not stored again, so a write that may
    /// or may not have run can be sent again.
    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
    ) -> Result<Written, StoreError>;
    /// What a turn leaves behind, in one round trip: the turn in its chat (when it has one,
    /// as [`Turns::append_turn`]) and its tokens in its caller's counters (as
    /// [`Usage::add_usage`]). Each part is idempotent as those are.
    async fn record(
        &self,
        tenant: &Tenant,
        turn: Option<(&ChatId, &Turn, TurnExtras<'_>)>,
        spent: Spent<'_>,
    ) -> Recorded;
    /// Every kept turn of a chat, oldest first (at most `MAX_HISTORY_MESSAGES` messages).
    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError>;
    /// Replaces a turn with a new version of it (a conversation item deleted from it), or
    /// removes it (a deleted response), when the chat is still at version `seen`.
    async fn rewrite_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        rewrite: TurnRewrite<'_>,
        seen: u64,
    ) -> Result<Rewritten, StoreError>;
    /// Drops the chat's turns (its prompt and its usage stay) and raises its floor: a turn
    /// from a read before the clear is not stored after it.
    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;
}
