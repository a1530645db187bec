//! `Idempotency-Key`s: a request claims its key, and its answer is kept for a retry.

use super::StoreError;
use crate::chat::{ChatId, Tenant};

/// How long an answered `Idempotency-Key` replays its answer.
pub const ANSWER_SECONDS: u64 = 24 * 3600;

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

/// What a claim on an `Idempotency-Key` found. `same`: the other request asked what this
/// one asks (the store compares the fingerprints, which it may keep only as MACs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free; this request holds it now.
    Claimed,
    /// A request with this key is running.
    InProgress { same: bool },
    /// A request with this key was answered.
    Answered { same: bool, answer: String },
}

#[async_trait::async_trait]
pub trait Idempotency: Send + Sync {
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
    /// Keeps the answer of a request that holds its key and wrote nothing else with it (a
    /// background response, answered `queued`), for 24 hours. Safe to send twice.
    async fn keep_answer(&self, tenant: &Tenant, kept: KeptAnswer<'_>) -> Result<(), StoreError>;
}
