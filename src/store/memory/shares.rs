//! A chat's read-only links in memory: each snapshot under its token, with the chat it is
//! a link of and when it expires.

use super::{key, MemoryStore};
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{ShareLink, Shares, StoreError};

#[async_trait::async_trait]
impl Shares for MemoryStore {
    async fn share(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        link: &ShareLink,
        snapshot: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let entry = (snapshot.to_owned(), key(tenant, chat), link.created_at);
        state.shared.insert(link.token.clone(), entry);
        state.share_ends.insert(link.token.clone(), link.expires_at);
        Ok(())
    }

    async fn shared(&self, token: &str) -> Result<Option<String>, StoreError> {
        let mut state = self.state();
        let now = now_ms() / 1000;
        if state.share_ends.get(token).is_some_and(|end| *end <= now) {
            state.shared.remove(token);
            state.share_ends.remove(token);
        }
        Ok(state
            .shared
            .get(token)
            .map(|(snapshot, ..)| snapshot.clone()))
    }

    async fn shares(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<ShareLink>, StoreError> {
        let state = self.state();
        let chat = key(tenant, chat);
        let now = now_ms() / 1000;
        let mut links: Vec<ShareLink> = state
            .shared
            .iter()
            .filter(|(_, (_, of, _))| *of == chat)
            .filter_map(|(token, (_, _, created_at))| {
                let expires_at = *state.share_ends.get(token)?;
                (expires_at > now).then(|| ShareLink {
                    token: token.clone(),
                    created_at: *created_at,
                    expires_at,
                })
            })
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
        let mut state = self.state();
        let mine = state
            .shared
            .get(token)
            .is_some_and(|(_, of, _)| *of == key(tenant, chat));
        if mine {
            state.shared.remove(token);
            state.share_ends.remove(token);
        }
        Ok(mine)
    }

    async fn revoke_all(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        let gone: Vec<String> = state
            .shared
            .iter()
            .filter(|(_, (_, of, _))| *of == chat)
            .map(|(token, _)| token.clone())
            .collect();
        for token in gone {
            state.shared.remove(&token);
            state.share_ends.remove(&token);
        }
        Ok(())
    }
}
