//! A chat's turns in Redis: the turn's read (its keys read together, in an order that keeps
//! its version no newer than its turns, and `claim_newest.lua` beside them), its write (`append_turn.lua`, or `record.lua` with the caller's counters), rewrites
//! and clears, each checked as the write model says (`check.lua`). One room: the read and
//! the writes share the keys, their order and the version each write checks against.

use fred::interfaces::{HashesInterface, KeysInterface, ListInterface};

use super::keys::ChatKeys;
use super::{RedisStore, MARKER_SECONDS};
use crate::chat::{auto_title, ChatId, Compacted, Tenant, Turn};
use crate::clock::now_ms;
use crate::store::{
    newest_within, record_apart, Found, Recorded, Rewritten, Spent, StoreError, TailClaim,
    TurnContext, TurnExtras, TurnRewrite, Turns, Written, ANSWER_SECONDS,
};

impl RedisStore {
    /// `append_turn`'s keys and arguments (`scripts/append_turn.lua`).
    pub(super) fn append_turn_call(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
        now: u64,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let chat = self.keys.chat(tenant, chat);
        // Each sealed turn is bound to the one it follows: a branch's history in its order,
        // then the turn.
        let mut after = extras.after.unwrap_or("");
        let mut prefix = Vec::with_capacity(extras.prefix.len());
        for earlier in extras.prefix {
            prefix.push(self.sealing.encode_turn(&chat.turns, earlier, after)?);
            after = earlier.id.as_deref().unwrap_or("");
        }
        let json = self.sealing.encode_turn(&chat.turns, turn, after)?;
        // A turn without an id (never made by this version) gets one for its marker alone.
        let id = turn.id.clone().unwrap_or_else(Turn::new_id);
        let marker = chat.turn_marker(&id);
        let (floor, next) = (chat.floor(), chat.next());
        let idempotency_keys = chat.idempotency_keys();
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = chat;
        let tokens = turn.tokens.unwrap_or_default();
        let (also_prompt, also_completion, also_cached) = extras.also_spent;
        let compacted = match extras.compacted.filter(|_| extras.window_start.is_some()) {
            Some(compacted) => {
                let json =
                    serde_json::to_string(compacted).map_err(|e| StoreError::new(e.to_string()))?;
                self.sealing.seal_text(&meta, "compacted", &json)?
            }
            None => String::new(),
        };
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
        let prompt = extras
            .chat_prompt
            .map(|prompt| self.sealing.seal_text(&system, "", prompt))
            .transpose()?;
        let mut keys = vec![turns, system, meta, marker, floor, next];
        let answer = match answer {
            Some((key, kept)) => {
                let sealed = self.seal_answer(&key, kept)?;
                keys.push(key);
                if kept.key.chat.is_some() {
                    keys.push(idempotency_keys);
                }
                sealed
            }
            None => String::new(),
        };
        let [kind, seen, newest] = extras.expect.as_args();
        let claim = extras
            .claimed
            .map(|claimed| format!("{claimed}\n{id}"))
            .unwrap_or_default();
        let mut args = vec![
            self.ttl_arg(),
            json,
            self.settings.max_history_messages.to_string(),
            self.settings.max_chat_bytes.to_string(),
            MARKER_SECONDS.to_string(),
            extras.window_start.unwrap_or_default().to_owned(),
            (u64::from(tokens.prompt) + u64::from(also_prompt)).to_string(),
            (u64::from(tokens.completion) + u64::from(also_completion)).to_string(),
            (u64::from(tokens.cached) + u64::from(also_cached)).to_string(),
            answer,
            ANSWER_SECONDS.to_string(),
            turn.messages().to_string(),
            now.to_string(),
            title,
            extras.replaces.unwrap_or_default().to_owned(),
            kind,
            seen,
            newest,
            claim,
            extras.after.unwrap_or("").to_owned(),
            if self.sealing.binds_order() { "1" } else { "0" }.to_owned(),
            compacted,
            extras
                .temporary
                .map(|ttl| ttl.as_secs().max(1).to_string())
                .unwrap_or_default(),
            if extras.has_prompt { "1" } else { "0" }.to_owned(),
        ];
        args.push(prefix.len().to_string());
        args.extend(prefix);
        args.extend(prompt);
        Ok((keys, args))
    }

    /// The compaction kept in a chat's meta, when it stands for the turns before the window
    /// that starts at `start`. One that cannot be opened or read is as none: the window's
    /// turns are still sent, and the next move of the window makes another.
    fn compacted(
        &self,
        meta: &str,
        stored: Option<String>,
        start: Option<&str>,
    ) -> Option<Compacted> {
        let json = match self.sealing.open_optional(meta, "compacted", stored) {
            Ok(json) => json?,
            Err(error) => {
                tracing::warn!(%error, "a chat's compaction could not be opened; sending without it");
                return None;
            }
        };
        serde_json::from_str::<Compacted>(&json)
            .ok()
            .filter(|compacted| compacted.precedes(start))
    }

    /// Every turn of a chat's list, opened, cut to the newest `MAX_HISTORY_MESSAGES`.
    fn opened(&self, key: &str, raw: Vec<String>) -> Result<Vec<Turn>, StoreError> {
        Ok(newest_within(
            self.sealing.decode_turns(key, raw)?,
            self.settings.max_history_messages,
        ))
    }
}

/// When a turn's write happens: the time its place in the list is given, so that the two
/// agree.
fn written_at(spent: Spent<'_>) -> u64 {
    spent.listed.map_or_else(now_ms, |(_, now)| now)
}

/// What `append_turn` answered, as the store's contract says it; `None` for a turn sealed
/// to follow a turn another has come after (sealed again, and sent again).
fn appended(result: i64) -> Option<Written> {
    match result {
        2 => Some(Written::Moved),
        3 => Some(Written::Gone),
        4 => None,
        _ => Some(Written::Stored),
    }
}

/// What a chat script answers when the chat it wrote is temporary (`touch.lua`'s
/// `chat_ttl`).
pub(super) const TEMPORARY: i64 = 2;

/// How many times a sealed turn is sealed again to follow the newest turn, should other
/// turns keep coming between.
const RESEALS: usize = 4;

#[async_trait::async_trait]
impl Turns for RedisStore {
    async fn turn_context(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        claim: Option<TailClaim<'_>>,
    ) -> Result<TurnContext, StoreError> {
        let chat = self.keys.chat(tenant, chat);
        let global_key = self.keys.global_prompt(tenant);
        let (floor, next) = (chat.floor(), chat.next());
        // Boxed, and only when there is a claim to make: a turn's read is the hot path, and
        // a future held inline is moved with the read's whole state on every poll.
        let claiming = claim.map(|claim| {
            let args = vec![
                claim.newest.unwrap_or("*").to_owned(),
                claim.claimant.to_owned(),
                claim.hold.as_secs().max(1).to_string(),
            ];
            let keys = vec![chat.turns.clone(), next];
            Box::pin(self.eval::<i64>(&self.scripts.claim_newest, keys, args))
        });
        let claiming = async {
            match claiming {
                Some(claim) => claim.await.map(|claimed| claimed == 1),
                None => Ok(false),
            }
        };
        // Sent together, without waiting for each other: one round trip (the relay test
        // `a_turn_waits_for_two_round_trips_on_the_wire_whatever_the_history_length`
        // measures it). Native commands, each as cheap as Redis makes it: a script that
        // read the list cost Redis four times a plain LRANGE (BENCHMARKS.md).
        //
        // The version is read before the turns, on the chat's one connection (its keys share
        // a slot), and Redis runs one connection's commands in order: a write that comes
        // between the two makes the version read older than the turns read, never newer.
        // So a write that checks it (`store/mod.rs`) can only find the chat moved when it
        // has not (and then writes nothing, or reads again), never take a chat that moved
        // for the one it read.
        let (global_prompt, meta, prompt_and_floor, claimed, history) = tokio::join!(
            self.client().get::<Option<String>, _>(&global_key),
            self.client().hmget::<Vec<Option<String>>, _, _>(
                &chat.meta,
                vec!["v", "floor", "window", "created_at", "compacted", "temp"],
            ),
            // One command for both (one slot): each command costs the client more than Redis.
            self.client()
                .mget::<(Option<String>, Option<u64>), _>(vec![chat.system.clone(), floor]),
            claiming,
            self.client().lrange::<Vec<String>, _>(&chat.turns, 0, -1),
        );
        let (chat_prompt, deleted) = prompt_and_floor.map_err(|e| self.error(e))?;
        let mut meta = meta.map_err(|e| self.error(e))?.into_iter();
        let mut next_field = || meta.next().flatten();
        let number = |value: Option<String>| value.and_then(|v| v.parse::<u64>().ok());
        let (version, cleared) = (number(next_field()), number(next_field()));
        let (window_start, created_at, compacted) = (next_field(), next_field(), next_field());
        let temporary = number(next_field()).map(std::time::Duration::from_secs);
        let found = Found {
            version: version.unwrap_or(0),
            floor: cleared.unwrap_or(0).max(deleted.unwrap_or(0)),
            newest: None,
        };
        let global_prompt = global_prompt.map_err(|e| self.error(e))?;
        let history = history.map_err(|e| self.error(e))?;
        Ok(TurnContext {
            global_prompt: self.sealing.open_optional(&global_key, "", global_prompt)?,
            chat_prompt: self.sealing.open_optional(&chat.system, "", chat_prompt)?,
            history: self.opened(&chat.turns, history)?,
            compacted: self.compacted(&chat.meta, compacted, window_start.as_deref()),
            window_start,
            conversation: created_at.is_some(),
            version: found.seen(),
            claimed: claimed?,
            temporary,
        })
    }

    async fn release_claim(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        claimant: &str,
    ) -> Result<(), StoreError> {
        self.eval::<i64>(
            &self.scripts.release_claim,
            vec![self.keys.chat(tenant, chat).next()],
            vec![claimant.to_owned()],
        )
        .await
        .map(drop)
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        turn: &Turn,
        extras: TurnExtras<'_>,
    ) -> Result<Written, StoreError> {
        let now = now_ms();
        let write = async {
            let mut newest: Option<String> = None;
            for _ in 0..RESEALS {
                let extras = TurnExtras {
                    after: newest.as_deref().or(extras.after),
                    ..extras
                };
                let (keys, args) = self.append_turn_call(tenant, chat, turn, extras, now)?;
                // The answer behind this turn is paid for: a write that timed out (and may
                // yet run) is sent once more, which the marker makes safe.
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
                match appended(stored) {
                    Some(written) => return Ok(written),
                    // Rare (sealed turns, and another turn between): boxed, off the hot path.
                    None => newest = Some(Box::pin(self.newest_turn(tenant, chat)).await?),
                }
            }
            Err(StoreError::new(
                "other turns kept coming between a sealed turn and the turn it follows",
            ))
        };
        // A temporary chat is never listed.
        let written = match extras.temporary {
            Some(_) => write.await?,
            None => self.with_index(tenant, chat, now, write).await?,
        };
        if written != Written::Stored {
            // Listed beside a write that did not happen: taken off again (a chat that
            // exists is listed by its next write; a deleted one must not be listed).
            Box::pin(self.unlist_if_gone(tenant, chat)).await;
        }
        Ok(written)
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
            Ok(results) => {
                let written = match appended(results.first().copied().unwrap_or(1)) {
                    Some(written) => Ok(written),
                    // Counted; the turn is sealed again to follow the turn now newest (rare:
                    // boxed, off the hot path).
                    None => Box::pin(self.append_turn(tenant, chat, turn_to_store, extras)).await,
                };
                if matches!(written, Ok(Written::Moved | Written::Gone)) {
                    Box::pin(self.unlist_if_gone(tenant, chat)).await;
                }
                Recorded {
                    stored: written,
                    counted: Ok(()),
                }
            }
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
            .lrange(&key, 0, -1)
            .await
            .map_err(|e| self.error(e))?;
        self.opened(&key, raw)
    }

    async fn rewrite_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        rewrite: TurnRewrite<'_>,
        seen: u64,
    ) -> Result<Rewritten, StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let before = rewrite.before.unwrap_or("");
        let with = match rewrite.with {
            Some(turn) => self.sealing.encode_turn(&keys.turns, turn, before)?,
            None => String::new(),
        };
        // A removed turn's next one follows the turn before it from now on.
        let next = match (rewrite.with, rewrite.next, self.sealing.binds_order()) {
            (None, Some(next), true) => (
                self.sealing.encode_turn(&keys.turns, next, before)?,
                next.id.clone().unwrap_or_default(),
            ),
            _ => (String::new(), String::new()),
        };
        let marker = keys.write_marker(&Turn::new_id());
        let floor = keys.floor();
        let found: i64 = self
            .eval(
                &self.scripts.rewrite_turn,
                vec![keys.turns, keys.meta, floor, marker],
                vec![
                    rewrite.id.to_owned(),
                    with,
                    seen.to_string(),
                    MARKER_SECONDS.to_string(),
                    next.0,
                    next.1,
                    if rewrite.drops_compacted { "1" } else { "" }.to_owned(),
                ],
            )
            .await?;
        Ok(match found {
            1 => Rewritten::Done,
            2 => Rewritten::Moved,
            _ => Rewritten::Missing,
        })
    }

    async fn clear(&self, tenant: &Tenant, chat: &ChatId) -> Result<(), StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let (floor, marker) = (keys.floor(), keys.write_marker(&Turn::new_id()));
        let ChatKeys {
            system,
            turns,
            meta,
            ..
        } = keys;
        let now = now_ms();
        let write = self.eval::<i64>(
            &self.scripts.clear,
            vec![turns, system, meta, floor, marker],
            vec![self.ttl_arg(), now.to_string(), MARKER_SECONDS.to_string()],
        );
        let cleared = self.with_index(tenant, chat, now, write).await?;
        self.unlist_if_temporary(tenant, chat, cleared).await;
        Ok(())
    }
}

impl RedisStore {
    /// The id of the chat's newest turn (`""`: none), for a sealed turn to follow.
    async fn newest_turn(&self, tenant: &Tenant, chat: &ChatId) -> Result<String, StoreError> {
        let newest: Option<String> = self
            .client()
            .lindex(self.keys.chat(tenant, chat).turns, -1)
            .await
            .map_err(|e| self.error(e))?;
        let newest = newest.unwrap_or_default();
        let id = newest
            .strip_prefix("{\"id\":\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        Ok(id.to_owned())
    }

    /// Takes a temporary chat off its caller's list, where a write listed it beside its own
    /// (which answered `TEMPORARY`, not knowing it was temporary until it ran). Only a
    /// temporary chat's write pays this second round trip; a failure leaves it listed until
    /// the list is read, which passes over temporary chats.
    pub(super) async fn unlist_if_temporary(&self, tenant: &Tenant, chat: &ChatId, written: i64) {
        if written != TEMPORARY {
            return;
        }
        if let Err(error) = self.index(tenant, chat, None).await {
            tracing::warn!(%error, "a temporary chat could not be taken off its caller's list");
        }
    }

    /// Takes a chat off its caller's list when it does not exist (a turn refused after its
    /// chat was deleted was listed beside its write); a failure only leaves it listed until
    /// the list is read, which drops chats that are gone.
    async fn unlist_if_gone(&self, tenant: &Tenant, chat: &ChatId) {
        let keys = self.keys.chat(tenant, chat);
        let exists = self
            .client()
            .exists::<u64, _>(vec![keys.turns, keys.system, keys.meta])
            .await;
        if let Ok(0) = exists {
            if let Err(error) = self.index(tenant, chat, None).await {
                tracing::warn!(%error, "a deleted chat could not be taken off its caller's list");
            }
        }
    }
}
