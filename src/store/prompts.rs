//! The prompts a turn starts with: the caller's global one (`POST /system`) and each
//! chat's own.

use super::StoreError;
use crate::chat::{ChatId, Tenant};

#[async_trait::async_trait]
pub trait Prompts: Send + Sync {
    async fn global_prompt(&self, tenant: &Tenant) -> Result<Option<String>, StoreError>;
    async fn set_global_prompt(&self, tenant: &Tenant, content: &str) -> Result<(), StoreError>;

    async fn chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError>;
    /// Sets the chat's prompt and renews the chat's expiry. Not a change to its turns: the
    /// chat's version stays, and a prompt set by one request is set whatever another did.
    async fn set_chat_prompt(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        content: &str,
    ) -> Result<(), StoreError>;
}
