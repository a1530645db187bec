//! What the Redis store seals (`SEAL_KEYS`, `crate::seal`): every text of a chat is sealed
//! here on its way to Redis and opened on its way back, bound to the key it is kept under.
//!
//! - A turn (an element of a chat's list) is `{"id":"<turn id>","m":<messages>,"p":"<the id
//!   of the turn before it>","sealed":"<key id>:<base64>"}`: its id and its count of
//!   messages stay plain, because the Lua scripts find turns by id and count a chat's
//!   messages; the rest, the whole turn as JSON, is sealed, bound to the list's key, the
//!   turn's id and the id of the turn it follows. So a turn moved to another place of its
//!   list does not read back: each turn must follow the one it was stored after (the oldest
//!   kept excepted, whose predecessor the caps dropped). Turns sealed before order was
//!   bound (no `p`) read as they are; `make reseal` binds them.
//! - A text (a prompt, a title, a kept answer, a conversation's metadata) is
//!   `"\u{1}sealed:<key id>:<base64>"`, bound to its key (and its hash field).
//!
//! A value that does not open (sealed with a key the function lacks, changed, or moved from
//! another key) is an error of its own, `chat_unreadable`: never shown, never guessed at,
//! and never written over (the request fails before its write). Values stored plain, before
//! sealing was turned on, read as they are and are sealed when they are written again.

use std::sync::Arc;

use crate::chat::Turn;
use crate::seal::SealKeys;
use crate::store::StoreError;

/// How a sealed text starts; a plain one never does (it would have to begin with U+0001).
const SEALED_TEXT: &str = "\u{1}sealed:";

/// Where a sealed turn's envelope says it is sealed (quotes inside a turn's JSON strings are
/// escaped, so this is found only as the envelope's key).
const SEALED_TURN: &str = ",\"sealed\":\"";

/// The sealing of one store: `None` keeps everything plain, as before sealing.
#[derive(Clone, Default)]
pub(super) struct Sealing(pub Option<Arc<SealKeys>>);

fn bound(key: &str, part: &str) -> Vec<u8> {
    let mut bound = Vec::with_capacity(key.len() + part.len() + 1);
    bound.extend_from_slice(key.as_bytes());
    bound.push(b'\n');
    bound.extend_from_slice(part.as_bytes());
    bound
}

fn unreadable(key: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::unreadable(format!("the value of {key} {what}"))
}

impl Sealing {
    /// A text to keep under `key` (and `field`, for a hash's).
    pub fn seal_text(&self, key: &str, field: &str, plain: &str) -> Result<String, StoreError> {
        match &self.0 {
            None => Ok(plain.to_owned()),
            Some(keys) => keys
                .seal(&bound(key, field), plain.as_bytes())
                .map(|sealed| format!("{SEALED_TEXT}{sealed}"))
                .map_err(StoreError::new),
        }
    }

    /// A text read from `key` (and `field`), opened when sealed.
    pub fn open_text(&self, key: &str, field: &str, stored: String) -> Result<String, StoreError> {
        let Some(sealed) = stored.strip_prefix(SEALED_TEXT) else {
            return Ok(stored);
        };
        let keys = self
            .0
            .as_ref()
            .ok_or_else(|| unreadable(key, "is sealed, and SEAL_KEYS is not set"))?;
        let plain = keys
            .open(&bound(key, field), sealed)
            .map_err(|error| unreadable(key, error))?;
        String::from_utf8(plain).map_err(|_| unreadable(key, "opens to text that is not UTF-8"))
    }

    pub fn open_optional(
        &self,
        key: &str,
        field: &str,
        stored: Option<String>,
    ) -> Result<Option<String>, StoreError> {
        stored
            .map(|stored| self.open_text(key, field, stored))
            .transpose()
    }

    /// A MAC of `data` for `key` and `field` (a request's fingerprint in its claim): the
    /// same for the same data, and telling nothing of it to a reader of Redis; the data
    /// itself when nothing is sealed.
    pub fn mac(&self, key: &str, field: &str, data: &str) -> String {
        match &self.0 {
            None => data.to_owned(),
            Some(keys) => keys.mac(&bound(key, field), data.as_bytes()),
        }
    }

    /// Whether `stored` is what [`Sealing::mac`] makes of `data` (or, stored before
    /// sealing, `data` itself).
    pub fn mac_matches(&self, key: &str, field: &str, stored: &str, data: &str) -> bool {
        match &self.0 {
            Some(keys) if stored.contains(':') => {
                keys.mac_matches(stored, &bound(key, field), data.as_bytes())
            }
            _ => stored == data,
        }
    }

    /// Whether a stored value (a text, or a turn of a list) is sealed with the key that
    /// seals now: a reseal leaves it as it is.
    pub fn is_current(&self, stored: &str) -> bool {
        let Some(keys) = &self.0 else {
            return false;
        };
        let sealed = match (stored.strip_prefix(SEALED_TEXT), envelope(stored)) {
            (Some(sealed), _) => sealed.to_owned(),
            (None, Some(Ok(envelope))) => envelope.sealed,
            (None, _) => return false,
        };
        SealKeys::key_id(&sealed) == Some(keys.sealing_id())
    }

    /// Whether turns are sealed, so that the scripts must keep each after the turn it was
    /// sealed to follow.
    pub fn binds_order(&self) -> bool {
        self.0.is_some()
    }

    /// A turn as the element of the list `key` it is kept in, after the turn `after` (`""`:
    /// first of its list).
    pub fn encode_turn(&self, key: &str, turn: &Turn, after: &str) -> Result<String, StoreError> {
        let json = serde_json::to_string(turn)
            .map_err(|e| StoreError::new(format!("cannot encode a turn: {e}")))?;
        let Some(keys) = &self.0 else {
            return Ok(json);
        };
        let id = turn.id.as_deref().unwrap_or("");
        let sealed = keys
            .seal(&bound(key, &place(id, Some(after))), json.as_bytes())
            .map_err(StoreError::new)?;
        let envelope =
            serde_json::json!({"id": id, "m": turn.messages(), "p": after, "sealed": sealed});
        Ok(envelope.to_string())
    }

    /// The turns of the list `key`, oldest first, opened where sealed, each checked to
    /// follow the turn it was sealed after.
    pub fn decode_turns(&self, key: &str, raw: Vec<String>) -> Result<Vec<Turn>, StoreError> {
        let mut turns: Vec<Turn> = Vec::with_capacity(raw.len());
        for stored in &raw {
            let (turn, after) = self.decode_placed(key, stored)?;
            if let (Some(after), Some(before)) = (after, turns.last()) {
                let before = before.id.as_deref().unwrap_or("");
                if after != before {
                    let id = turn.id.as_deref().unwrap_or("");
                    return Err(unreadable(
                        key,
                        format_args!(
                            "holds turn {id} after turn {before}, and it was stored after {after}"
                        ),
                    ));
                }
            }
            turns.push(turn);
        }
        Ok(turns)
    }

    /// One turn of the list `key`, opened where sealed, with the turn it was sealed to follow
    /// (`None`: not bound to one).
    pub fn decode_placed(
        &self,
        key: &str,
        stored: &str,
    ) -> Result<(Turn, Option<String>), StoreError> {
        let (json, after) = match envelope(stored) {
            None => (stored.to_owned(), None),
            Some(envelope) => {
                let envelope =
                    envelope.map_err(|_| unreadable(key, "holds a sealed turn that is not one"))?;
                let keys = self.0.as_ref().ok_or_else(|| {
                    unreadable(key, "holds sealed turns, and SEAL_KEYS is not set")
                })?;
                let at = place(&envelope.id, envelope.p.as_deref());
                let plain = keys
                    .open(&bound(key, &at), &envelope.sealed)
                    .map_err(|error| {
                        unreadable(key, format_args!("turn {}: {error}", envelope.id))
                    })?;
                let json = String::from_utf8(plain)
                    .map_err(|_| unreadable(key, "holds a turn that opens to no text"))?;
                (json, envelope.p)
            }
        };
        let turn = serde_json::from_str(&json)
            .map_err(|e| StoreError::new(format!("a stored turn is not valid JSON: {e}")))?;
        Ok((turn, after))
    }
}

/// What a sealed turn is bound to besides its list's key: its id, and the turn it follows
/// (a turn sealed before order was bound, with no `p`, its id alone).
fn place(id: &str, after: Option<&str>) -> String {
    match after {
        Some(after) => format!("{id}\n{after}"),
        None => id.to_owned(),
    }
}

/// A sealed turn's envelope, when `stored` is one (its head says so; a plain turn's never
/// does).
fn envelope(stored: &str) -> Option<Result<Envelope, serde_json::Error>> {
    let head = stored.get(..stored.len().min(96)).unwrap_or(stored);
    head.contains(SEALED_TURN)
        .then(|| serde_json::from_str(stored))
}

#[derive(serde::Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    p: Option<String>,
    sealed: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealing() -> Sealing {
        let keys = SealKeys::parse("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        Sealing(Some(Arc::new(keys)))
    }

    #[test]
    fn a_sealed_turn_keeps_its_id_and_count_plain_for_the_scripts() {
        let turn = Turn::question(
            Some("t1".into()),
            "secret question".into(),
            None,
            "secret answer".into(),
        );
        let stored = sealing().encode_turn("c:{a}:turns", &turn, "").unwrap();
        assert!(
            stored.starts_with(r#"{"id":"t1","m":2,"p":"","sealed":"k1:"#),
            "{stored}"
        );
        assert!(!stored.contains("secret"));
        let back = sealing()
            .decode_turns("c:{a}:turns", vec![stored.clone()])
            .unwrap();
        assert_eq!(back, std::slice::from_ref(&turn));
        // Another list, or no keys: unreadable, never guessed at.
        let moved = sealing().decode_turns("c:{b}:turns", vec![stored.clone()]);
        assert!(moved.unwrap_err().is_unreadable());
        let keyless = Sealing(None).decode_turns("c:{a}:turns", vec![stored]);
        assert!(keyless.unwrap_err().is_unreadable());
        // A plain turn, stored before sealing, reads as it is.
        let plain = Sealing(None).encode_turn("c:{a}:turns", &turn, "").unwrap();
        assert_eq!(
            sealing().decode_turns("c:{a}:turns", vec![plain]).unwrap(),
            [turn]
        );
    }

    #[test]
    fn a_sealed_turn_reads_back_only_after_the_turn_it_was_stored_after() {
        let turn = |id: &str| Turn::question(Some(id.into()), id.into(), None, "a".into());
        let key = "c:{a}:turns";
        let encode = |id: &str, after: &str| sealing().encode_turn(key, &turn(id), after).unwrap();
        let (one, two, three) = (encode("t1", ""), encode("t2", "t1"), encode("t3", "t2"));
        let read = |raw: &[&String]| {
            sealing().decode_turns(key, raw.iter().map(|s| (*s).clone()).collect())
        };
        assert_eq!(read(&[&one, &two, &three]).unwrap().len(), 3);
        // The oldest dropped by the caps: the new oldest's predecessor is gone, as it may be.
        assert_eq!(read(&[&two, &three]).unwrap().len(), 2);
        // Swapped, or one taken from the middle: unreadable.
        assert!(read(&[&one, &three, &two]).unwrap_err().is_unreadable());
        assert!(read(&[&one, &three]).unwrap_err().is_unreadable());
        // A turn's envelope claiming another predecessor does not open.
        let forged = three.replace(r#""p":"t2""#, r#""p":"t1""#);
        assert!(read(&[&one, &forged]).unwrap_err().is_unreadable());
    }

    #[test]
    fn a_sealed_text_opens_under_its_own_key_and_field_only() {
        let stored = sealing()
            .seal_text("c:{a}:meta", "title", "Trip to Lisbon")
            .unwrap();
        assert!(stored.starts_with(SEALED_TEXT) && !stored.contains("Lisbon"));
        let open = |key: &str, field: &str| sealing().open_text(key, field, stored.clone());
        assert_eq!(open("c:{a}:meta", "title").unwrap(), "Trip to Lisbon");
        assert!(open("c:{a}:meta", "metadata").unwrap_err().is_unreadable());
        assert!(open("c:{b}:meta", "title").unwrap_err().is_unreadable());
        assert_eq!(
            sealing().open_text("k", "", "plain".into()).unwrap(),
            "plain"
        );
    }
}
