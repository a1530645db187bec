//! Sealing at rest: what a chat says is sealed before it leaves the function, with keys only
//! the function holds (`SEAL_KEYS`), so that whoever hosts the Redis reads nothing of it.
//!
//! AES-256-GCM from `ring` (already in the tree for TLS): a fresh random 96-bit nonce per
//! value, and the value's place (its Redis key, and the turn's id for a turn of a list)
//! bound as associated data, so that a sealed value copied to another chat, caller or turn
//! does not open. A sealed value is `<key id>:<base64 of nonce, ciphertext and tag>`; the
//! first key seals, every key opens, which is how keys rotate. Nothing here imports the rest
//! of the crate.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The keys of `SEAL_KEYS`, the first of which seals.
pub struct SealKeys {
    keys: Vec<(String, LessSafeKey)>,
    /// A MAC key of each, derived from it (never the cipher key itself), by the same id.
    macs: Vec<(String, hmac::Key)>,
    random: SystemRandom,
}

/// What a MAC key is derived with: HMAC-SHA256 of this under the sealing key.
const MAC_KEY_LABEL: &[u8] = b"chat-proxy seal-keys mac key v1";

impl fmt::Debug for SealKeys {
    // The ids only: never a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SealKeys").field("ids", &ids).finish()
    }
}

/// Why a sealed value did not open. Neither says anything of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with a key the function does not have.
    UnknownKey(String),
    /// The key is here, and the value does not open with it: changed, or moved from
    /// another place.
    Failed(String),
    /// Not a sealed value's shape.
    Malformed,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::UnknownKey(id) => write!(f, "sealed with key `{id}`, which SEAL_KEYS lacks"),
            OpenError::Failed(id) => write!(
                f,
                "does not open with key `{id}`: changed, or moved from another key"
            ),
            OpenError::Malformed => write!(f, "is not a sealed value"),
        }
    }
}

fn valid_id(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SealKeys {
    /// Reads `id:base64,...`: ids of 1 to 16 of `A-Za-z0-9_-`, each key 32 bytes in base64
    /// (`openssl rand -base64 32`). Every problem is named, by the key's place and id, never
    /// by its value.
    pub fn parse(text: &str) -> Result<SealKeys, String> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        let mut macs: Vec<(String, hmac::Key)> = Vec::new();
        let mut problems = Vec::new();
        for (place, entry) in text.split(',').map(str::trim).enumerate() {
            let place = place + 1;
            let Some((id, encoded)) = entry.split_once(':') else {
                problems.push(format!("key {place} is not `id:base64`"));
                continue;
            };
            let id = id.trim();
            if !valid_id(id) {
                problems.push(format!(
                    "key {place}'s id must be 1 to 16 characters of A-Za-z0-9_-"
                ));
                continue;
            }
            if keys.iter().any(|(known, _)| known == id) {
                problems.push(format!("key id `{id}` is given twice"));
                continue;
            }
            let bytes = match STANDARD.decode(encoded.trim()) {
                Ok(bytes) => bytes,
                Err(_) => {
                    problems.push(format!("key `{id}` is not valid base64"));
                    continue;
                }
            };
            if bytes.len() != 32 {
                problems.push(format!(
                    "key `{id}` is {} bytes; a key is 32 (openssl rand -base64 32)",
                    bytes.len()
                ));
                continue;
            }
            match UnboundKey::new(&AES_256_GCM, &bytes) {
                Ok(key) => {
                    keys.push((id.to_owned(), LessSafeKey::new(key)));
                    let derived =
                        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &bytes), MAC_KEY_LABEL);
                    macs.push((
                        id.to_owned(),
                        hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
                    ));
                }
                Err(_) => problems.push(format!("key `{id}` cannot be used")),
            }
        }
        if keys.is_empty() && problems.is_empty() {
            problems.push("it holds no key".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(SealKeys {
            keys,
            macs,
            random: SystemRandom::new(),
        })
    }

    /// The id of the key that seals.
    pub fn sealing_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// Seals `plain` for the place `bound` (its Redis key, and more where a key holds
    /// several values).
    pub fn seal(&self, bound: &[u8], plain: &[u8]) -> Result<String, String> {
        let (id, key) = self.keys.first().ok_or("no sealing key")?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed")?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plain);
        let mut body = sealed.split_off(NONCE_LEN);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound),
            &mut body,
        )
        .map_err(|_| "sealing failed")?;
        sealed.extend_from_slice(&body);
        Ok(format!("{id}:{}", STANDARD.encode(sealed)))
    }

    /// Opens a value `seal` made for the same place.
    pub fn open(&self, bound: &[u8], sealed: &str) -> Result<Vec<u8>, OpenError> {
        let (id, encoded) = sealed.split_once(':').ok_or(OpenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, key)| key)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let mut bytes = STANDARD.decode(encoded).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError::Malformed);
        }
        let mut body = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| OpenError::Malformed)?;
        let plain = key
            .open_in_place(nonce, Aad::from(bound), &mut body)
            .map_err(|_| OpenError::Failed(id.to_owned()))?
            .len();
        body.truncate(plain);
        Ok(body)
    }

    /// The id of the key `sealed` was sealed with.
    pub fn key_id(sealed: &str) -> Option<&str> {
        sealed.split_once(':').map(|(id, _)| id)
    }

    /// A MAC of `data` for the place `bound`, under the first key: `<key id>:<hex>`. The
    /// same data gives the same MAC (where a value must be recognised again, as a claim is by
    /// its own release), and nobody without the key can tell what data gives it (where a
    /// plain hash would confirm a guess).
    pub fn mac(&self, bound: &[u8], data: &[u8]) -> String {
        let Some((id, key)) = self.macs.first() else {
            return String::new();
        };
        format!("{id}:{}", hex(mac_of(key, bound, data).as_ref()))
    }

    /// Whether `mac` is the MAC of `data` for `bound`, under whichever key it names.
    pub fn mac_matches(&self, mac: &str, bound: &[u8], data: &[u8]) -> bool {
        let Some((id, _)) = mac.split_once(':') else {
            return false;
        };
        let (Some((_, key)), Some(tag)) = (
            self.macs.iter().find(|(known, _)| known == id),
            unhex(&mac[id.len() + 1..]),
        ) else {
            return false;
        };
        // ring compares the tags in constant time.
        hmac::verify(key, &mac_message(bound, data), &tag).is_ok()
    }
}

fn mac_of(key: &hmac::Key, bound: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(key, &mac_message(bound, data))
}

/// What a MAC is of: the place, a newline, the data.
fn mac_message(bound: &[u8], data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(bound.len() + 1 + data.len());
    message.extend_from_slice(bound);
    message.push(b'\n');
    message.extend_from_slice(data);
    message
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    #[test]
    fn a_value_opens_in_its_place_only() {
        let keys = SealKeys::parse(&format!("k1:{A}")).unwrap();
        let sealed = keys.seal(b"chat:{a}:system", b"Be brief.").unwrap();
        assert!(sealed.starts_with("k1:"));
        assert!(!sealed.contains("Be brief"));
        assert_eq!(
            keys.open(b"chat:{a}:system", &sealed).unwrap(),
            b"Be brief."
        );
        assert_eq!(
            keys.open(b"chat:{b}:system", &sealed),
            Err(OpenError::Failed("k1".into()))
        );
        // A fresh nonce each time: the same text seals differently.
        assert_ne!(sealed, keys.seal(b"chat:{a}:system", b"Be brief.").unwrap());
    }

    #[test]
    fn a_changed_byte_or_an_unknown_key_does_not_open() {
        let keys = SealKeys::parse(&format!("k1:{A}")).unwrap();
        let sealed = keys.seal(b"place", b"hello").unwrap();
        let (id, body) = sealed.split_once(':').unwrap();
        let mut raw = STANDARD.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let flipped = format!("{id}:{}", STANDARD.encode(raw));
        assert_eq!(
            keys.open(b"place", &flipped),
            Err(OpenError::Failed("k1".into()))
        );
        let other = SealKeys::parse(&format!("k2:{B}")).unwrap();
        assert_eq!(
            other.open(b"place", &sealed),
            Err(OpenError::UnknownKey("k1".into()))
        );
        assert_eq!(keys.open(b"place", "k1:!!"), Err(OpenError::Malformed));
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = SealKeys::parse(&format!("old:{A}")).unwrap();
        let sealed_old = old.seal(b"p", b"before").unwrap();
        let both = SealKeys::parse(&format!("new:{B}, old:{A}")).unwrap();
        assert_eq!(both.sealing_id(), "new");
        assert_eq!(both.open(b"p", &sealed_old).unwrap(), b"before");
        let sealed_new = both.seal(b"p", b"after").unwrap();
        assert_eq!(SealKeys::key_id(&sealed_new), Some("new"));
        assert_eq!(both.open(b"p", &sealed_new).unwrap(), b"after");
    }

    #[test]
    fn a_mac_is_the_same_for_the_same_data_and_place_under_any_key_it_names() {
        let keys = SealKeys::parse(&format!("k1:{A}")).unwrap();
        let mac = keys.mac(b"idem", b"fingerprint");
        assert!(mac.starts_with("k1:") && mac.len() == 3 + 64, "{mac}");
        assert_eq!(mac, keys.mac(b"idem", b"fingerprint"));
        assert_ne!(mac, keys.mac(b"idem", b"another"));
        assert_ne!(mac, keys.mac(b"other place", b"fingerprint"));
        assert!(keys.mac_matches(&mac, b"idem", b"fingerprint"));
        assert!(!keys.mac_matches(&mac, b"idem", b"another"));
        // After a rotation the older key still checks what it made.
        let rotated = SealKeys::parse(&format!("k2:{B},k1:{A}")).unwrap();
        assert!(rotated.mac_matches(&mac, b"idem", b"fingerprint"));
        assert!(rotated.mac(b"idem", b"fingerprint").starts_with("k2:"));
        let other = SealKeys::parse(&format!("k1:{B}")).unwrap();
        assert!(!other.mac_matches(&mac, b"idem", b"fingerprint"));
    }

    #[test]
    fn bad_keys_are_named_without_their_value() {
        let short = STANDARD.encode([7u8; 16]);
        let cases = [
            (format!("k1:{A},k1:{B}"), "given twice"),
            ("k1:not base64!".to_owned(), "not valid base64"),
            (format!("k1:{short}"), "16 bytes"),
            (format!("bad id!:{A}"), "id must be"),
            (A.to_owned(), "not `id:base64`"),
            (String::new(), "not `id:base64`"),
        ];
        for (text, problem) in cases {
            let error = SealKeys::parse(&text).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
            assert!(!error.contains(A) && !error.contains(&short), "{error}");
        }
        let keys = SealKeys::parse(&format!("k1:{A}")).unwrap();
        assert_eq!(format!("{keys:?}"), r#"SealKeys { ids: ["k1"] }"#);
    }
}
