//! A caller's chats in memory: each one's fields, the list of them, and whole chats made
//! and deleted (a deletion leaves the chat's floor, as in Redis).

use std::time::Instant;

use super::{key, Chat, MemoryStore};
use crate::chat::{auto_title, ChatId, Tenant};
use crate::store::{
    ChatCursor, ChatPage, ChatSummary, ChatUsage, Chats, ConversationInfo, ListOrder, NewChat,
    Shares, StoreError,
};

#[async_trait::async_trait]
impl Chats for MemoryStore {
    async fn conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ConversationInfo>, StoreError> {
        let mut state = self.state();
        // A chat exists while it is kept at all (a cleared chat keeps its fields), as its
        // summary says it: a chat that is listed can be read.
        let chat = self.live(&mut state, &key(tenant, chat));
        Ok(chat.map(|c| ConversationInfo {
            created_at: c.created_at.unwrap_or(0),
            metadata: c.metadata.clone(),
        }))
    }

    async fn set_conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        created_at: u64,
        metadata: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let chat = self.touched(&mut state, &key(tenant, chat));
        chat.created_at.get_or_insert(created_at);
        if let Some(metadata) = metadata {
            chat.metadata = Some(metadata.to_owned());
        }
        Ok(())
    }

    async fn delete_chat(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        {
            let mut state = self.state();
            let gone = key(tenant, chat);
            self.raise_floor(&mut state, &gone);
            state.chats.remove(&gone);
            state.claims.remove(&gone);
            state
                .keys
                .retain(|(owner, key), _| owner != tenant || key.chat.as_ref() != Some(chat));
            state
                .runs
                .retain(|(owner, of, _), _| owner != tenant || of != chat);
            state.live.remove(&gone);
        }
        // Its links go with it.
        self.revoke_all(tenant, chat).await
    }

    async fn list_chats(
        &self,
        tenant: &Tenant,
        order: ListOrder,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state
            .chats
            .retain(|_, chat| chat.expires_at.is_none_or(|at| at > now));
        // The page's chats (and one more, to tell whether more follow) found by their order
        // alone, and only those made into summaries: a store of many chats pages cheaply.
        let mut listed: Vec<(u64, &ChatId, &Chat)> = state
            .chats
            .iter()
            .filter(|((owner, id), chat)| {
                owner == tenant && !id.is_chain() && chat.temporary.is_none()
            })
            .map(|((_, id), chat)| (chat.place(order), id, chat))
            .filter(|(at, id, _)| after.is_none_or(|after| after.precedes(*at, id)))
            .collect();
        let newest_first = |a: &(u64, &ChatId, &Chat), b: &(u64, &ChatId, &Chat)| {
            (b.0, b.1.as_str().as_bytes()).cmp(&(a.0, a.1.as_str().as_bytes()))
        };
        if listed.len() > limit + 1 {
            listed.select_nth_unstable_by(limit, newest_first);
            listed.truncate(limit + 1);
        }
        listed.sort_by(newest_first);
        let chats = listed
            .into_iter()
            .map(|(at, id, chat)| (chat.summary(id), at))
            .collect();
        Ok(ChatPage::of(chats, limit))
    }

    async fn place(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        order: ListOrder,
    ) -> Result<Option<ChatCursor>, StoreError> {
        let mut state = self.state();
        // A temporary chat is never listed, so has no place in a list.
        Ok(self
            .live(&mut state, &key(tenant, chat))
            .filter(|found| found.temporary.is_none())
            .map(|found| ChatCursor {
                at_ms: found.place(order),
                id: chat.clone(),
            }))
    }

    async fn chat_summary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ChatSummary>, StoreError> {
        let mut state = self.state();
        Ok(self
            .live(&mut state, &key(tenant, chat))
            .map(|found| found.summary(chat)))
    }

    async fn set_title(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        title: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        if self.live(&mut state, &chat).is_none() {
            return Ok(false);
        }
        self.touched(&mut state, &chat).title = Some(title.to_owned());
        Ok(true)
    }

    async fn create_chat(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        new: NewChat<'_>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let chat = key(tenant, chat);
        if self.live(&mut state, &chat).is_some() {
            return Ok(false);
        }
        let version = self.found(&mut state, &chat).found().next_version();
        if new.temporary {
            state.chats.entry(chat.clone()).or_default().temporary =
                Some(self.settings.temporary_ttl);
        }
        let made = self.touched(&mut state, &chat);
        made.version = version;
        made.usage = new.usage;
        for turn in new.turns {
            made.push(turn.clone());
        }
        made.prompt = new.prompt.map(str::to_owned);
        made.title = new.title.map(str::to_owned);
        made.auto_title = new.turns.first().and_then(auto_title);
        Ok(true)
    }

    async fn chat_usage(&self, tenant: &Tenant, chat: &ChatId) -> Result<ChatUsage, StoreError> {
        let mut state = self.state();
        let mut usage = self
            .live(&mut state, &key(tenant, chat))
            .map(|c| c.usage)
            .unwrap_or_default();
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        Ok(usage)
    }

    async fn temporary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let mut state = self.state();
        Ok(self
            .live(&mut state, &key(tenant, chat))
            .and_then(|c| c.temporary))
    }
}
