//! A chat's read-only links in Redis: the chat's list of them (`N:chat:{ID}:shares`, in its
//! slot) and each snapshot under its token (`P:share:<token>`, sealed, expiring with its
//! link). The two live in different slots, so a link is listed first and its snapshot kept
//! second; a revocation takes it off the list and drops its snapshot together.

use fred::interfaces::{HashesInterface, KeysInterface};
use fred::prelude::Expiration;

use super::RedisStore;
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{ShareLink, Shares, StoreError};

#[async_trait::async_trait]
impl Shares for RedisStore {
    async fn share(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        link: &ShareLink,
        snapshot: &str,
    ) -> Result<(), StoreError> {
        let index = self.keys.chat(tenant, chat).shares();
        let args = vec![
            link.token.clone(),
            link.listed(),
            link.expires_at.to_string(),
        ];
        self.eval::<i64>(&self.scripts.share, vec![index], args)
            .await?;
        let key = self.keys.share(&link.token);
        let sealed = self.sealing.seal_text(&key, "", snapshot)?;
        let ttl = link.expires_at.saturating_sub(now_ms() / 1000).max(1);
        self.client()
            .set::<(), _, _>(key, sealed, Some(Expiration::EX(ttl as i64)), None, false)
            .await
            .map_err(|e| self.error(e))
    }

    async fn shared(&self, token: &str) -> Result<Option<String>, StoreError> {
        let key = self.keys.share(token);
        let stored = self.client().get(&key).await.map_err(|e| self.error(e))?;
        self.sealing.open_optional(&key, "", stored)
    }

    async fn shares(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<ShareLink>, StoreError> {
        let index = self.keys.chat(tenant, chat).shares();
        let listed: Vec<(String, String)> = self
            .client()
            .hgetall::<std::collections::HashMap<String, String>, _>(&index)
            .await
            .map_err(|e| self.error(e))?
            .into_iter()
            .collect();
        let now = now_ms() / 1000;
        let mut links: Vec<ShareLink> = listed
            .into_iter()
            .filter_map(|(token, entry)| ShareLink::from_listed(token, &entry))
            .filter(|link| link.expires_at > now)
            .collect();
        links.sort_by(|a, b| (b.created_at, &b.token).cmp(&(a.created_at, &a.token)));
        Ok(links)
    }

    async fn revoke(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        token: &str,
    ) -> Result<bool, StoreError> {
        let index = self.keys.chat(tenant, chat).shares();
        // Only a token on this chat's list is this chat's to revoke.
        let removed: i64 = self
            .client()
            .hdel(&index, token)
            .await
            .map_err(|e| self.error(e))?;
        if removed == 0 {
            return Ok(false);
        }
        self.client()
            .del::<i64, _>(self.keys.share(token))
            .await
            .map_err(|e| self.error(e))?;
        Ok(true)
    }

    async fn revoke_all(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let index = self.keys.chat(tenant, chat).shares();
        let tokens: Vec<String> = self
            .client()
            .hkeys(&index)
            .await
            .map_err(|e| self.error(e))?;
        // Each snapshot, then the list: a cut between leaves the list to revoke from again.
        let snapshots = tokens.iter().map(|token| self.keys.share(token));
        let drops = snapshots.map(|key| self.client().del::<i64, _>(key));
        for dropped in futures_util::future::join_all(drops).await {
            dropped.map_err(|e| self.error(e))?;
        }
        self.client()
            .del::<i64, _>(index)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}
