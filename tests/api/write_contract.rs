//! The write model's cases (`store/mod.rs`), run against both stores: each write checks the
//! chat against what its read saw, and the memory store decides as the Redis scripts do.

use std::time::Duration;

use chat_proxy::chat::{Tenant, Turn};
use chat_proxy::store::{Expect, Rewritten, TailClaim, TurnExtras, TurnRewrite, Written};

use crate::store_contract::{both, chat, settings, turn};

const OPEN: Tenant = Tenant::Open;

fn since(seen: u64) -> TurnExtras<'static> {
    TurnExtras {
        expect: Expect::Since(seen),
        ..TurnExtras::default()
    }
}

/// A turn removed, with nothing around it to seal again (nothing here is sealed).
fn removal(id: &str) -> TurnRewrite<'_> {
    TurnRewrite {
        id,
        with: None,
        before: None,
        next: None,
        drops_compacted: false,
    }
}

fn claim<'a>(newest: Option<&'a str>, claimant: &'a str) -> Option<TailClaim<'a>> {
    Some(TailClaim {
        newest,
        claimant,
        hold: Duration::from_secs(60),
    })
}

#[tokio::test]
async fn every_stored_turn_raises_the_version_its_read_sees() {
    let (stores, _redis) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        let c = chat("v");
        let read = store.turn_context(&OPEN, &c, None).await.unwrap();
        assert_eq!(read.version, 0, "{name}: a chat that never was");
        let written = store.append_turn(&OPEN, &c, &turn(1), since(0)).await;
        assert_eq!(written.unwrap(), Written::Stored, "{name}");
        // Sent again (a resent write): stored once, the version raised once.
        let again = store.append_turn(&OPEN, &c, &turn(1), since(0)).await;
        assert_eq!(again.unwrap(), Written::Stored, "{name}");
        let read = store.turn_context(&OPEN, &c, None).await.unwrap();
        assert_eq!((read.version, read.history.len()), (1, 1), "{name}");
    }
}

#[tokio::test]
async fn a_plain_turn_follows_turns_stored_since_its_read() {
    let (stores, _redis) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        let c = chat("plain");
        store
            .append_turn(&OPEN, &c, &turn(1), since(0))
            .await
            .unwrap();
        let seen = store.turn_context(&OPEN, &c, None).await.unwrap().version;
        // Another turn lands between this turn's read and its write.
        store
            .append_turn(&OPEN, &c, &turn(2), since(seen))
            .await
            .unwrap();
        let written = store.append_turn(&OPEN, &c, &turn(3), since(seen)).await;
        assert_eq!(written.unwrap(), Written::Stored, "{name}");
        let ids: Vec<_> = store.turns(&OPEN, &c).await.unwrap();
        let ids: Vec<_> = ids.iter().map(|t| t.id.clone().unwrap()).collect();
        assert_eq!(ids, ["turn-1", "turn-2", "turn-3"], "{name}");
    }
}

#[tokio::test]
async fn a_turn_that_follows_the_newest_needs_it_still_newest() {
    let (stores, _redis) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        let c = chat("follows");
        store
            .append_turn(&OPEN, &c, &turn(1), since(0))
            .await
            .unwrap();
        let read = store.turn_context(&OPEN, &c, None).await.unwrap();
        store
            .append_turn(&OPEN, &c, &turn(2), since(read.version))
            .await
            .unwrap();
        let follows = TurnExtras {
            expect: Expect::Follows {
                seen: read.version,
                newest: "turn-1",
            },
            ..TurnExtras::default()
        };
        let written = store.append_turn(&OPEN, &c, &turn(3), follows).await;
        assert_eq!(written.unwrap(), Written::Moved, "{name}");
        assert_eq!(store.turns(&OPEN, &c).await.unwrap().len(), 2, "{name}");
    }
}

#[tokio::test]
async fn a_change_to_turns_read_needs_the_chat_exactly_as_read() {
    let (stores, _redis) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        let c = chat("exact");
        for n in 1..=2 {
            store
                .append_turn(&OPEN, &c, &turn(n), since(0))
                .await
                .unwrap();
        }
        let read = store.turn_context(&OPEN, &c, None).await.unwrap();
        store
            .append_turn(&OPEN, &c, &turn(3), since(read.version))
            .await
            .unwrap();
        // A redo of turn 2 from the read before turn 3: nothing written.
        let redo = Turn::question(Some("redo".into()), "again".into(), None, "x".into());
        let replacing = TurnExtras {
            expect: Expect::Exactly(read.version),
            replaces: Some("turn-2"),
            ..TurnExtras::default()
        };
        let written = store.append_turn(&OPEN, &c, &redo, replacing).await;
        assert_eq!(written.unwrap(), Written::Moved, "{name}");
        // A rewrite of turn 1 from that read: nothing written either.
        let rewritten = store
            .rewrite_turn(&OPEN, &c, removal("turn-1"), read.version)
            .await;
        assert_eq!(rewritten.unwrap(), Rewritten::Moved, "{name}");
        assert_eq!(store.turns(&OPEN, &c).await.unwrap().len(), 3, "{name}");
        // From a fresh read, both go through.
        let fresh = store.turn_context(&OPEN, &c, None).await.unwrap().version;
        let rewritten = store
            .rewrite_turn(&OPEN, &c, removal("turn-1"), fresh)
            .await;
        assert_eq!(rewritten.unwrap(), Rewritten::Done, "{name}");
        let missing = store
            .rewrite_turn(&OPEN, &c, removal("nope"), fresh + 1)
            .await;
        assert_eq!(missing.unwrap(), Rewritten::Missing, "{name}");
        let ids: Vec<_> = store.turns(&OPEN, &c).await.unwrap();
        assert_eq!(ids.len(), 2, "{name}");
        let summary = store.chat_summary(&OPEN, &c).await.unwrap().unwrap();
        assert_eq!(summary.messages, 4, "{name}: the counts follow");
    }
}

#[tokio::test]
async fn a_clear_or_a_deletion_refuses_turns_read_before_it() {
    let (stores, _redis) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        for deleted in [false, true] {
            let c = chat(if deleted { "deleted" } else { "cleared" });
            store
                .append_turn(&OPEN, &c, &turn(1), since(0))
                .await
                .unwrap();
            let before = store.turn_context(&OPEN, &c, None).await.unwrap().version;
            if deleted {
                store.delete_chat(&OPEN, &c).await.unwrap();
            } else {
                store.clear(&OPEN, &c).await.unwrap();
            }
            let late = store.append_turn(&OPEN, &c, &turn(2), since(before)).await;
            assert_eq!(late.unwrap(), Written::Gone, "{name}");
            assert!(store.turns(&OPEN, &c).await.unwrap().is_empty(), "{name}");
            if deleted {
                assert_eq!(store.chat_summary(&OPEN, &c).await.unwrap(), None, "{name}");
            }
            // A read after it sees the floor, and its turn is stored: the chat goes on, or
            // (deleted) starts anew above its tombstone.
            let after = store.turn_context(&OPEN, &c, None).await.unwrap().version;
            assert!(after > before, "{name}: {after} > {before}");
            let fresh = store.append_turn(&OPEN, &c, &turn(3), since(after)).await;
            assert_eq!(fresh.unwrap(), Written::Stored, "{name}");
            let read = store.turn_context(&OPEN, &c, None).await.unwrap();
            assert_eq!(read.history, [turn(3)], "{name}");
            assert!(read.version > after, "{name}");
        }
    }
}

#[tokio::test]
async fn one_read_at_a_time_claims_the_newest_turn() {
    let (stores, _redis) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        let c = chat("claims");
        // No turn: nothing to claim.
        let read = store.turn_context(&OPEN, &c, claim(None, "a")).await;
        assert!(!read.unwrap().claimed, "{name}");
        store
            .append_turn(&OPEN, &c, &turn(1), since(0))
            .await
            .unwrap();
        let first = store
            .turn_context(&OPEN, &c, claim(None, "a"))
            .await
            .unwrap();
        assert!(first.claimed, "{name}");
        // Its own claim read again holds; another's does not.
        let resent = store
            .turn_context(&OPEN, &c, claim(None, "a"))
            .await
            .unwrap();
        assert!(resent.claimed, "{name}");
        let other = store
            .turn_context(&OPEN, &c, claim(None, "b"))
            .await
            .unwrap();
        assert!(!other.claimed, "{name}");
        // Only while the named turn is the newest.
        let named = claim(Some("turn-0"), "c");
        let wrong = store.turn_context(&OPEN, &c, named).await.unwrap();
        assert!(!wrong.claimed, "{name}");
        // Freed by another claimant: still held; by its own: free.
        store.release_claim(&OPEN, &c, "b").await.unwrap();
        let held = store
            .turn_context(&OPEN, &c, claim(None, "b"))
            .await
            .unwrap();
        assert!(!held.claimed, "{name}");
        store.release_claim(&OPEN, &c, "a").await.unwrap();
        let freed = store
            .turn_context(&OPEN, &c, claim(None, "b"))
            .await
            .unwrap();
        assert!(freed.claimed, "{name}");
        // The claimant's write frees it, and a new newest turn can be claimed at once.
        let answer = Turn {
            id: Some("b".into()),
            ..turn(2)
        };
        let follows = TurnExtras {
            expect: Expect::Follows {
                seen: freed.version,
                newest: "turn-1",
            },
            claimed: Some("turn-1"),
            ..TurnExtras::default()
        };
        let written = store.append_turn(&OPEN, &c, &answer, follows).await;
        assert_eq!(written.unwrap(), Written::Stored, "{name}");
        let next = store
            .turn_context(&OPEN, &c, claim(None, "d"))
            .await
            .unwrap();
        assert!(next.claimed, "{name}");
    }
}
