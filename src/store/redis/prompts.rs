//! The prompts in Redis: the caller's global prompt (`N:global:system`) and each chat's
//! (`N:chat:{ID}:system`), sealed like everything a chat says.

use fred::interfaces::KeysInterface;
use fred::prelude::Expiration;

use super::keys::ChatKeys;
use super::RedisStore;
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{Prompts, StoreError};

#[async_trait::async_trait]
impl Prompts for RedisStore {
    async fn global_prompt(&self, tenant: &Tenant) -> Result<Option<String>, StoreError> {
        let key = self.keys.global_prompt(tenant);
        let stored = self.client().get(&key).await.map_err(|e| self.error(e))?;
        self.sealing.open_optional(&key, "", stored)
    }

    async fn set_global_prompt(&self, tenant: &Tenant, content: &str) -> Result<(), StoreError> {
        let key = self.keys.global_prompt(tenant);
        let content = self.sealing.seal_text(&key, "", content)?;
        self.client()
            .set(key, content, None::<Expiration>, None, false)
            .await
            .map_err(|e| self.error(e))
    }

    async fn chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.chat(tenant, chat).system;
        let stored = self.client().get(&key).await.map_err(|e| self.error(e))?;
        self.sealing.open_optional(&key, "", stored)
    }

    async fn set_chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        content: &str,
    ) -> Result<(), StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let now = now_ms();
        let content = self.sealing.seal_text(&system, "", content)?;
        let args = vec![self.ttl_arg(), content, now.to_string()];
        let write = self.eval::<i64>(
            &self.scripts.set_chat_prompt,
            vec![system, turns, meta],
            args,
        );
        let set = self.with_index(tenant, chat, now, write).await?;
        self.unlist_if_temporary(tenant, chat, set).await;
        Ok(())
    }
}
