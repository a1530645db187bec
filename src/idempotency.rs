//! `Idempotency-Key`: a client's retry of a turn gets the first answer again, without a
//! second upstream call or a second stored turn. Keys are kept per caller and per chat (per
//! caller for a stateless `/v1` call), by their SHA-256; a request is told from another by a
//! fingerprint of what it asked.

use lambda_http::Request;
use sha2::{Digest, Sha256};

use crate::chat::ChatId;
use crate::error::ApiError;
use crate::store::IdempotencyKey;

pub const HEADER: &str = "idempotency-key";

/// The request's `Idempotency-Key` in `chat`'s scope: none without the header; 400
/// `invalid_idempotency_key` unless it is 1 to 255 printable ASCII characters.
pub fn key_of(
    request: &Request,
    chat: Option<&ChatId>,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = request.headers().get(HEADER) else {
        return Ok(None);
    };
    let raw = value.as_bytes();
    if raw.is_empty() || raw.len() > 255 || !raw.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(IdempotencyKey {
        chat: chat.cloned(),
        hash: sha256_hex(&[raw]),
    }))
}

/// A fingerprint of what a request asked: its route, how it wants the answer, its body.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    sha256_hex(parts)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        // Lengths first, so that no two different lists of parts hash alike.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    fn with_key(key: &[u8]) -> Request {
        lambda_http::http::Request::builder()
            .header(
                HEADER,
                lambda_http::http::HeaderValue::from_bytes(key).unwrap(),
            )
            .body(Body::Empty)
            .unwrap()
    }

    #[test]
    fn keys_are_printable_ascii_up_to_255() {
        let chat = ChatId::parse("c1").unwrap();
        let key = key_of(&with_key(b"order-42 retry"), Some(&chat))
            .unwrap()
            .unwrap();
        assert_eq!(key.hash.len(), 64);
        assert_eq!(key.chat, Some(chat.clone()));
        assert!(key_of(&with_key(&[b'k'; 255]), None).unwrap().is_some());
        for bad in [&[b'k'; 256][..], b"tab\there", "café".as_bytes()] {
            let error = key_of(&with_key(bad), None).unwrap_err();
            assert_eq!(error.code(), "invalid_idempotency_key");
        }
        let none = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap();
        assert_eq!(key_of(&none, Some(&chat)).unwrap(), None);
    }

    #[test]
    fn fingerprints_tell_parts_apart() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"x"]), fingerprint(&[b"x"]));
    }
}
