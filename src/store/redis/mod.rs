//! The Redis store (fred): one read and one atomic script per turn. This file holds what
//! every concern shares (the client, the key scheme, sealing, running a script); each
//! concern of the contract is a file beside it (`prompts.rs`, `turns.rs`, `chats.rs`,
//! `usage.rs`, `idempotency.rs`), with its scripts in `scripts/`.
//!
//! Every chat write is a single `EVALSHA`: atomic like `MULTI`/`EXEC`, but one command on
//! the wire, so a write costs exactly one round trip whatever the client library does with
//! buffering, and no partial write can be left behind by a dropped link. Each script first
//! makes the write model's check (`scripts/check.lua`, as `store/write.rs` decides it), and
//! every script can run twice to the same effect, so fred may send any of them again on a
//! fresh connection after a cut, as it does reads (each script's header says why). The key
//! scheme is `keys.rs`; the connection, `connection.rs`.

mod chats;
mod connection;
mod idempotency;
mod keys;
mod prompts;
mod reseal;
mod runs;
mod scripts;
mod sealed;
mod shares;
mod turns;
mod usage;
mod values;

use std::path::Path;
use std::time::Duration;

use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::FromValue;
use fred::types::{MultipleKeys, Value};

use self::connection::Connection;
use self::keys::Keys;
pub use self::reseal::Resealed;
use self::scripts::{Script, Scripts};
use self::sealed::Sealing;
use super::StoreError;
use crate::chat::{ChatId, Tenant};
use crate::config::{RedisTarget, StoreSettings};

/// How long a write's marker lives (a turn's id, a rewrite's token): far longer than any
/// resend of the write, which happens within the invocation that made it (at most 15
/// minutes).
const MARKER_SECONDS: u64 = 3600;

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
            vec![self.keys.chat_index(tenant), self.keys.chats_made(tenant)],
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
