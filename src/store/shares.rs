//! Read-only links to a snapshot of a chat (`POST /<chat_id>/share`): the snapshot kept
//! under its token, which anyone holding the token may read until it expires or is revoked,
//! and the chat's own list of its links, which only its caller reads and revokes. A
//! deleted chat's links go with it.

use super::StoreError;
use crate::chat::{ChatId, Tenant};

/// One of a chat's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    /// What names the link: at least 128 random bits, never derived from the chat.
    pub token: String,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
}

impl ShareLink {
    /// As the chat's list keeps it: `<created_at>:<expires_at>`.
    pub fn listed(&self) -> String {
        format!("{}:{}", self.created_at, self.expires_at)
    }

    /// A link from its token and its entry in the chat's list.
    pub fn from_listed(token: String, listed: &str) -> Option<ShareLink> {
        let (created, expires) = listed.split_once(':')?;
        Some(ShareLink {
            token,
            created_at: created.parse().ok()?,
            expires_at: expires.parse().ok()?,
        })
    }
}

#[async_trait::async_trait]
pub trait Shares: Send + Sync {
    /// Keeps `snapshot` under the link's token until it expires, and lists the link with
    /// the chat (listed first, so that a link that exists can always be revoked).
    async fn share(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        link: &ShareLink,
        snapshot: &str,
    ) -> Result<(), StoreError>;
    /// The snapshot a token names, while its link lives.
    async fn shared(&self, token: &str) -> Result<Option<String>, StoreError>;
    /// The chat's links that have not expired, newest first.
    async fn shares(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<ShareLink>, StoreError>;
    /// Revokes the chat's link `token`: its snapshot is gone at once. False when the chat
    /// has no such link (another chat's, or another caller's, is not its).
    async fn revoke(&self, tenant: &Tenant, chat: &ChatId, token: &str)
        -> Result<bool, StoreError>;
    /// Revokes every link of the chat (it is being deleted).
    async fn revoke_all(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;
}
