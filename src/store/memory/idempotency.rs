//! `Idempotency-Key`s in memory.

use std::time::{Duration, Instant};

use super::{Held, MemoryStore, State};
use crate::chat::Tenant;
use crate::store::{
    Claim, Claimant, Idempotency, IdempotencyKey, KeptAnswer, StoreError, ANSWER_SECONDS,
};

#[async_trait::async_trait]
impl Idempotency for MemoryStore {
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
                same: fingerprint == claimant.fingerprint,
            },
            Some((Held::Answered(fingerprint, answer), _)) => Claim::Answered {
                same: fingerprint == claimant.fingerprint,
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

    async fn keep_answer(&self, tenant: &Tenant, kept: KeptAnswer<'_>) -> Result<(), StoreError> {
        keep(&mut self.state(), tenant, kept, None);
        Ok(())
    }
}

/// Keeps an answer for its `Idempotency-Key`, for a day or, in a temporary chat, no longer
/// than the chat is kept (`within`).
pub(super) fn keep(
    state: &mut State,
    tenant: &Tenant,
    kept: KeptAnswer<'_>,
    within: Option<Duration>,
) {
    let held = Held::Answered(kept.fingerprint.to_owned(), kept.answer.to_owned());
    let day = Duration::from_secs(ANSWER_SECONDS);
    let until = Instant::now() + within.map_or(day, |within| within.min(day));
    state
        .keys
        .insert((tenant.clone(), kept.key.clone()), (held, until));
}
