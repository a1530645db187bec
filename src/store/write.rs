//! The write model's decisions (`store/mod.rs` states the model), made here once: what a
//! write needs of the chat it changes, what it finds there, and what it does then. The
//! memory store calls these; the Redis scripts make the same decisions in Lua
//! (`redis/scripts/check.lua`), and the store contract tests hold the two to each other.

/// How long a cleared or deleted chat's floor is kept: longer than any request lives (a
/// Lambda invocation lasts 15 minutes at most), so no write from a read before it is late
/// enough to miss it.
pub const FLOOR_SECONDS: u64 = 3600;

/// What a write needs of the chat it changes, from what its read saw (`seen`, the version
/// [`crate::store::TurnContext::version`] read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect<'a> {
    /// Nothing: a chat this write makes (a new chain, a branch, a new conversation).
    #[default]
    Nothing,
    /// Not cleared or deleted since version `seen`; turns stored since stay before this
    /// write's (a plain turn, items added by hand).
    Since(u64),
    /// As `Since`, and the chat's newest turn is still `newest` (tool results for its calls,
    /// a chain's newest response continued in place).
    Follows { seen: u64, newest: &'a str },
    /// The chat exactly as at version `seen` (a regenerate, an edit, a rewritten turn).
    Exactly(u64),
}

/// What a write finds of its chat when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    /// The chat's version; 0 for a chat that never was.
    pub version: u64,
    /// The version below which a read is from before a clear or a deletion.
    pub floor: u64,
    /// The id of its newest turn, when it has one.
    pub newest: Option<&'a str>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored (now, or by an earlier run of the same write).
    Stored,
    /// Nothing written: the chat changed since the read in a way this write cannot follow.
    Moved,
    /// Nothing written: the chat was cleared or deleted since the read.
    Gone,
}

impl Written {
    pub fn is_stored(self) -> bool {
        self == Written::Stored
    }
}

impl Expect<'_> {
    /// Whether a write expecting this may change the chat as `found`; the decision both
    /// stores make.
    pub fn check(self, found: &Found<'_>) -> Written {
        let seen = match self {
            Expect::Nothing => return Written::Stored,
            Expect::Since(seen) | Expect::Exactly(seen) | Expect::Follows { seen, .. } => seen,
        };
        if seen < found.floor {
            return Written::Gone;
        }
        let moved = match self {
            Expect::Exactly(seen) => found.version.max(found.floor) != seen,
            Expect::Follows { newest, .. } => found.newest != Some(newest),
            Expect::Nothing | Expect::Since(_) => false,
        };
        if moved {
            Written::Moved
        } else {
            Written::Stored
        }
    }

    /// The kind of check and its arguments as the Redis scripts take them: `kind`, `seen`
    /// and `newest` (`''` where there is none).
    pub fn as_args(self) -> [String; 3] {
        match self {
            Expect::Nothing => [String::new(), String::new(), String::new()],
            Expect::Since(seen) => ["since".to_owned(), seen.to_string(), String::new()],
            Expect::Follows { seen, newest } => {
                ["follows".to_owned(), seen.to_string(), newest.to_owned()]
            }
            Expect::Exactly(seen) => ["exactly".to_owned(), seen.to_string(), String::new()],
        }
    }
}

impl Found<'_> {
    /// The chat's version once a write has changed it: above its version and above its
    /// floor (a chat made again after a deletion starts above the tombstone's floor).
    pub fn next_version(&self) -> u64 {
        self.version.max(self.floor) + 1
    }

    /// The version a read reports: a deleted chat's reads see its floor, so that a write
    /// from a read after the deletion is not taken for a late one.
    pub fn seen(&self) -> u64 {
        self.version.max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(version: u64, floor: u64, newest: Option<&str>) -> Found<'_> {
        Found {
            version,
            floor,
            newest,
        }
    }

    #[test]
    fn a_plain_turn_follows_turns_added_since_but_not_a_clear() {
        assert_eq!(
            Expect::Since(3).check(&found(5, 0, Some("t5"))),
            Written::Stored
        );
        assert_eq!(Expect::Since(3).check(&found(5, 4, None)), Written::Gone);
        // A read after the clear sees the floor as its version.
        assert_eq!(Expect::Since(4).check(&found(4, 4, None)), Written::Stored);
    }

    #[test]
    fn a_turn_that_follows_the_newest_needs_it_still_newest() {
        let expect = Expect::Follows {
            seen: 2,
            newest: "t2",
        };
        assert_eq!(expect.check(&found(2, 0, Some("t2"))), Written::Stored);
        assert_eq!(expect.check(&found(3, 0, Some("t3"))), Written::Moved);
        // An item deleted from an older turn changes the version, not the newest turn.
        assert_eq!(expect.check(&found(3, 0, Some("t2"))), Written::Stored);
        assert_eq!(expect.check(&found(3, 3, None)), Written::Gone);
    }

    #[test]
    fn a_change_to_turns_read_needs_the_chat_exactly_as_read() {
        assert_eq!(
            Expect::Exactly(2).check(&found(2, 0, Some("t"))),
            Written::Stored
        );
        assert_eq!(
            Expect::Exactly(2).check(&found(3, 0, Some("t"))),
            Written::Moved
        );
        assert_eq!(Expect::Exactly(2).check(&found(0, 3, None)), Written::Gone);
        assert_eq!(Expect::Nothing.check(&found(9, 9, None)), Written::Stored);
    }

    #[test]
    fn a_chat_made_again_starts_above_its_tombstone() {
        let deleted = found(0, 7, None);
        assert_eq!(deleted.seen(), 7);
        assert_eq!(deleted.next_version(), 8);
        assert_eq!(found(3, 0, None).next_version(), 4);
    }
}
