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
