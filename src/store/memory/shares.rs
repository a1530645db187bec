//! A chat's read-only links in memory: each snapshot by its link's id, with the chat it is
//! a link of. One lock: a link is made only while its chat has turns, and a deletion takes
//! its links with it.

use super::{key, MemoryStore};
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{ShareLink, Shared, Shares, StoreError, MAX_LINKS_PER_CHAT};

#[async_trait::async_trait]
impl Shares for MemoryStore {
    async fn share(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        link: &ShareLink,
        snapshot: &str,
    ) -> Result<Shared, StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        let has_turns = self
            .live(&mut state, &chat)
            .is_some_and(|kept| !kept.turns.is_empty());
        if !has_turns {
            return Ok(Shared::ChatGone);
        }
        let now = now_ms() / 1000;
        state
            .shared
            .retain(|_, (_, of, kept)| *of != chat || kept.lives_at(now));
        let live = state
            .shared
            .iter()
            .filter(|(id, (_, of, _))| *of == chat && **id != link.id)
            .count();
        if live >= MAX_LINKS_PER_CHAT {
            return Ok(Shared::TooMany);
        }
        let kept = (snapshot.to_owned(), chat, link.clone());
        state.shared.insert(link.id.clone(), kept);
        Ok(Shared::Made)
    }

    async fn shared(&self, id: &str) -> Result<Option<String>, StoreError> {
        let state = self.state();
        let now = now_ms() / 1000;
        Ok(state
            .shared
            .get(id)
            .filter(|(_, _, link)| link.lives_at(now))
            .map(|(snapshot, ..)| snapshot.clone()))
    }

    async fn shares(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<ShareLink>, StoreError> {
        let state = self.state();
        let chat = key(tenant, chat);
        let now = now_ms() / 1000;
        let mut links: Vec<ShareLink> = state
            .shared
            .values()
            .filter(|(_, of, link)| *of == chat && link.lives_at(now))
            .map(|(_, _, link)| link.clone())
            .collect();
        links.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(links)
    }

    async fn revoke(&self, tenant: &Tenant, chat: &ChatId, id: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        let now = now_ms() / 1000;
        let mine = match state.shared.get(id) {
            Some((_, of, link)) if *of == key(tenant, chat) => Some(link.lives_at(now)),
            _ => None,
        };
        if mine.is_some() {
            state.shared.remove(id);
        }
        Ok(mine == Some(true))
    }

    async fn revoke_all(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        state.shared.retain(|_, (_, of, _)| *of != chat);
        Ok(())
    }
}
