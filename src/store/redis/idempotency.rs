//! `Idempotency-Key`s in Redis: a claim (`claim.lua`) held until its request ends, then its
//! answer, sealed, for 24 hours; a chat's keys are listed in the chat, so that deleting the
//! chat deletes them.

use super::values::{answered, parse_claim, pending};
use super::RedisStore;
use crate::chat::Tenant;
use crate::store::{
    Claim, Claimant, Idempotency, IdempotencyKey, KeptAnswer, StoreError, ANSWER_SECONDS,
};

impl RedisStore {
    /// An answered `Idempotency-Key`'s value, its answer sealed to the key it is kept under.
    pub(super) fn seal_answer(
        &self,
        key: &str,
        kept: KeptAnswer<'_>,
    ) -> Result<String, StoreError> {
        let answer = self.sealing.seal_text(key, "", kept.answer)?;
        Ok(answered(KeptAnswer {
            answer: &answer,
            ..kept
        }))
    }
}

#[async_trait::async_trait]
impl Idempotency for RedisStore {
    async fn claim(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<Claim, StoreError> {
        let hold = claimant.hold.as_secs().max(1).to_string();
        let mut keys = vec![self.keys.idempotency(tenant, key)];
        let mut args = vec![pending(claimant), hold];
        // A chat's keys are listed in the chat, so that deleting it deletes them.
        if let Some(chat) = &key.chat {
            keys.push(self.keys.chat(tenant, chat).idempotency_keys());
            args.push(key.hash.clone());
            args.push((ANSWER_SECONDS + claimant.hold.as_secs() + 3600).to_string());
        }
        let idem = keys[0].clone();
        let found: String = self.eval(&self.scripts.claim, keys, args).await?;
        match parse_claim(&found)? {
            Claim::Answered {
                fingerprint,
                answer,
            } => Ok(Claim::Answered {
                fingerprint,
                answer: self.sealing.open_text(&idem, "", answer)?,
            }),
            claim => Ok(claim),
        }
    }

    async fn release(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<(), StoreError> {
        self.eval::<i64>(
            &self.scripts.release,
            vec![self.keys.idempotency(tenant, key)],
            vec![pending(claimant)],
        )
        .await
        .map(drop)
    }
}
