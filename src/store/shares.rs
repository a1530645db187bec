//! Read-only links to a snapshot of a chat (`POST /<chat_id>/share`): the snapshot kept
//! under its link, which anyone holding the link's token may read until it expires or is
//! revoked, and the chat's own list of its links, which only its caller reads and revokes.
//! A link is known to the store by its id, a SHA-256 of its token: the token itself (the
//! only thing that opens the snapshot) is never kept, so whoever reads Redis cannot use a
//! link. A deleted chat's links go with it, and a snapshot is answered only while its link
//! is on its chat's list, so a link made as its chat was being deleted is never answered.

use sha2::{Digest, Sha256};

use super::StoreError;
use crate::chat::{ChatId, Tenant};

/// The most links a chat may have at once.
pub const MAX_LINKS_PER_CHAT: usize = 100;

/// One of a chat's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    /// The SHA-256 of its token, in hex: what the store and the owner's list know it by.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
}

impl ShareLink {
    /// As the chat's list keeps it: `<created_at>:<expires_at>`.
    pub fn listed(&self) -> String {
        format!("{}:{}", self.created_at, self.expires_at)
    }

    /// A link from its id and its entry in the chat's list.
    pub fn from_listed(id: String, listed: &str) -> Option<ShareLink> {
        let (created, expires) = listed.split_once(':')?;
        Some(ShareLink {
            id,
            created_at: created.parse().ok()?,
            expires_at: expires.parse().ok()?,
        })
    }

    /// Whether it still lives at `now` (Unix seconds).
    pub fn lives_at(&self, now: u64) -> bool {
        self.expires_at > now
    }
}

/// A link's id: the SHA-256 of its token, in hex.
pub fn link_id(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What making a link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Made,
    /// The chat has no turns (any more): nothing is kept.
    ChatGone,
    /// The chat has [`MAX_LINKS_PER_CHAT`] links that live: nothing is kept.
    TooMany,
}

#[async_trait::async_trait]
pub trait Shares: Send + Sync {
    /// Lists the link with the chat (while the chat has turns, and fewer than
    /// [`MAX_LINKS_PER_CHAT`] links that live; expired ones are dropped), then keeps
    /// `snapshot` under it until it expires. Safe to send twice.
    async fn share(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        link: &ShareLink,
        snapshot: &str,
    ) -> Result<Shared, StoreError>;
    /// The snapshot of the link `id`, while the link lives and is on its chat's list (a
    /// snapshot whose link is not is dropped).
    async fn shared(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// The chat's links that live, newest first.
    async fn shares(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<ShareLink>, StoreError>;
    /// Revokes the chat's link `id`: its snapshot is gone, then it leaves the list (sent
    /// again, it finds nothing more to do and still says it was the chat's). False when the
    /// chat has no such link that lives (another chat's, or another caller's, is not its).
    async fn revoke(&self, tenant: &Tenant, chat: &ChatId, id: &str) -> Result<bool, StoreError>;
    /// Revokes every link of the chat (it is being deleted).
    async fn revoke_all(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError>;
}
