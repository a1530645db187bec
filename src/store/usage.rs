//! Usage and limits: what each caller spent (by day, month and model), the requests it
//! made in its rate-limit window, and where a stored response's output items are (recorded
//! in the same write as a turn's tokens).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{KeptAnswer, StoreError};
use crate::chat::{ChatId, Tenant};
use crate::clock::UtcDay;

/// How long a rate-limit window lasts: the first request of a caller opens one.
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// Kept as long as a temporary chat is (its `TEMPORARY_CHAT_SECONDS`) rather than as
    /// long as chats are.
    pub temporary: Option<std::time::Duration>,
}

/// Token counts of a period, overall or for one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

impl Tokens {
    pub fn add(&mut self, more: Tokens) {
        self.prompt_tokens += more.prompt_tokens;
        self.completion_tokens += more.completion_tokens;
        self.cached_tokens += more.cached_tokens;
        self.total_tokens += more.total_tokens;
    }
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

/// How many requests a caller has made in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    pub count: u64,
    /// Seconds until the window ends and the count starts again.
    pub resets_in: u64,
}

#[async_trait::async_trait]
pub trait Usage: Send + Sync {
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
