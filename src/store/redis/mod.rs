//! The Redis store, one room because it is one implementation of the `Store` trait (its
//! keys, connection, scripts and values live in the files beside it).
//!
//! The Redis store (fred): one read of concurrent commands and one atomic script per turn.
//!
//! Every chat write is a single `EVAL`: atomic like `MULTI`/`EXEC`, but one command on the
//! wire, so a turn costs exactly one round trip to write whatever the client library does
//! with buffering, and no partial write can be left behind by a dropped link. Every script
//! can run twice to the same effect, so fred may send any of them again on a fresh
//! connection after a cut, as it does reads (`scripts/`, each saying why). The key scheme is
//! `keys.rs`; the connection, `connection.rs`.

mod connection;
mod keys;
mod reseal;
mod scripts;
mod sealed;
mod values;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, ListInterface, LuaInterface};
use fred::prelude::{Expiration, FromValue};
use fred::types::{MultipleKeys, Value};

use self::connection::Connection;
use self::keys::{ChatKeys, Keys};
pub use self::reseal::Resealed;
use self::scripts::{Script, Scripts};
use self::sealed::Sealing;
use self::values::{answered, parse_claim, pending, period};
use super::{
    newest_within, record_apart, CallerUsage, ChatCursor, ChatPage, ChatSummary, ChatUsage, Claim,
    Claimant, ConversationInfo, IdempotencyKey, KeptAnswer, NewChat, Recorded, RequestCount, Spent,
    Store, StoreError, TurnContext, TurnExtras, ANSWER_SECONDS, RATE_WINDOW,
};
use crate::chat::{auto_title, ChatId, Tenant, Turn};
use crate::clock::{now_ms, UtcDay};
use crate::config::{RedisTarget, StoreSettings};

/// How long a turn's marker lives: far longer than any retry of its write, which happens
/// within the invocation that made the turn (at most 15 minutes).
const TURN_MARKER_SECONDS: u64 = 3600;

pub struct RedisStore {
    connection: Connection,
    keys: Keys,
    settings: StoreSettings,
    scripts: Scripts,
    sealing: Sealing,
}

impl RedisStore {
    /// Builds the client and starts connecting in the background (see [`Connection`]):
    /// nothing here waits on the network.
    pub fn connect(
        target: &RedisTarget,
        settings: StoreSettings,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<RedisStore, StoreError> {
        let scripts = Scripts::new();
        Ok(RedisStore {
            connection: Connection::open(target, timeout, ca_file, scripts.bodies())?,
            keys: Keys::new(&settings.key_prefix),
            settings,
            scripts,
            sealing: Sealing::default(),
        })
    }

    /// Seals what a chat says with `keys` (`SEAL_KEYS`; `None` keeps it plain).
    pub fn sealed(mut self, keys: Option<std::sync::Arc<crate::seal::SealKeys>>) -> RedisStore {
        self.sealing = Sealing(keys);
        self
    }

    /// Waits until the client is connected, or `timeout` passes. For tests and benchmarks.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.client().wait_for_connect())
            .await
            .is_ok_and(|result| result.is_ok())
    }

    fn client(&self) -> &fred::prelude::Client {
        &self.connection.client
    }

    fn error(&self, error: fred::error::Error) -> StoreError {
        self.connection.error(error)
    }

    fn ttl_arg(&self) -> String {
        self.settings
            .chat_ttl
            .map_or(0, |ttl| ttl.as_secs())
            .to_string()
    }

    /// How long a chat lives after its last write, in milliseconds, when chats expire.
    fn ttl_ms(&self) -> Option<u64> {
        self.settings
            .chat_ttl
            .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }

    /// `index_chat`'s arguments: the chat at the top of its caller's list as of `now`
    /// (`None`: off the list).
    fn index_args(&self, chat: &ChatId, now: Option<u64>) -> Vec<String> {
        vec![
            chat.as_str().to_owned(),
            now.map(|now| now.to_string()).unwrap_or_default(),
            self.ttl_arg(),
        ]
    }

    /// Puts a chat written at `now` at the top of its caller's list, or takes it off; a
    /// chain is never on it.
    async fn index(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        now: Option<u64>,
    ) -> Result<(), StoreError> {
        if chat.is_chain() {
            return Ok(());
        }
        self.eval::<i64>(
            &self.scripts.index_chat,
            vec![self.keys.chat_index(tenant)],
            self.index_args(chat, now),
        )
        .await
        .map(drop)
    }

    /// A chat's write and its place in its caller's list, sent together: one round trip
    /// (the two may sit on two Cluster nodes). The chat's write decides the answer.
    async fn with_index<T>(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        now: u64,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let (written, indexed) = tokio::join!(write, self.index(tenant, chat, Some(now)));
        if let Err(error) = indexed {
            // The list is an index: a chat missing from it is still whole, and its next
            // write lists it again.
            tracing::warn!(%error, "a chat could not be put in its caller's list");
        }
        written
    }

    /// How many of a chat's newest turns a read fetches (negated, for LRANGE).
    fn read_from(&self) -> i64 {
        -i64::try_from(self.settings.read_turns()).unwrap_or(i64::MAX)
    }

    /// `append_turn`'s keys and arguments (`scripts/append_turn.lua`).
    fn append_turn_call(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
        now: u64,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let chat = self.keys.chat(tenant, chat);
        let json = self.sealing.encode_turn(&chat.turns, turn)?;
        // A turn without an id (never made by this version) gets one for its marker alone.
        let id = turn.id.clone().unwrap_or_else(Turn::new_id);
        let marker = chat.turn_marker(&id);
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = chat;
        let tokens = turn.tokens.unwrap_or_default();
        let answer = extras
            .answer
            .map(|kept| (self.keys.idempotency(tenant, kept.key), kept));
        let title = extras
            .prefix
            .first()
            .and_then(auto_title)
            .or_else(|| auto_title(turn))
            .map(|title| self.sealing.seal_text(&meta, "auto_title", &title))
            .transpose()?
            .unwrap_or_default();
        let mut prefix = Vec::with_capacity(extras.prefix.len());
        for earlier in extras.prefix {
            prefix.push(self.sealing.encode_turn(&turns, earlier)?);
        }
        let prompt = extras
            .chat_prompt
            .map(|prompt| self.sealing.seal_text(&system, "", prompt))
            .transpose()?;
        let mut keys = vec![turns, system, meta, marker];
        let answer = match answer {
            Some((key, kept)) => {
                let sealed = self.seal_answer(&key, kept)?;
                keys.push(key);
                sealed
            }
            None => String::new(),
        };
        let mut args = vec![
            self.ttl_arg(),
            json,
            self.settings.max_history_messages.to_string(),
            self.settings.max_chat_bytes.to_string(),
            TURN_MARKER_SECONDS.to_string(),
            extras.window_start.unwrap_or_default().to_owned(),
            tokens.prompt.to_string(),
            tokens.completion.to_string(),
            tokens.cached.to_string(),
            answer,
            ANSWER_SECONDS.to_string(),
            turn.messages().to_string(),
            now.to_string(),
            title,
            extras.replaces.unwrap_or_default().to_owned(),
        ];
        args.push(prefix.len().to_string());
        args.extend(prefix);
        args.extend(prompt);
        Ok((keys, args))
    }

    /// An answered `Idempotency-Key`'s value, its answer sealed to the key it is kept under.
    fn seal_answer(&self, key: &str, kept: KeptAnswer<'_>) -> Result<String, StoreError> {
        let answer = self.sealing.seal_text(key, "", kept.answer)?;
        Ok(answered(KeptAnswer {
            answer: &answer,
            ..kept
        }))
    }

    /// `add_usage`'s keys and arguments (`scripts/add_usage.lua`).
    fn add_usage_call(&self, tenant: &Tenant, spent: Spent<'_>) -> (Vec<String>, Vec<String>) {
        let counters = self.keys.usage(tenant, spent.day, spent.ip);
        let mut keys = vec![
            self.keys.spent_marker(tenant, spent.id),
            counters.day,
            counters.month,
        ];
        keys.extend(counters.ip);
        let answer = match spent.answer {
            Some(kept) => {
                let key = self.keys.idempotency(tenant, kept.key);
                // A value that cannot be sealed is not kept: the request is answered anyway.
                let sealed = self.seal_answer(&key, kept).unwrap_or_default();
                if !sealed.is_empty() {
                    keys.push(key);
                }
                sealed
            }
            None => String::new(),
        };
        let listed = spent.listed.filter(|(chat, _)| !chat.is_chain());
        if listed.is_some() {
            keys.push(self.keys.chat_index(tenant));
        }
        let items = spent.items.filter(|items| !items.ids.is_empty());
        if let Some(items) = items {
            keys.extend(items.ids.iter().map(|id| self.keys.item(tenant, id)));
        }
        // A day's counters outlive the day by a day, a month's by a month.
        let day_ttl = spent.day.seconds_left + 86_400;
        let month_ttl = 62 * 86_400;
        let args = vec![
            spent.model.to_owned(),
            spent.prompt_tokens.to_string(),
            spent.completion_tokens.to_string(),
            spent.cached_tokens.to_string(),
            day_ttl.to_string(),
            month_ttl.to_string(),
            if spent.ip.is_some() { "1" } else { "0" }.to_owned(),
            answer,
            ANSWER_SECONDS.to_string(),
            TURN_MARKER_SECONDS.to_string(),
        ];
        let mut args = args;
        match listed {
            Some((chat, now)) => args.extend(self.index_args(chat, Some(now))),
            None => args.extend([String::new(), String::new(), String::new()]),
        }
        args.push(
            items
                .map(|items| items.response.to_owned())
                .unwrap_or_default(),
        );
        args.push(self.ttl_arg());
        (keys, args)
    }

    /// Runs a script by its SHA-1 (`EVALSHA`), so that its body does not cross the wire and
    /// Redis does not hash it on every call; a Redis that does not know it yet (a new or
    /// restarted server, another node) answers NOSCRIPT, and the body is sent once (`EVAL`,
    /// which also keeps it there). A NOSCRIPT run did nothing, so sending it again is safe.
    async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        let keys = MultipleKeys::from(keys);
        let args = Value::Array(args.into_iter().map(Value::from).collect());
        // Cheap clones: the keys and values are reference-counted bytes.
        let by_hash = self
            .client()
            .evalsha::<R, _, _, _>(script.sha.as_str(), keys.clone(), args.clone())
            .await;
        match by_hash {
            Err(error) if error.details().starts_with("NOSCRIPT") => self
                .client()
                .eval(script.body.as_str(), keys, args)
                .await
                .map_err(|e| self.error(e)),
            other => other.map_err(|e| self.error(e)),
        }
    }
}

/// When a turn's write happens: the time its place in the list is given, so that the two
/// agree.
fn written_at(spent: Spent<'_>) -> u64 {
    spent.listed.map_or_else(now_ms, |(_, now)| now)
}

/// What `append_turn` answered, as the store's contract says it.
fn appended(result: i64) -> Result<(), StoreError> {
    match result {
        2 => Err(StoreError::new(
            "the turn to replace is no longer in the chat (it changed meanwhile)",
        )),
        _ => Ok(()),
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
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
        let write = self.eval(
            &self.scripts.set_chat_prompt,
            vec![system, turns, meta],
            args,
        );
        self.with_index(tenant, chat, now, write).await
    }

    async fn turn_context(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<TurnContext, StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        // Sent together without waiting for each other: one round trip (the relay test
        // `a_turn_waits_for_two_round_trips_on_the_wire_whatever_the_history_length` measures
        // it); this measured 3-4% faster per turn than a fred pipeline (BENCHMARKS.md).
        let global_key = self.keys.global_prompt(tenant);
        let (global_prompt, chat_prompt, history, window_start) = tokio::join!(
            self.client().get::<Option<String>, _>(&global_key),
            self.client().get::<Option<String>, _>(&system),
            self.client()
                .lrange::<Vec<String>, _>(&turns, self.read_from(), -1),
            self.client()
                .hmget::<Vec<Option<String>>, _, _>(&meta, vec!["window", "created_at"]),
        );
        let (global_prompt, chat_prompt, history, window_start) = (
            global_prompt.map_err(|e| self.error(e))?,
            chat_prompt.map_err(|e| self.error(e))?,
            history.map_err(|e| self.error(e))?,
            window_start.map_err(|e| self.error(e))?,
        );
        let mut meta = window_start.into_iter();
        let (window_start, created_at) = (meta.next().flatten(), meta.next().flatten());
        Ok(TurnContext {
            global_prompt: self.sealing.open_optional(&global_key, "", global_prompt)?,
            chat_prompt: self.sealing.open_optional(&system, "", chat_prompt)?,
            history: newest_within(
                self.sealing.decode_turns(&turns, history)?,
                self.settings.max_history_messages,
            ),
            window_start,
            conversation: created_at.is_some(),
        })
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let (keys, args) = self.append_turn_call(tenant, chat, turn, extras, now)?;
        let write = async {
            // The answer behind this turn is paid for: a write that timed out (and may yet
            // run) is sent once more, which the marker makes safe.
            let first = self
                .eval::<i64>(&self.scripts.append_turn, keys.clone(), args.clone())
                .await;
            let stored = match first {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "storing a turn failed; sending the write once more");
                    self.eval::<i64>(&self.scripts.append_turn, keys, args)
                        .await?
                }
            };
            appended(stored)
        };
        self.with_index(tenant, chat, now, write).await
    }

    async fn record(
        &self,
        tenant: &Tenant,
        turn: Option<(&ChatId, &Turn, TurnExtras<'_>)>,
        spent: Spent<'_>,
    ) -> Recorded {
        // On a Cluster the chat's keys and the caller's counters may sit on two nodes: two
        // scripts, sent together. Elsewhere one script writes both, so that the turn's write
        // is one command and one reply (each script costs its own flush and, as often as
        // not, its own wake-up of the client: BENCHMARKS.md).
        // Apart, the turn's own write lists its chat (`append_turn`), not its count.
        let apart = Spent {
            listed: None,
            ..spent
        };
        let (Some((chat, turn_to_store, extras)), false) = (turn, self.connection.clustered) else {
            return record_apart(self, tenant, turn, apart).await;
        };
        let together = self
            .append_turn_call(tenant, chat, turn_to_store, extras, written_at(spent))
            .map(|(mut keys, append_args)| {
                let (usage_keys, usage_args) = self.add_usage_call(tenant, spent);
                let mut args = vec![keys.len().to_string(), append_args.len().to_string()];
                args.extend(append_args);
                args.extend(usage_args);
                keys.extend(usage_keys);
                (keys, args)
            });
        let result = match together {
            Ok((keys, args)) => {
                self.eval::<Vec<i64>>(&self.scripts.record, keys, args)
                    .await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(results) => Recorded {
                stored: appended(results.first().copied().unwrap_or(1)),
                counted: Ok(()),
            },
            // Run apart, each part once more (its marker makes that safe) and on its own, so
            // that a chat that cannot be written still has its tokens counted.
            Err(error) => {
                tracing::warn!(%error, "a turn's write failed; sending its two parts apart");
                record_apart(self, tenant, turn, apart).await
            }
        }
    }

    async fn turns(&self, tenant: &Tenant, chat: &ChatId) -> Result<Vec<Turn>, StoreError> {
        let key = self.keys.chat(tenant, chat).turns;
        let raw: Vec<String> = self
            .client()
            .lrange(&key, self.read_from(), -1)
            .await
            .map_err(|e| self.error(e))?;
        Ok(newest_within(
            self.sealing.decode_turns(&key, raw)?,
            self.settings.max_history_messages,
        ))
    }

    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let now = now_ms();
        let write = self.eval(
            &self.scripts.clear,
            vec![turns, system, meta],
            vec![self.ttl_arg(), now.to_string()],
        );
        self.with_index(tenant, chat, now, write).await
    }

    async fn replace_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &str,
        with: Option<&Turn>,
    ) -> Result<bool, StoreError> {
        let ChatKeys { turns, meta, .. } = self.keys.chat(tenant, chat);
        let with = match with {
            Some(turn) => self.sealing.encode_turn(&turns, turn)?,
            None => String::new(),
        };
        let found: i64 = self
            .eval(
                &self.scripts.replace_turn,
                vec![turns, meta],
                vec![turn.to_owned(), with],
            )
            .await?;
        Ok(found == 1)
    }

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
            self.client().exists::<u64, _>(vec![turns, system]),
        );
        let mut fields = fields.map_err(|e| self.error(e))?.into_iter();
        let (created_at, metadata) = (fields.next().flatten(), fields.next().flatten());
        let exists = exists.map_err(|e| self.error(e))? > 0 || created_at.is_some();
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
        let idems = keys.idempotency_keys();
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
                vec![turns, system, meta, idems, base],
                Vec::new(),
            ),
            self.index(tenant, chat, None),
        );
        deleted?;
        unlisted
    }

    async fn list_chats(
        &self,
        tenant: &Tenant,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, StoreError> {
        // The index may name a chat that is gone (evicted, or expired in the moment
        // between the chat's write and the index's): each is read, and the gone are taken
        // off the list and made up for from further down, a few batches at most.
        const BATCHES: usize = 4;
        let index = self.keys.chat_index(tenant);
        let oldest_live = self
            .ttl_ms()
            .map(|ttl| now_ms().saturating_sub(ttl).to_string())
            .unwrap_or_default();
        let mut cursor = after.cloned();
        let mut chats: Vec<ChatSummary> = Vec::new();
        for _ in 0..BATCHES {
            let want = limit + 1 - chats.len();
            let (score, id) = match &cursor {
                Some(c) => (c.updated_ms.to_string(), c.id.as_str().to_owned()),
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
                    Some(summary) => chats.push(ChatSummary {
                        updated_ms: *score,
                        ..summary
                    }),
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
            cursor = entries.last().map(|(id, updated_ms)| ChatCursor {
                updated_ms: *updated_ms,
                id: id.clone(),
            });
            if exhausted || chats.len() > limit {
                return Ok(ChatPage::of(chats, limit));
            }
        }
        // Batches full of gone chats: what was found, and the place to go on from.
        let next = match chats.last() {
            Some(last) if chats.len() == limit => Some(last.cursor()),
            _ => cursor,
        };
        chats.truncate(limit);
        Ok(ChatPage { chats, next })
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
        // Listed only once it is known to exist: a title alone makes no chat.
        if set == 1 {
            self.index(tenant, chat, Some(now)).await?;
        }
        Ok(set == 1)
    }

    async fn create_chat(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        new: NewChat<'_>,
    ) -> Result<bool, StoreError> {
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = self.keys.chat(tenant, chat);
        let now = now_ms();
        let encoded = new
            .turns
            .iter()
            .map(|turn| self.sealing.encode_turn(&turns, turn))
            .collect::<Result<Vec<String>, _>>()?;
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
        let mut args = vec![
            self.ttl_arg(),
            now.to_string(),
            prompt,
            title,
            first_title,
            bytes.to_string(),
            messages.to_string(),
            Turn::new_id(),
        ];
        args.extend(encoded);
        let write = self.eval::<i64>(&self.scripts.create_chat, vec![turns, system, meta], args);
        // Listed beside the write; a chat that existed already is listed as it was written.
        let made = self.with_index(tenant, chat, now, write).await?;
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

    async fn add_usage(&self, tenant: &Tenant, spent: Spent<'_>) -> Result<(), StoreError> {
        let (keys, args) = self.add_usage_call(tenant, spent);
        self.eval::<i64>(&self.scripts.add_usage, keys, args)
            .await
            .map(drop)
    }

    async fn caller_usage(&self, tenant: &Tenant, day: &UtcDay) -> Result<CallerUsage, StoreError> {
        let counters = self.keys.usage(tenant, day, None);
        let (today, month) = tokio::join!(
            self.client()
                .hgetall::<HashMap<String, u64>, _>(counters.day),
            self.client()
                .hgetall::<HashMap<String, u64>, _>(counters.month),
        );
        Ok(CallerUsage {
            day: period(today.map_err(|e| self.error(e))?),
            month: period(month.map_err(|e| self.error(e))?),
        })
    }

    async fn item_responses(
        &self,
        tenant: &Tenant,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One slot (the caller's), so one MGET, on a Cluster too.
        let keys: Vec<String> = ids.iter().map(|id| self.keys.item(tenant, id)).collect();
        let found: Vec<Option<String>> =
            self.client().mget(keys).await.map_err(|e| self.error(e))?;
        Ok(found)
    }

    async fn tokens_spent(
        &self,
        tenant: &Tenant,
        ip: Option<&str>,
        day: &UtcDay,
    ) -> Result<u64, StoreError> {
        let counters = self.keys.usage(tenant, day, ip);
        match counters.ip {
            Some(ip) => {
                let spent: Option<u64> = self.client().get(ip).await.map_err(|e| self.error(e))?;
                Ok(spent.unwrap_or(0))
            }
            None => {
                let fields: HashMap<String, u64> = self
                    .client()
                    .hgetall(counters.day)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(period(fields).total.total_tokens)
            }
        }
    }

    async fn claim(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<Claim, StoreError> {
        let hold = claimant.hold.as_secs().max(1).to_string();
        let mut keys = vec![self.keys.idempotency(tenant, key)];
        let mut args = vec![pending(claimant), hold];
        // A chat's keys are listed in the chat, so that deleting it deletes them.
        if let Some(chat) = &key.chat {
            keys.push(self.keys.chat(tenant, chat).idempotency_keys());
            args.push(key.hash.clone());
            args.push((ANSWER_SECONDS + claimant.hold.as_secs() + 3600).to_string());
        }
        let idem = keys[0].clone();
        let found: String = self.eval(&self.scripts.claim, keys, args).await?;
        match parse_claim(&found)? {
            Claim::Answered {
                fingerprint,
                answer,
            } => Ok(Claim::Answered {
                fingerprint,
                answer: self.sealing.open_text(&idem, "", answer)?,
            }),
            claim => Ok(claim),
        }
    }

    async fn release(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        claimant: Claimant<'_>,
    ) -> Result<(), StoreError> {
        self.eval::<i64>(
            &self.scripts.release,
            vec![self.keys.idempotency(tenant, key)],
            vec![pending(claimant)],
        )
        .await
        .map(drop)
    }

    async fn count_request(
        &self,
        who: &str,
        request: &str,
        limit: u64,
    ) -> Result<RequestCount, StoreError> {
        let key = self.keys.requests(who);
        let args = vec![
            RATE_WINDOW.as_millis().to_string(),
            request.to_owned(),
            limit.to_string(),
        ];
        let (count, left_ms): (u64, u64) = self
            .eval(&self.scripts.count_request, vec![key], args)
            .await?;
        Ok(RequestCount {
            count,
            // Whole seconds, rounded up: a window in its last half second still says 1.
            resets_in: left_ms.div_ceil(1000).max(1),
        })
    }
}
