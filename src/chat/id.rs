//! A chat's id, as callers choose it: parsed once, at the edge, so that no invalid id
//! reaches a front door or the store.

/// A caller-chosen chat id: 1 to 128 characters of `A-Z a-z 0-9 . _ : @ -`, other than `.`
/// and `..`.
///
/// The alphabet leaves out `{` and `}`, so an id can always be a Redis Cluster hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatId(String);

impl ChatId {
    pub const MAX_LEN: usize = 128;

    /// Parses an id as it appears in a path segment: percent-decoded once (standard encoders
    /// escape `@` and `:`), then checked. An encoded `/` decodes to a character outside the
    /// alphabet and is refused like any other.
    pub fn parse(segment: &str) -> Result<ChatId, InvalidChatId> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| InvalidChatId)?;
        Self::parse_decoded(&decoded)
    }

    /// Checks an id that is not percent-encoded (a header's value, for example).
    pub fn parse_decoded(id: &str) -> Result<ChatId, InvalidChatId> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
        // `.` and `..` are dot segments: URL parsers and proxies may resolve them away.
        let dot_segment = id == "." || id == "..";
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.chars().all(allowed) || dot_segment {
            return Err(InvalidChatId);
        }
        Ok(ChatId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new chain's chat: where a `previous_response_id` chain that names no conversation
    /// lives. Its id starts with `~`, outside the alphabet, so no caller-chosen chat is one
    /// and no seed route reaches it.
    pub fn new_chain() -> ChatId {
        ChatId(format!("~{:032x}", fastrand::u128(..)))
    }

    /// A chain's chat, by the id [`ChatId::new_chain`] made.
    fn chain(id: &str) -> Option<ChatId> {
        let hex = id.strip_prefix('~')?;
        (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| ChatId(id.to_owned()))
    }

    /// Whether this is a chain's chat rather than a conversation.
    pub fn is_chain(&self) -> bool {
        self.0.starts_with('~')
    }

    /// A chat as a response id names it: a chain's, or a caller's conversation.
    pub fn named_by_response(id: &str) -> Option<ChatId> {
        Self::chain(id).or_else(|| Self::parse_decoded(id).ok())
    }
}

/// An id outside the alphabet or the length a chat id takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "chat_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ - (percent-encoded or not), and \
     not . or .."
)]
pub struct InvalidChatId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_use_the_whole_alphabet_up_to_128_characters() {
        let longest = "z".repeat(128);
        for good in ["A-z_0.9:x@y", longest.as_str()] {
            assert_eq!(ChatId::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(ChatId::parse(&"z".repeat(129)), Err(InvalidChatId));
    }

    #[test]
    fn chains_have_ids_no_caller_can_choose() {
        let chain = ChatId::new_chain();
        assert!(chain.is_chain());
        assert_eq!(ChatId::parse_decoded(chain.as_str()), Err(InvalidChatId));
        assert_eq!(ChatId::named_by_response(chain.as_str()), Some(chain));
        assert_eq!(ChatId::named_by_response("~nothex"), None);
        assert!(!ChatId::named_by_response("trip").unwrap().is_chain());
    }

    #[test]
    fn percent_encoded_ids_are_the_ids_they_encode() {
        for (segment, id) in [
            ("user%40example.com", "user@example.com"),
            ("tenant%3Ac1", "tenant:c1"),
            ("tenant%3ac1", "tenant:c1"),
            ("%41%2D%5F", "A-_"),
            ("...", "..."),
            ("a.b", "a.b"),
        ] {
            assert_eq!(ChatId::parse(segment).unwrap().as_str(), id, "{segment}");
        }
    }
}
