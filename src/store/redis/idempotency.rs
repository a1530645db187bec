//! `Idempotency-Key`s in Redis: a claim (`claim.lua`) held until its request ends, then its
//! answer, sealed, for 24 hours; a chat's keys are listed in the chat, so that deleting the
//! chat deletes them.

use super::values::{answered, parse_held, pending, Held};
use super::RedisStore;
use crate::chat::Tenant;
use crate::store::{
    Claim, Claimant, Idempotency, IdempotencyKey, KeptAnswer, StoreError, ANSWER_SECONDS,
};

/// The field a request's fingerprint is sealed or MAC'd under, beside its key.
const FINGERPRINT: &str = "fingerprint";

impl RedisStore {
    /// An answered `Idempotency-Key`'s value: the request's fingerprint and its answer,
    /// each sealed to the key they are kept under (a plain hash of the request would let a
    /// reader of Redis confirm a guess of what it asked).
    pub(super) fn seal_answer(
        &self,
        key: &str,
        kept: KeptAnswer<'_>,
    ) -> Result<String, StoreError> {
        let fingerprint = self.sealing.seal_text(key, FINGERPRINT, kept.fingerprint)?;
        let answer = self.sealing.seal_text(key, "", kept.answer)?;
        Ok(answered(&fingerprint, &answer))
    }

    /// A held key's value for `claimant`: the same each time it is made.
    fn pending_value(&self, key: &str, claimant: Claimant<'_>) -> String {
        let fingerprint = self.sealing.mac(key, FINGERPRINT, claimant.fingerprint);
        pending(&fingerprint, claimant.token)
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
        let idem = self.keys.idempotency(tenant, key);
        let mut keys = vec![idem.clone()];
        let mut args = vec![self.pending_value(&idem, claimant), hold];
        // A chat's keys are listed in the chat, so that deleting it deletes them.
        if let Some(chat) = &key.chat {
            keys.push(self.keys.chat(tenant, chat).idempotency_keys());
            args.push(key.hash.clone());
            args.push((ANSWER_SECONDS + claimant.hold.as_secs() + 3600).to_string());
        }
        let found: String = self.eval(&self.scripts.claim, keys, args).await?;
        Ok(match parse_held(&found)? {
            None => Claim::Claimed,
            Some(Held::Pending { fingerprint }) => Claim::InProgress {
                same: self.sealing.mac_matches(
                    &idem,
                    FINGERPRINT,
                    &fingerprint,
                    claimant.fingerprint,
                ),
            },
            Some(Held::Answered {
                fingerprint,
                answer,
            }) => Claim::Answered {
                same: self.sealing.open_text(&idem, FINGERPRINT, fingerprint)?
                    == claimant.fingerprint,
                answer: self.sealing.open_text(&idem, "", answer)?,
            },
        })
    }

    async fn release(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<(), StoreError> {
        let idem = self.keys.idempotency(tenant, key);
        let held = self.pending_value(&idem, claimant);
        self.eval::<i64>(&self.scripts.release, vec![idem], vec![held])
            .await
            .map(drop)
    }

    async fn keep_answer(&self, tenant: &Tenant, kept: KeptAnswer<'_>) -> Result<(), StoreError> {
        let key = self.keys.idempotency(tenant, kept.key);
        use fred::interfaces::KeysInterface;
        let value = self.seal_answer(&key, kept)?;
        self.client()
            .set::<(), _, _>(
                key,
                value,
                Some(fred::prelude::Expiration::EX(ANSWER_SECONDS as i64)),
                None,
                false,
            )
            .await
            .map_err(|e| self.error(e))
    }
}
