//! `make reseal` (`bootstrap reseal`): every value sealed again under the first of
//! `SEAL_KEYS`, chat by chat, so that an older key can then be dropped; values stored plain,
//! before sealing was on, are sealed too. Safe while turns run: each value is put back only
//! where it is still what was read (`scripts/reseal.lua`), so a turn written meanwhile is
//! neither lost nor doubled, and a run sent twice rewrites nothing more. A value that does
//! not open is counted and left exactly as it is.

use futures_util::StreamExt;

use super::values::{answered, parse_held, Held};
use super::RedisStore;
use crate::store::StoreError;

/// What a reseal did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Values sealed again (or sealed for the first time).
    pub rewritten: u64,
    /// Values already sealed with the first key.
    pub current: u64,
    /// Values that do not open with any key: left as they are.
    pub unreadable: u64,
}

/// What a key of the store holds, by its name.
enum Holds {
    Turns,
    Text,
    Meta,
    Answer,
    Other,
}

fn holds(key: &str, prefix: &str) -> Holds {
    // A chat's keys: `..:chat:{ID}:<what>`; a caller's: `..:usage:{T}:<what>`.
    let after_tag = key.rfind('}').map(|at| &key[at + 1..]);
    match after_tag {
        Some(":turns") if key.contains(":chat:{") => Holds::Turns,
        Some(":system") if key.contains(":chat:{") => Holds::Text,
        Some(":meta") if key.contains(":chat:{") => Holds::Meta,
        Some(rest) if rest.starts_with(":idem:") => Holds::Answer,
        None if key.ends_with(":global:system") => Holds::Text,
        // A read-only link's snapshot: `P:share:<id>`.
        None if key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(":share:")) =>
        {
            Holds::Text
        }
        _ => Holds::Other,
    }
}

impl RedisStore {
    /// Seals every value of the store again under the first key.
    pub async fn reseal(&self) -> Result<Resealed, StoreError> {
        if self.sealing.0.is_none() {
            return Err(StoreError::new(
                "SEAL_KEYS is not set: there is no key to seal with",
            ));
        }
        let pattern = format!("{}:*", self.keys.prefix());
        let client = self.client();
        let found: Vec<Result<fred::types::Key, fred::error::Error>> = if self.connection.clustered
        {
            client
                .scan_cluster_buffered(pattern, Some(500), None)
                .collect()
                .await
        } else {
            client
                .scan_buffered(pattern, Some(500), None)
                .collect()
                .await
        };
        let mut report = Resealed::default();
        for key in found {
            let key = key.map_err(|e| self.error(e))?;
            let Some(key) = key.as_str().map(str::to_owned) else {
                continue;
            };
            match holds(&key, self.keys.prefix()) {
                Holds::Turns => self.reseal_turns(&key, &mut report).await?,
                Holds::Text => self.reseal_text(&key, &mut report).await?,
                Holds::Meta => self.reseal_meta(&key, &mut report).await?,
                Holds::Answer => self.reseal_answer(&key, &mut report).await?,
                Holds::Other => {}
            }
        }
        Ok(report)
    }

    async fn put_back(&self, keys: Vec<String>, args: Vec<String>) -> Result<u64, StoreError> {
        self.eval::<u64>(&self.scripts.reseal, keys, args).await
    }

    async fn reseal_turns(&self, key: &str, report: &mut Resealed) -> Result<(), StoreError> {
        use fred::interfaces::ListInterface;
        let stored: Vec<String> = self
            .client()
            .lrange(key, 0, -1)
            .await
            .map_err(|e| self.error(e))?;
        let mut args = vec!["list".to_owned()];
        // Each turn stays bound to the turn it was sealed after; one sealed before order was
        // bound is bound now to the turn before it.
        let mut before = String::new();
        for value in stored {
            match self.sealing.decode_placed(key, &value) {
                Ok((turn, after)) => {
                    let id = turn.id.clone().unwrap_or_default();
                    if after.is_some() && self.sealing.is_current(&value) {
                        report.current += 1;
                    } else {
                        let after = after.unwrap_or_else(|| before.clone());
                        let sealed = self.sealing.encode_turn(key, &turn, &after)?;
                        args.extend([value, sealed]);
                    }
                    before = id;
                }
                Err(error) => {
                    tracing::error!(%error, "a turn that does not open is left as it is");
                    report.unreadable += 1;
                }
            }
        }
        if args.len() > 1 {
            let meta = format!("{}:meta", key.trim_end_matches(":turns"));
            report.rewritten += self.put_back(vec![key.to_owned(), meta], args).await?;
        }
        Ok(())
    }

    /// A text again, bound to `key` and `field` as before; `None` when it needs nothing.
    fn sealed_again(
        &self,
        key: &str,
        field: &str,
        value: &str,
        report: &mut Resealed,
    ) -> Result<Option<String>, StoreError> {
        if self.sealing.is_current(value) {
            report.current += 1;
            return Ok(None);
        }
        match self.sealing.open_text(key, field, value.to_owned()) {
            Ok(plain) => self.sealing.seal_text(key, field, &plain).map(Some),
            Err(error) => {
                tracing::error!(%error, "a value that does not open is left as it is");
                report.unreadable += 1;
                Ok(None)
            }
        }
    }

    async fn reseal_text(&self, key: &str, report: &mut Resealed) -> Result<(), StoreError> {
        use fred::interfaces::KeysInterface;
        let stored: Option<String> = self.client().get(key).await.map_err(|e| self.error(e))?;
        let Some(value) = stored else {
            return Ok(());
        };
        if let Some(sealed) = self.sealed_again(key, "", &value, report)? {
            let args = vec!["string".to_owned(), value, sealed];
            report.rewritten += self.put_back(vec![key.to_owned()], args).await?;
        }
        Ok(())
    }

    async fn reseal_meta(&self, key: &str, report: &mut Resealed) -> Result<(), StoreError> {
        use fred::interfaces::HashesInterface;
        const SEALED_FIELDS: [&str; 4] = ["title", "auto_title", "metadata", "compacted"];
        let stored: Vec<Option<String>> = self
            .client()
            .hmget(key, SEALED_FIELDS.to_vec())
            .await
            .map_err(|e| self.error(e))?;
        let mut args = vec!["hash".to_owned()];
        for (field, value) in SEALED_FIELDS.iter().zip(stored) {
            let Some(value) = value.filter(|value| !value.is_empty()) else {
                continue;
            };
            if let Some(sealed) = self.sealed_again(key, field, &value, report)? {
                args.extend([(*field).to_owned(), value, sealed]);
            }
        }
        if args.len() > 1 {
            report.rewritten += self.put_back(vec![key.to_owned()], args).await?;
        }
        Ok(())
    }

    async fn reseal_answer(&self, key: &str, report: &mut Resealed) -> Result<(), StoreError> {
        use fred::interfaces::KeysInterface;
        let stored: Option<String> = self.client().get(key).await.map_err(|e| self.error(e))?;
        let Some(value) = stored else {
            return Ok(());
        };
        // Only an answered key holds texts (the request's fingerprint and its answer); a
        // held one is its request's, for seconds.
        let Ok(Some(Held::Answered {
            fingerprint,
            answer,
        })) = parse_held(&value)
        else {
            return Ok(());
        };
        let fingerprint_again = self.sealed_again(key, "fingerprint", &fingerprint, report)?;
        let answer_again = self.sealed_again(key, "", &answer, report)?;
        if fingerprint_again.is_some() || answer_again.is_some() {
            let again = answered(
                fingerprint_again.as_deref().unwrap_or(&fingerprint),
                answer_again.as_deref().unwrap_or(&answer),
            );
            let args = vec!["string".to_owned(), value, again];
            report.rewritten += self.put_back(vec![key.to_owned()], args).await?;
        }
        Ok(())
    }
}
