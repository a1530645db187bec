//! A chat's read-only links in Redis: the chat's list of them (`N:chat:{ID}:shares`, in its
//! slot, by link id) and each snapshot under its link's id (`P:share:<id>`, sealed, with the
//! name of the list it must be on, expiring with its link). The two live in different
//! slots: a link is listed first (`share.lua`, which checks the chat in its slot) and its
//! snapshot kept second; a snapshot is answered only while its link is listed; a
//! revocation drops the snapshot, then takes the link off the list.

use fred::interfaces::{HashesInterface, KeysInterface};
use fred::prelude::Expiration;
use serde::{Deserialize, Serialize};

use super::RedisStore;
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{ShareLink, Shared, Shares, StoreError, MAX_LINKS_PER_CHAT};

/// What a snapshot's key holds, sealed whole.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// The list its link must be on.
    list: String,
    snapshot: String,
}

#[async_trait::async_trait]
impl Shares for RedisStore {
    async fn share(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        link: &ShareLink,
        snapshot: &str,
    ) -> Result<Shared, StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let list = keys.shares();
        let now = now_ms() / 1000;
        let ttl = link.expires_at.saturating_sub(now).max(1);
        let args = vec![
            link.id.clone(),
            link.listed(),
            ttl.to_string(),
            now.to_string(),
            MAX_LINKS_PER_CHAT.to_string(),
        ];
        let listed: i64 = self
            .eval(&self.scripts.share, vec![list.clone(), keys.turns], args)
            .await?;
        match listed {
            0 => return Ok(Shared::ChatGone),
            2 => return Ok(Shared::TooMany),
            _ => {}
        }
        let key = self.keys.share(&link.id);
        let kept = Kept {
            list,
            snapshot: snapshot.to_owned(),
        };
        let json = serde_json::to_string(&kept).map_err(|e| StoreError::new(e.to_string()))?;
        let sealed = self.sealing.seal_text(&key, "", &json)?;
        self.client()
            .set::<(), _, _>(key, sealed, Some(Expiration::EX(ttl as i64)), None, false)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Shared::Made)
    }

    async fn shared(&self, id: &str) -> Result<Option<String>, StoreError> {
        let key = self.keys.share(id);
        let stored = self.client().get(&key).await.map_err(|e| self.error(e))?;
        let Some(json) = self.sealing.open_optional(&key, "", stored)? else {
            return Ok(None);
        };
        let kept: Kept = serde_json::from_str(&json).map_err(|e| StoreError::new(e.to_string()))?;
        let listed: bool = self
            .client()
            .hexists(&kept.list, id)
            .await
            .map_err(|e| self.error(e))?;
        if !listed {
            // Made as its chat was deleted, or left by a revocation cut half-way.
            self.client()
                .del::<i64, _>(&key)
                .await
                .map_err(|e| self.error(e))?;
            return Ok(None);
        }
        Ok(Some(kept.snapshot))
    }

    async fn shares(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<ShareLink>, StoreError> {
        let list = self.keys.chat(tenant, chat).shares();
        let listed: std::collections::HashMap<String, String> = self
            .client()
            .hgetall(&list)
            .await
            .map_err(|e| self.error(e))?;
        let now = now_ms() / 1000;
        let mut links: Vec<ShareLink> = listed
            .into_iter()
            .filter_map(|(id, entry)| ShareLink::from_listed(id, &entry))
            .filter(|link| link.lives_at(now))
            .collect();
        links.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(links)
    }

    async fn revoke(&self, tenant: &Tenant, chat: &ChatId, id: &str) -> Result<bool, StoreError> {
        let list = self.keys.chat(tenant, chat).shares();
        // Only a link on this chat's list is this chat's to revoke.
        let entry: Option<String> = self
            .client()
            .hget(&list, id)
            .await
            .map_err(|e| self.error(e))?;
        let Some(link) = entry.and_then(|entry| ShareLink::from_listed(id.to_owned(), &entry))
        else {
            return Ok(false);
        };
        // The snapshot first: a cut after it leaves the link listed, to revoke again.
        self.client()
            .del::<i64, _>(self.keys.share(id))
            .await
            .map_err(|e| self.error(e))?;
        self.client()
            .hdel::<i64, _, _>(&list, id)
            .await
            .map_err(|e| self.error(e))?;
        Ok(link.lives_at(now_ms() / 1000))
    }

    async fn revoke_all(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let list = self.keys.chat(tenant, chat).shares();
        let ids: Vec<String> = self
            .client()
            .hkeys(&list)
            .await
            .map_err(|e| self.error(e))?;
        // Each snapshot, then the list: a cut between leaves the list to revoke from again.
        let drops = ids
            .iter()
            .map(|id| self.client().del::<i64, _>(self.keys.share(id)));
        for dropped in futures_util::future::join_all(drops).await {
            dropped.map_err(|e| self.error(e))?;
        }
        self.client()
            .del::<i64, _>(list)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}
