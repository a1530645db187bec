//! Prompts the cache can keep: a turn of a kept chat asks upstream with a
//! `prompt_cache_key` of its own when its caller set none, the same for every turn of the
//! chat, so that OpenAI routes them to the machines whose cache holds their common prefix
//! (the prompts and the history, which only grow at the end).
//!
//! The key is derived from the caller and the chat, never the chat's id itself, which may be
//! personal (an address, a name): with `SEAL_KEYS`, a MAC under them, which nobody without
//! the keys can tie to a chat; without, a SHA-256 of them (a guessed id can be confirmed
//! from it, as from anything unkeyed: set `SEAL_KEYS` where ids are personal).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::TurnEngine;
use crate::chat::{ChatId, Tenant};

/// What the key is derived with, besides the caller and the chat.
const LABEL: &[u8] = b"chat-proxy prompt_cache_key v1";

/// How many hex digits of the digest the key keeps (OpenAI takes up to 64 characters).
const DIGITS: usize = 32;

impl TurnEngine {
    /// The `prompt_cache_key` to send for a turn of `chat` (where the turn is kept): none
    /// for a call that keeps no chat, nor when the caller's parameters set one.
    pub(super) fn cache_key(
        &self,
        tenant: &Tenant,
        chat: Option<&ChatId>,
        params: Option<&Map<String, Value>>,
    ) -> Option<String> {
        let chat = chat?;
        if params.is_some_and(|params| params.contains_key("prompt_cache_key")) {
            return None;
        }
        let mut place = Vec::with_capacity(64);
        place.extend_from_slice(tenant.name().as_bytes());
        place.push(b'\n');
        place.extend_from_slice(chat.as_str().as_bytes());
        let mut key = String::with_capacity(3 + DIGITS);
        key.push_str("cp_");
        match &self.settings.seal_keys {
            Some(keys) => {
                let mac = keys.mac(LABEL, &place);
                // `<key id>:<hex>`: the id stays out (it says nothing, but it is not needed).
                let (_, hex) = mac.rsplit_once(':')?;
                key.push_str(hex.get(..DIGITS)?);
            }
            None => {
                let mut hash = Sha256::new();
                hash.update(LABEL);
                hash.update(b"\n");
                hash.update(&place);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for byte in &hash.finalize()[..DIGITS / 2] {
                    key.push(char::from(HEX[usize::from(byte >> 4)]));
                    key.push(char::from(HEX[usize::from(byte & 0x0f)]));
                }
            }
        }
        Some(key)
    }
}
