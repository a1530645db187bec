//! A caller's chats in Redis: each chat's meta (title, usage, conversation fields), the
//! caller's list of chats (`N:usage:{T}:chats`, in the caller's slot), and whole chats made
//! (`create_chat.lua`) and deleted (`delete_chat.lua`, which leaves the chat's floor).
//! One room: the chat's meta and its place in the list are written together.

use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::types::SetOptions;

use super::keys::ChatKeys;
use super::turns::TEMPORARY;
use super::{RedisStore, MARKER_SECONDS};
use crate::chat::{auto_title, ChatId, Tenant, Turn};
use crate::clock::now_ms;
use crate::store::{
    ChatCursor, ChatPage, ChatSummary, ChatUsage, Chats, ConversationInfo, ListOrder, NewChat,
    Shares, StoreError, FLOOR_SECONDS,
};

impl RedisStore {
    /// Puts in the index of births the chats listed before there was one (by their birth
    /// second, `born`): a caller's first list by birth after an upgrade does it, once. One
    /// round trip when there is nothing to do.
    async fn list_births(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let (written, made) = (self.keys.chat_index(tenant), self.keys.chats_made(tenant));
        let (listed, born) = tokio::join!(
            self.client().zcard::<u64, _>(&written),
            self.client().zcard::<u64, _>(&made),
        );
        if listed.map_err(|e| self.error(e))? <= born.map_err(|e| self.error(e))? {
            return Ok(());
        }
        let ids: Vec<String> = self
            .client()
            .zrange(&written, 0, -1, None, false, None, false)
            .await
            .map_err(|e| self.error(e))?;
        let births = futures_util::future::join_all(ids.iter().map(|id| async move {
            let chat = ChatId::parse_decoded(id).ok()?;
            let meta = self.keys.chat(tenant, &chat).meta;
            let born: Option<u64> = self.client().hget(meta, "born").await.ok()?;
            Some((born? * 1000, id.clone()))
        }))
        .await;
        let births: Vec<(f64, String)> = births
            .into_iter()
            .flatten()
            .map(|(born, id)| (born as f64, id))
            .collect();
        if births.is_empty() {
            return Ok(());
        }
        self.client()
            .zadd::<i64, _, _>(&made, Some(SetOptions::NX), None, false, false, births)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }
}

#[async_trait::async_trait]
impl Chats for RedisStore {
    async fn conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ConversationInfo>, StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let (fields, exists) = tokio::join!(
            self.client()
                .hmget::<Vec<Option<String>>, _, _>(&meta, vec!["created_at", "metadata"]),
            self.client()
                .exists::<u64, _>(vec![turns, system, meta.clone()]),
        );
        let mut fields = fields.map_err(|e| self.error(e))?.into_iter();
        let (created_at, metadata) = (fields.next().flatten(), fields.next().flatten());
        // A chat exists while any of its keys does (a cleared chat keeps its meta), as
        // `chat_summary` says it: a chat that is listed can be read.
        let exists = exists.map_err(|e| self.error(e))? > 0;
        let metadata = self.sealing.open_optional(&meta, "metadata", metadata)?;
        Ok(exists.then(|| ConversationInfo {
            created_at: created_at.and_then(|at| at.parse().ok()).unwrap_or(0),
            metadata,
        }))
    }

    async fn set_conversation(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        created_at: u64,
        metadata: Option<&str>,
    ) -> Result<(), StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let now = now_ms();
        let metadata = metadata
            .map(|metadata| self.sealing.seal_text(&meta, "metadata", metadata))
            .transpose()?
            .unwrap_or_default();
        let write = self.eval::<i64>(
            &self.scripts.set_conversation,
            vec![turns, system, meta],
            vec![
                self.ttl_arg(),
                created_at.to_string(),
                metadata,
                now.to_string(),
            ],
        );
        self.with_index(tenant, chat, now, write).await.map(drop)
    }

    async fn delete_chat(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let (idems, floor, next, runs, live) = (
            keys.idempotency_keys(),
            keys.floor(),
            keys.next(),
            keys.runs(),
            keys.live(),
        );
        let marker = keys.write_marker(&Turn::new_id());
        let ChatKeys {
            system,
            turns,
            meta,
            base,
        } = keys;
        // The chat's keys in one script on its one slot (all of it goes, or none), and its
        // place in the list beside it.
        let (deleted, unlisted) = tokio::join!(
            self.eval::<i64>(
                &self.scripts.delete_chat,
                vec![turns, system, meta, idems, floor, next, marker, base, runs, live],
                vec![FLOOR_SECONDS.to_string(), MARKER_SECONDS.to_string()],
            ),
            self.index(tenant, chat, None),
        );
        deleted?;
        unlisted?;
        // Its links go with it (their snapshots live in other slots: after the chat, so
        // that a cut between leaves the list of them to revoke from again).
        self.revoke_all(tenant, chat).await
    }

    async fn list_chats(
        &self,
        tenant: &Tenant,
        order: ListOrder,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, StoreError> {
        // The index may name a chat that is gone (evicted, or expired in the moment
        // between the chat's write and the index's): each is read, and the gone are taken
        // off the list and made up for from further down, a few batches at most.
        const BATCHES: usize = 4;
        let (index, oldest_live) = match order {
            ListOrder::Written => (
                self.keys.chat_index(tenant),
                self.ttl_ms()
                    .map(|ttl| now_ms().saturating_sub(ttl).to_string())
                    .unwrap_or_default(),
            ),
            // A birth says nothing of an expiry: the gone are found by reading them.
            ListOrder::Made => {
                self.list_births(tenant).await?;
                (self.keys.chats_made(tenant), String::new())
            }
        };
        let mut cursor = after.cloned();
        let mut chats: Vec<(ChatSummary, u64)> = Vec::new();
        for _ in 0..BATCHES {
            let want = limit + 1 - chats.len();
            let (score, id) = match &cursor {
                Some(c) => (c.at_ms.to_string(), c.id.as_str().to_owned()),
                None => (String::new(), String::new()),
            };
            let found: Vec<String> = self
                .eval(
                    &self.scripts.list_chats,
                    vec![index.clone()],
                    vec![oldest_live.clone(), score, id, want.to_string()],
                )
                .await?;
            let entries: Vec<(ChatId, u64)> = found
                .chunks(2)
                .filter_map(|pair| match pair {
                    [id, score] => Some((ChatId::parse_decoded(id).ok()?, score.parse().ok()?)),
                    _ => None,
                })
                .collect();
            let summaries = futures_util::future::join_all(
                entries
                    .iter()
                    .map(|(chat, _)| self.chat_summary(tenant, chat)),
            )
            .await;
            let mut gone = Vec::new();
            for ((chat, score), summary) in entries.iter().zip(summaries) {
                match summary? {
                    // Never listed: one that a write put in the index beside its own (not
                    // knowing it was temporary) is taken off it as a gone chat is.
                    Some(summary) if summary.temporary => gone.push(chat),
                    // Its last write is the index's, which lists it.
                    Some(summary) if order == ListOrder::Written => chats.push((
                        ChatSummary {
                            updated_ms: *score,
                            ..summary
                        },
                        *score,
                    )),
                    Some(summary) => chats.push((summary, *score)),
                    None => gone.push(chat),
                }
            }
            if !gone.is_empty() {
                let removals = gone.iter().map(|chat| self.index(tenant, chat, None));
                for removed in futures_util::future::join_all(removals).await {
                    removed?;
                }
            }
            let exhausted = entries.len() < want;
            cursor = entries.last().map(|(id, at_ms)| ChatCursor {
                at_ms: *at_ms,
                id: id.clone(),
            });
            if exhausted || chats.len() > limit {
                return Ok(ChatPage::of(chats, limit));
            }
        }
        // Batches full of gone chats: what was found, and the place to go on from.
        let next = match chats.last() {
            Some((last, at_ms)) if chats.len() == limit => Some(ChatCursor {
                at_ms: *at_ms,
                id: last.id.clone(),
            }),
            _ => cursor,
        };
        Ok(ChatPage::of(chats, limit).with_next(next))
    }

    async fn place(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        order: ListOrder,
    ) -> Result<Option<ChatCursor>, StoreError> {
        let index = match order {
            ListOrder::Written => self.keys.chat_index(tenant),
            ListOrder::Made => {
                self.list_births(tenant).await?;
                self.keys.chats_made(tenant)
            }
        };
        let at: Option<f64> = self
            .client()
            .zscore(index, chat.as_str())
            .await
            .map_err(|e| self.error(e))?;
        Ok(at.map(|at| ChatCursor {
            at_ms: at as u64,
            id: chat.clone(),
        }))
    }

    async fn chat_summary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<ChatSummary>, StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let fields = vec![
            "updated",
            "born",
            "messages",
            "title",
            "auto_title",
            "created_at",
            "metadata",
            "temp",
        ];
        let (values, exists) = tokio::join!(
            self.client()
                .hmget::<Vec<Option<String>>, _, _>(&meta, fields),
            self.client()
                .exists::<u64, _>(vec![turns, system, meta.clone()]),
        );
        let mut values = values.map_err(|e| self.error(e))?.into_iter();
        if exists.map_err(|e| self.error(e))? == 0 {
            return Ok(None);
        }
        let mut next = || values.next().flatten();
        let number = |value: Option<String>| value.and_then(|v| v.parse::<u64>().ok());
        let (updated, born, messages) = (number(next()), number(next()), number(next()));
        let (title, auto_title) = (next(), next());
        let (created_at, metadata) = (number(next()), next());
        let temporary = next().is_some();
        let title = self.sealing.open_optional(&meta, "title", title)?;
        let auto_title = self
            .sealing
            .open_optional(&meta, "auto_title", auto_title)?;
        let metadata = self.sealing.open_optional(&meta, "metadata", metadata)?;
        Ok(Some(ChatSummary {
            id: chat.clone(),
            title: title.or(auto_title),
            created_at: born.unwrap_or(0),
            updated_ms: updated.unwrap_or(0),
            messages: messages.unwrap_or(0),
            conversation: created_at.map(|created_at| ConversationInfo {
                created_at,
                metadata,
            }),
            temporary,
        }))
    }

    async fn set_title(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        title: &str,
    ) -> Result<bool, StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let now = now_ms();
        let title = self.sealing.seal_text(&meta, "title", title)?;
        let set: i64 = self
            .eval(
                &self.scripts.set_title,
                vec![turns, system, meta],
                vec![self.ttl_arg(), title, now.to_string()],
            )
            .await?;
        // Listed only once it is known to exist (a title alone makes no chat), and only
        // when it is not temporary.
        if set == 1 {
            self.index(tenant, chat, Some(now)).await?;
        }
        Ok(set == 1 || set == TEMPORARY)
    }

    async fn create_chat(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        new: NewChat<'_>,
    ) -> Result<bool, StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let floor = keys.floor();
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = keys;
        let now = now_ms();
        let mut encoded = Vec::with_capacity(new.turns.len());
        let mut after = "";
        for turn in new.turns {
            encoded.push(self.sealing.encode_turn(&turns, turn, after)?);
            after = turn.id.as_deref().unwrap_or("");
        }
        let seal = |key: &str, field: &str, text: Option<String>| {
            text.map(|text| self.sealing.seal_text(key, field, &text))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let prompt = seal(&system, "", new.prompt.map(str::to_owned))?;
        let title = seal(&meta, "title", new.title.map(str::to_owned))?;
        let first_title = seal(&meta, "auto_title", new.turns.first().and_then(auto_title))?;
        let bytes: usize = encoded.iter().map(String::len).sum();
        let messages: usize = new.turns.iter().map(Turn::messages).sum();
        let temporary = new
            .temporary
            .then(|| self.settings.temporary_ttl.as_secs().max(1).to_string());
        let mut args = vec![
            temporary.clone().unwrap_or_else(|| self.ttl_arg()),
            now.to_string(),
            prompt,
            title,
            first_title,
            bytes.to_string(),
            messages.to_string(),
            Turn::new_id(),
            new.usage.turns.to_string(),
            new.usage.prompt_tokens.to_string(),
            new.usage.completion_tokens.to_string(),
            new.usage.cached_tokens.to_string(),
            temporary.clone().unwrap_or_default(),
        ];
        args.extend(encoded);
        let write = self.eval::<i64>(
            &self.scripts.create_chat,
            vec![turns, system, meta, floor],
            args,
        );
        // Listed beside the write (a chat that existed already is listed as it was written),
        // unless temporary.
        let made = match temporary {
            Some(_) => write.await?,
            None => self.with_index(tenant, chat, now, write).await?,
        };
        Ok(made == 1)
    }

    async fn chat_usage(&self, tenant: &Tenant, chat: &ChatId) -> Result<ChatUsage, StoreError> {
        let fields = [
            "turns",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
        ];
        let values: Vec<Option<u64>> = self
            .client()
            .hmget(self.keys.chat(tenant, chat).meta, fields.to_vec())
            .await
            .map_err(|e| self.error(e))?;
        let value = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
        Ok(ChatUsage {
            turns: value(0),
            prompt_tokens: value(1),
            completion_tokens: value(2),
            cached_tokens: value(3),
            total_tokens: value(1) + value(2),
        })
    }

    async fn temporary(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let temp: Option<u64> = self
            .client()
            .hget(self.keys.chat(tenant, chat).meta, "temp")
            .await
            .map_err(|e| self.error(e))?;
        Ok(temp.map(std::time::Duration::from_secs))
    }
}
