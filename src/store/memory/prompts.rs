//! The prompts in memory.

use super::{key, MemoryStore};
use crate::chat::{ChatId, Tenant};
use crate::store::{Prompts, StoreError};

#[async_trait::async_trait]
impl Prompts for MemoryStore {
    async fn global_prompt(&self, tenant: &Tenant) -> Result<Option<String>, StoreError> {
        Ok(self.state().global_prompts.get(tenant).cloned())
    }

    async fn set_global_prompt(&self, tenant: &Tenant, content: &str) -> Result<(), StoreError> {
        self.state()
            .global_prompts
            .insert(tenant.clone(), content.to_owned());
        Ok(())
    }

    async fn chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError> {
        let mut state = self.state();
        Ok(self
            .live(&mut state, &key(tenant, chat))
            .and_then(|c| c.prompt.clone()))
    }

    async fn set_chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        content: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        self.touched(&mut state, &key(tenant, chat)).prompt = Some(content.to_owned());
        Ok(())
    }
}
