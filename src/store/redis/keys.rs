//! The key scheme, in one place. With `P` = `REDIS_KEY_PREFIX`, `ID` = the chat id, `T` the
//! tenant's name (`open` for an open API) and `N` = `P` for an open API or `P:caller:<name>`
//! for a caller of `PROXY_API_KEYS`:
//! - `N:global:system`          string: the global system prompt
//! - `N:chat:{ID}:system`       string: the chat's system prompt
//! - `N:chat:{ID}:turns`        list of JSON turns, oldest first
//! - `N:chat:{ID}:meta`         hash: `v`, the chat's version (`store/mod.rs`), `bytes` and
//!   `messages` (the size of the turns list
//!   and the messages it holds), `window` (the context window's first turn), and the chat's
//!   usage: `turns`, `prompt_tokens`, `completion_tokens`, `cached_tokens`; `updated` (its
//!   last write, Unix milliseconds) and `born` (Unix seconds), `title` (set by hand) and
//!   `auto_title` (its first question's); a conversation's `created_at` and `metadata`; a
//!   temporary chat's `temp` (how long its keys live after each write, in seconds)
//! - `N:chat:{ID}:turn:<turn>`  marker that turn `<turn>` was stored (one hour)
//! - `N:chat:{ID}:write:<token>` marker that a rewrite, a clear or a deletion ran (one hour)
//! - `N:chat:{ID}:floor`        integer: the version a clear or a deletion raised the chat
//!   to; a write from a read below it is late (one hour: a deleted chat's tombstone)
//! - `N:chat:{ID}:next`         the claim on the chat's newest turn: `<turn id>\n<claimant>`
//!   (until the claimant's deadline)
//! - `N:chat:{ID}:idem:<hash>`  an `Idempotency-Key` of the chat: held, or its answer (24 h)
//! - `N:chat:{ID}:idems`        set: the hashes of those keys, for deleting the chat
//! - `N:usage:{T}:day:<date>`   hash: the caller's tokens that UTC day, overall and per model
//! - `N:usage:{T}:month:<month>` the same for the month
//! - `N:usage:{T}:ip:<ip>:<date>` integer: an open API's tokens from one address that day
//! - `N:usage:{T}:spent:<id>`   marker that request `<id>` was counted (one hour)
//! - `N:usage:{T}:idem:<hash>`  an `Idempotency-Key` of a stateless call
//! - `N:usage:{T}:chats`        sorted set: the caller's chats by their last write (Unix
//!   milliseconds), in the counters' slot so that a turn's count updates it
//! - `N:usage:{T}:made`         sorted set: the same chats by when they were made (first
//!   listed), for a list whose order no write changes (`GET /v1/conversations`)
//! - `N:chat:{ID}:shares`       hash: the chat's read-only links, each link's id (the
//!   SHA-256 of its token) with `<created_at>:<expires_at>` (as long as its longest-lived
//!   link)
//! - `P:share:<id>`             string: a link's snapshot of a chat and the list it must be
//!   on (sealed), until it expires; found by the link's id alone, whoever asks
//! - `P:requests:<who>`         hash: the requests counted in the current window of
//!   `RATE_LIMIT_PER_MINUTE`, each by its id, with its place in the count
//!
//! A chat's keys share the hash tag `{ID}`, and a caller's counters the tag `{T}`, so each
//! group lives in one Cluster slot and one script can write it.

use crate::chat::{ChatId, Tenant};
use crate::clock::UtcDay;
use crate::store::IdempotencyKey;

/// Names every key from the configured prefix.
pub(super) struct Keys {
    prefix: String,
}

/// The keys of one chat.
pub(super) struct ChatKeys {
    pub system: String,
    pub turns: String,
    pub meta: String,
    /// `N:chat:{ID}`, the start of every key of the chat.
    pub base: String,
}

impl ChatKeys {
    /// The set of the chat's `Idempotency-Key` hashes.
    pub fn idempotency_keys(&self) -> String {
        format!("{}:idems", self.base)
    }

    /// The marker that a turn was stored.
    pub fn turn_marker(&self, turn: &str) -> String {
        format!("{}:turn:{turn}", self.base)
    }

    /// The marker that a rewrite, a clear or a deletion ran.
    pub fn write_marker(&self, token: &str) -> String {
        format!("{}:write:{token}", self.base)
    }

    /// The chat's floor: its tombstone once deleted.
    pub fn floor(&self) -> String {
        format!("{}:floor", self.base)
    }

    /// The claim on the chat's newest turn.
    pub fn next(&self) -> String {
        format!("{}:next", self.base)
    }

    /// The chat's read-only links.
    pub fn shares(&self) -> String {
        format!("{}:shares", self.base)
    }

    /// The ids of the background runs whose answers land in the chat, so that deleting the
    /// chat deletes them.
    pub fn runs(&self) -> String {
        format!("{}:runs", self.base)
    }

    /// A background run whose answer lands in the chat, by its answer's turn id.
    pub fn run(&self, id: &str) -> String {
        format!("{}:run:{id}", self.base)
    }

    /// The id of the chat's live turn (a streamed turn being made), until its deadline.
    pub fn live(&self) -> String {
        format!("{}:live", self.base)
    }

    /// A background run's recorded events.
    pub fn run_events(&self, id: &str) -> String {
        format!("{}:run:{id}:events", self.base)
    }
}

/// The counters of one caller for one day.
pub(super) struct UsageKeys {
    pub day: String,
    pub month: String,
    /// The open API's count for one address, when there is one.
    pub ip: Option<String>,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// What every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The first part of every key of `tenant`'s data.
    fn namespace(&self, tenant: &Tenant) -> String {
        match tenant {
            Tenant::Open => self.prefix.clone(),
            Tenant::Caller(name) => format!("{}:caller:{name}", self.prefix),
        }
    }

    pub fn global_prompt(&self, tenant: &Tenant) -> String {
        format!("{}:global:system", self.namespace(tenant))
    }

    pub fn chat(&self, tenant: &Tenant, chat: &ChatId) -> ChatKeys {
        let base = format!("{}:chat:{{{}}}", self.namespace(tenant), chat.as_str());
        ChatKeys {
            system: format!("{base}:system"),
            turns: format!("{base}:turns"),
            meta: format!("{base}:meta"),
            base,
        }
    }

    /// `N:usage:{T}`, the start of every counter key of `tenant`.
    fn usage_base(&self, tenant: &Tenant) -> String {
        format!("{}:usage:{{{}}}", self.namespace(tenant), tenant.name())
    }

    pub fn usage(&self, tenant: &Tenant, day: &UtcDay, ip: Option<&str>) -> UsageKeys {
        let base = self.usage_base(tenant);
        UsageKeys {
            day: format!("{base}:day:{}", day.date),
            month: format!("{base}:month:{}", day.month),
            ip: ip.map(|ip| format!("{base}:ip:{ip}:{}", day.date)),
        }
    }

    /// The caller's index of chats, newest write first.
    pub fn chat_index(&self, tenant: &Tenant) -> String {
        format!("{}:chats", self.usage_base(tenant))
    }

    /// The caller's index of chats by birth, newest first.
    pub fn chats_made(&self, tenant: &Tenant) -> String {
        format!("{}:made", self.usage_base(tenant))
    }

    /// The marker that a request's tokens were counted.
    /// Which stored response holds the caller's item `item` (an output item's own id).
    pub fn item(&self, tenant: &Tenant, item: &str) -> String {
        format!("{}:item:{item}", self.usage_base(tenant))
    }

    pub fn spent_marker(&self, tenant: &Tenant, request: &str) -> String {
        format!("{}:spent:{request}", self.usage_base(tenant))
    }

    /// An `Idempotency-Key`: in its chat's slot, or for a stateless call in the caller's.
    pub fn idempotency(&self, tenant: &Tenant, key: &IdempotencyKey) -> String {
        match &key.chat {
            Some(chat) => format!("{}:idem:{}", self.chat(tenant, chat).base, key.hash),
            None => format!("{}:idem:{}", self.usage_base(tenant), key.hash),
        }
    }

    /// A link's snapshot, named by the link's id alone (whoever holds its token reads it).
    pub fn share(&self, id: &str) -> String {
        format!("{}:share:{id}", self.prefix)
    }

    /// The window of `RATE_LIMIT_PER_MINUTE` of `who` (a caller, or an address).
    pub fn requests(&self, who: &str) -> String {
        format!("{}:requests:{who}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chats_keys_and_a_callers_counters_each_share_one_hash_tag() {
        let keys = Keys::new("p");
        let alice = Tenant::Caller("alice".into());
        let chat = keys.chat(&alice, &ChatId::parse("c1").unwrap());
        assert_eq!(chat.turns, "p:caller:alice:chat:{c1}:turns");
        assert_eq!(chat.turn_marker("t1"), "p:caller:alice:chat:{c1}:turn:t1");
        let day = UtcDay::at(1_795_597_200);
        let usage = keys.usage(&Tenant::Open, &day, Some("1.2.3.4"));
        assert_eq!(usage.day, "p:usage:{open}:day:2026-11-25");
        assert_eq!(
            usage.ip.as_deref(),
            Some("p:usage:{open}:ip:1.2.3.4:2026-11-25")
        );
        assert_eq!(keys.global_prompt(&Tenant::Open), "p:global:system");
        assert_eq!(keys.requests("ip:1.2.3.4"), "p:requests:ip:1.2.3.4");
    }
}
