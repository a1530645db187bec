//! The `Store` contract, run against both stores: the in-memory one used for local runs
//! must behave as Redis does.

use std::sync::Arc;
use std::time::Duration;

use chat_proxy::chat::ChatId;
use chat_proxy::chat::Tenant;
use chat_proxy::chat::{Asked, ToolResult, Turn, UserContent};
use chat_proxy::config::{RedisTarget, StoreSettings};
use chat_proxy::store::{
    Claim, Claimant, IdempotencyKey, ListOrder, MemoryStore, RedisStore, Store, TurnExtras, Turns,
    Written,
};

use crate::support::redis::RedisServer;

const OPEN: Tenant = Tenant::Open;

pub(crate) fn settings(ttl: Option<Duration>, max_history_messages: usize) -> StoreSettings {
    StoreSettings {
        key_prefix: "contract".to_owned(),
        chat_ttl: ttl,
        max_history_messages,
        max_chat_bytes: 1024 * 1024,
        temporary_ttl: Duration::from_secs(1),
    }
}

/// Both stores with the same settings; the Redis server lives as long as the returned guard.
pub(crate) async fn both(
    settings: StoreSettings,
) -> (Vec<(&'static str, Arc<dyn Store>)>, RedisServer) {
    let server = RedisServer::start();
    let target = RedisTarget::Url(server.url().into());
    let redis =
        RedisStore::connect(&target, settings.clone(), Duration::from_secs(1), None).unwrap();
    assert!(redis.wait_connected(Duration::from_secs(5)).await);
    let stores: Vec<(&'static str, Arc<dyn Store>)> = vec![
        ("memory", Arc::new(MemoryStore::new(settings))),
        ("redis", Arc::new(redis)),
    ];
    (stores, server)
}

pub(crate) fn chat(id: &str) -> ChatId {
    ChatId::parse(id).unwrap()
}

pub(crate) fn turn(n: usize) -> Turn {
    Turn::question(
        Some(format!("turn-{n}")),
        format!("q{n}"),
        (n % 2 == 0).then(|| format!("https://example.com/{n}.png")),
        format!("a{n}"),
    )
}

/// A turn of about `size` bytes when stored.
fn sized_turn(n: usize, size: usize) -> Turn {
    Turn::question(
        Some(format!("big-{n}")),
        format!("q{n}"),
        None,
        "x".repeat(size.saturating_sub(60)),
    )
}

#[tokio::test]
async fn prompts_are_kept_per_chat_and_globally() {
    let (stores, _server) = both(settings(None, 100)).await;
    for (name, store) in stores {
        assert_eq!(store.global_prompt(&OPEN).await.unwrap(), None, "{name}");
        store.set_global_prompt(&OPEN, "global").await.unwrap();
        store
            .set_chat_prompt(&OPEN, &chat("a"), "for a")
            .await
            .unwrap();
        assert_eq!(
            store.global_prompt(&OPEN).await.unwrap().as_deref(),
            Some("global"),
            "{name}"
        );
        assert_eq!(
            store
                .chat_prompt(&OPEN, &chat("a"))
                .await
                .unwrap()
                .as_deref(),
            Some("for a"),
            "{name}"
        );
        assert_eq!(
            store.chat_prompt(&OPEN, &chat("b")).await.unwrap(),
            None,
            "{name}"
        );

        let context = store.turn_context(&OPEN, &chat("a"), None).await.unwrap();
        assert_eq!(context.global_prompt.as_deref(), Some("global"), "{name}");
        assert_eq!(context.chat_prompt.as_deref(), Some("for a"), "{name}");
        assert!(context.history.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn turns_come_back_in_order_capped_to_the_newest() {
    let (stores, _server) = both(settings(None, 6)).await;
    for (name, store) in stores {
        for n in 0..5 {
            store
                .append_turn(&OPEN, &chat("a"), &turn(n), TurnExtras::default())
                .await
                .unwrap();
        }
        let expected: Vec<Turn> = (2..5).map(turn).collect();
        assert_eq!(
            store.turns(&OPEN, &chat("a")).await.unwrap(),
            expected,
            "{name}"
        );
        assert_eq!(
            store
                .turn_context(&OPEN, &chat("a"), None)
                .await
                .unwrap()
                .history,
            expected,
            "{name}"
        );
        assert!(
            store.turns(&OPEN, &chat("b")).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn clear_keeps_the_prompt() {
    let (stores, _server) = both(settings(None, 100)).await;
    for (name, store) in stores {
        store.set_chat_prompt(&OPEN, &chat("a"), "p").await.unwrap();
        store
            .append_turn(&OPEN, &chat("a"), &turn(1), TurnExtras::default())
            .await
            .unwrap();
        store.clear(&OPEN, &chat("a")).await.unwrap();
        assert!(
            store.turns(&OPEN, &chat("a")).await.unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            store
                .chat_prompt(&OPEN, &chat("a"))
                .await
                .unwrap()
                .as_deref(),
            Some("p"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn chats_expire_after_their_ttl_and_the_global_prompt_does_not() {
    let (stores, _server) = both(settings(Some(Duration::from_secs(1)), 100)).await;
    for (_, store) in &stores {
        store.set_global_prompt(&OPEN, "global").await.unwrap();
        store.set_chat_prompt(&OPEN, &chat("a"), "p").await.unwrap();
        store
            .append_turn(&OPEN, &chat("a"), &turn(1), TurnExtras::default())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (name, store) in &stores {
        assert!(
            store.turns(&OPEN, &chat("a")).await.unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            store.chat_prompt(&OPEN, &chat("a")).await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            store.global_prompt(&OPEN).await.unwrap().as_deref(),
            Some("global"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_temporary_chat_is_never_listed_and_expires_on_its_own_time() {
    use chat_proxy::store::{ChatUsage, NewChat};
    // Chats kept forever; temporary ones a second.
    let (stores, _server) = both(settings(None, 100)).await;
    for (name, store) in &stores {
        let new = NewChat {
            prompt: Some("p"),
            title: None,
            turns: &[],
            usage: ChatUsage::default(),
            temporary: true,
        };
        assert!(
            store.create_chat(&OPEN, &chat("t"), new).await.unwrap(),
            "{name}"
        );
        let context = store.turn_context(&OPEN, &chat("t"), None).await.unwrap();
        assert_eq!(context.temporary, Some(Duration::from_secs(1)), "{name}");
        let extras = TurnExtras {
            temporary: context.temporary,
            ..TurnExtras::default()
        };
        let written = store
            .append_turn(&OPEN, &chat("t"), &turn(1), extras)
            .await
            .unwrap();
        assert_eq!(written, Written::Stored, "{name}");
        store
            .set_chat_prompt(&OPEN, &chat("t"), "p2")
            .await
            .unwrap();
        assert!(
            store.set_title(&OPEN, &chat("t"), "title").await.unwrap(),
            "{name}"
        );
        store
            .append_turn(&OPEN, &chat("kept"), &turn(1), TurnExtras::default())
            .await
            .unwrap();
        let page = store
            .list_chats(&OPEN, ListOrder::Written, None, 10)
            .await
            .unwrap();
        let ids: Vec<&str> = page.chats.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["kept"], "{name}");
        let summary = store
            .chat_summary(&OPEN, &chat("t"))
            .await
            .unwrap()
            .unwrap();
        assert!(summary.temporary, "{name}");
        assert_eq!(
            store.temporary(&OPEN, &chat("t")).await.unwrap(),
            Some(Duration::from_secs(1)),
            "{name}"
        );
        assert_eq!(store.temporary(&OPEN, &chat("kept")).await.unwrap(), None);
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (name, store) in &stores {
        assert!(
            store.turns(&OPEN, &chat("t")).await.unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            store.chat_prompt(&OPEN, &chat("t")).await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            store.chat_summary(&OPEN, &chat("t")).await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            store.turns(&OPEN, &chat("kept")).await.unwrap().len(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn stored_turns_that_are_not_ours_are_an_error_not_a_crash() {
    let server = RedisServer::start();
    let target = RedisTarget::Url(server.url().into());
    let store =
        RedisStore::connect(&target, settings(None, 100), Duration::from_secs(1), None).unwrap();
    server.query(&["RPUSH", "contract:chat:{a}:turns", "not json"]);
    assert!(store.turns(&OPEN, &chat("a")).await.is_err());
    assert!(store.turn_context(&OPEN, &chat("a"), None).await.is_err());
}

#[tokio::test]
async fn tenants_never_see_each_others_data() {
    let (stores, _server) = both(settings(None, 100)).await;
    let alice = Tenant::Caller("alice".into());
    let bob = Tenant::Caller("bob".into());
    for (name, store) in stores {
        store
            .set_global_prompt(&alice, "alice's rules")
            .await
            .unwrap();
        store
            .set_chat_prompt(&alice, &chat("same-id"), "alice's chat")
            .await
            .unwrap();
        store
            .append_turn(&alice, &chat("same-id"), &turn(1), TurnExtras::default())
            .await
            .unwrap();

        assert_eq!(store.global_prompt(&bob).await.unwrap(), None, "{name}");
        assert_eq!(store.global_prompt(&OPEN).await.unwrap(), None, "{name}");
        assert_eq!(
            store.chat_prompt(&bob, &chat("same-id")).await.unwrap(),
            None,
            "{name}"
        );
        assert!(
            store
                .turns(&bob, &chat("same-id"))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        store.clear(&bob, &chat("same-id")).await.unwrap();
        assert_eq!(
            store.turns(&alice, &chat("same-id")).await.unwrap().len(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn requests_are_counted_per_caller_within_their_window() {
    let (stores, _server) = both(settings(None, 100)).await;
    for (name, store) in stores {
        let first = store.count_request("caller:alice", "r1", 10).await.unwrap();
        let second = store.count_request("caller:alice", "r2", 10).await.unwrap();
        let other = store.count_request("caller:bob", "r3", 10).await.unwrap();
        assert_eq!(
            (first.count, second.count, other.count),
            (1, 2, 1),
            "{name}"
        );
        assert!(
            (59..=60).contains(&first.resets_in),
            "{name}: {}",
            first.resets_in
        );
    }
}

#[tokio::test]
async fn a_request_counted_twice_counts_once_and_answers_the_same() {
    let (stores, _server) = both(settings(None, 100)).await;
    for (name, store) in stores {
        let first = store.count_request("ip:1", "r1", 3).await.unwrap();
        let second = store.count_request("ip:1", "r2", 3).await.unwrap();
        // r1 sent again (a reply lost after the count ran): the same count as the first time.
        let again = store.count_request("ip:1", "r1", 3).await.unwrap();
        let third = store.count_request("ip:1", "r3", 3).await.unwrap();
        assert_eq!(
            (first.count, second.count, again.count, third.count),
            (1, 2, 1, 3),
            "{name}"
        );
        // Past the limit every request counts as limit + 1, sent again or not.
        let over = store.count_request("ip:1", "r4", 3).await.unwrap();
        let over_again = store.count_request("ip:1", "r4", 3).await.unwrap();
        let more = store.count_request("ip:1", "r5", 3).await.unwrap();
        assert_eq!(
            (over.count, over_again.count, more.count),
            (4, 4, 4),
            "{name}"
        );
    }
}

fn claimant<'a>(fingerprint: &'a str, token: &'a str) -> Claimant<'a> {
    Claimant {
        fingerprint,
        token,
        hold: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_claim_sent_twice_is_its_own_and_a_release_frees_only_its_own_claim() {
    let (stores, _server) = both(settings(None, 100)).await;
    let key = IdempotencyKey {
        chat: Some(chat("c1")),
        hash: "ab".repeat(32),
    };
    for (name, store) in stores {
        let first = claimant("fp", "token-1");
        assert_eq!(
            store.claim(&OPEN, &key, first).await.unwrap(),
            Claim::Claimed,
            "{name}"
        );
        // The same claim again (sent twice after a cut): still this request's.
        assert_eq!(
            store.claim(&OPEN, &key, first).await.unwrap(),
            Claim::Claimed,
            "{name}"
        );
        // Another request with the same body: in progress.
        let other = claimant("fp", "token-2");
        assert_eq!(
            store.claim(&OPEN, &key, other).await.unwrap(),
            Claim::InProgress { same: true },
            "{name}"
        );
        // A request with another body: the key is another request's.
        assert_eq!(
            store
                .claim(&OPEN, &key, claimant("other fp", "token-3"))
                .await
                .unwrap(),
            Claim::InProgress { same: false },
            "{name}"
        );
        // The other request's release frees nothing of the first's.
        store.release(&OPEN, &key, other).await.unwrap();
        assert!(
            matches!(
                store.claim(&OPEN, &key, other).await.unwrap(),
                Claim::InProgress { .. }
            ),
            "{name}"
        );
        // Its own release frees it; sent again after another request claimed the key, it
        // leaves that newer claim alone.
        store.release(&OPEN, &key, first).await.unwrap();
        assert_eq!(
            store.claim(&OPEN, &key, other).await.unwrap(),
            Claim::Claimed,
            "{name}"
        );
        store.release(&OPEN, &key, first).await.unwrap();
        assert!(
            matches!(
                store.claim(&OPEN, &key, first).await.unwrap(),
                Claim::InProgress { .. }
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_turn_sent_twice_is_stored_once() {
    let (stores, _server) = both(settings(None, 100)).await;
    for (name, store) in stores {
        for _ in 0..3 {
            store
                .append_turn(&OPEN, &chat("a"), &turn(1), TurnExtras::default())
                .await
                .unwrap();
        }
        store
            .append_turn(&OPEN, &chat("a"), &turn(2), TurnExtras::default())
            .await
            .unwrap();
        assert_eq!(
            store.turns(&OPEN, &chat("a")).await.unwrap(),
            vec![turn(1), turn(2)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_chat_keeps_at_most_max_chat_bytes_dropping_its_oldest_turns() {
    let mut capped = settings(None, 1000);
    capped.max_chat_bytes = 10_000;
    let (stores, _server) = both(capped).await;
    for (name, store) in stores {
        for n in 0..10 {
            store
                .append_turn(
                    &OPEN,
                    &chat("a"),
                    &sized_turn(n, 3000),
                    TurnExtras::default(),
                )
                .await
                .unwrap();
        }
        let kept = store.turns(&OPEN, &chat("a")).await.unwrap();
        let ids: Vec<String> = kept.iter().map(|t| t.id.clone().unwrap()).collect();
        assert_eq!(ids, ["big-7", "big-8", "big-9"], "{name}");
        let bytes: usize = kept
            .iter()
            .map(|t| serde_json::to_string(t).unwrap().len())
            .sum();
        assert!(bytes <= 10_000, "{name}: {bytes}");

        // A single turn over the cap is kept alone: the newest turn is never dropped.
        store
            .append_turn(
                &OPEN,
                &chat("a"),
                &sized_turn(99, 20_000),
                TurnExtras::default(),
            )
            .await
            .unwrap();
        let kept = store.turns(&OPEN, &chat("a")).await.unwrap();
        assert_eq!(kept.len(), 1, "{name}");
        assert_eq!(kept[0].id.as_deref(), Some("big-99"), "{name}");

        // Clearing starts the count again.
        store.clear(&OPEN, &chat("a")).await.unwrap();
        for n in 0..3 {
            store
                .append_turn(
                    &OPEN,
                    &chat("a"),
                    &sized_turn(100 + n, 3000),
                    TurnExtras::default(),
                )
                .await
                .unwrap();
        }
        assert_eq!(
            store.turns(&OPEN, &chat("a")).await.unwrap().len(),
            3,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_chat_written_before_its_size_was_kept_is_measured_on_its_next_turn() {
    let server = RedisServer::start();
    let target = RedisTarget::Url(server.url().into());
    let mut capped = settings(None, 1000);
    capped.max_chat_bytes = 10_000;
    let store = RedisStore::connect(&target, capped, Duration::from_secs(1), None).unwrap();
    // Four turns of ~3000 bytes in the first version's format: no meta, no ids.
    for n in 0..4 {
        let old = serde_json::json!({"user": format!("q{n}"), "assistant": "y".repeat(3000)});
        server.query(&["RPUSH", "contract:chat:{a}:turns", &old.to_string()]);
    }
    store
        .append_turn(
            &OPEN,
            &chat("a"),
            &sized_turn(4, 100),
            TurnExtras::default(),
        )
        .await
        .unwrap();
    let kept = store.turns(&OPEN, &chat("a")).await.unwrap();
    let users: Vec<String> = kept
        .iter()
        .map(|t| t.asked[0].text().into_owned())
        .collect();
    assert_eq!(users, ["q1", "q2", "q3", "q4"]);
    let bytes: usize = server
        .query(&["LRANGE", "contract:chat:{a}:turns", "0", "-1"])
        .lines()
        .map(str::len)
        .sum();
    assert_eq!(
        server.query(&["HGET", "contract:chat:{a}:meta", "bytes"]),
        bytes.to_string()
    );
}

#[tokio::test]
async fn a_ttl_of_ten_years_reaches_redis_as_written() {
    // 315360000: a number a Lua script may print as 3.1536e+08, which EXPIRE refuses.
    let ten_years = Duration::from_secs(chat_proxy::config::MAX_CHAT_TTL_SECONDS);
    let server = RedisServer::start();
    let target = RedisTarget::Url(server.url().into());
    let store = RedisStore::connect(
        &target,
        settings(Some(ten_years), 100),
        Duration::from_secs(1),
        None,
    )
    .unwrap();
    store
        .append_turn(&OPEN, &chat("a"), &turn(1), TurnExtras::default())
        .await
        .unwrap();
    let ttl: u64 = server
        .query(&["TTL", "contract:chat:{a}:turns"])
        .parse()
        .unwrap();
    assert!(ttl > ten_years.as_secs() - 10, "{ttl}");
}

#[test]
fn the_harness_takes_an_error_reply_for_no_answer() {
    // A check that compares two error replies as if they were answers cannot fail.
    let server = RedisServer::start();
    assert_eq!(server.cli(&["PING"]).as_deref(), Some("PONG"));
    assert_eq!(server.cli(&["NO-SUCH-COMMAND"]), None);
    assert_eq!(
        server.cli(&["CLUSTER", "KEYSLOT", "{c1}"]),
        None,
        "a Redis without cluster mode refuses it"
    );
    server.query(&["RPUSH", "list", "x"]);
    assert_eq!(server.cli(&["INCR", "list"]), None, "WRONGTYPE is an error");
}

/// A turn of `asked` user messages and its reply.
fn turn_of(n: usize, asked: usize) -> Turn {
    Turn {
        id: Some(format!("many-{n}")),
        asked: (0..asked)
            .map(|i| Asked::User(UserContent::Text(format!("q{n}.{i}"))))
            .collect(),
        assistant: format!("a{n}"),
        calls: Vec::new(),
        exchange: None,
        tokens: None,
    }
}

async fn prompt_of(store: &dyn Store, id: &str) -> Option<String> {
    store.chat_prompt(&OPEN, &chat(id)).await.unwrap()
}

#[tokio::test]
async fn a_turn_sets_the_chats_prompt_in_its_own_write_once() {
    let (stores, _server) = both(settings(None, 100)).await;
    let with_prompt = TurnExtras {
        chat_prompt: Some("new"),
        ..TurnExtras::default()
    };
    for (name, store) in stores {
        let store = &*store;
        store
            .set_chat_prompt(&OPEN, &chat("p"), "old")
            .await
            .unwrap();
        let append = |n: usize, extras: TurnExtras<'static>| async move {
            store
                .append_turn(&OPEN, &chat("p"), &turn(n), extras)
                .await
                .unwrap();
        };
        append(1, with_prompt).await;
        assert_eq!(
            prompt_of(store, "p").await.as_deref(),
            Some("new"),
            "{name}"
        );
        // Sent again after a cut, the turn's marker says it was stored: nothing changes,
        // not even a prompt set since.
        store
            .set_chat_prompt(&OPEN, &chat("p"), "later")
            .await
            .unwrap();
        append(1, with_prompt).await;
        assert_eq!(
            prompt_of(store, "p").await.as_deref(),
            Some("later"),
            "{name}"
        );
        assert_eq!(
            store.turns(&OPEN, &chat("p")).await.unwrap().len(),
            1,
            "{name}"
        );
        // Without one, the prompt stays.
        append(2, TurnExtras::default()).await;
        assert_eq!(
            prompt_of(store, "p").await.as_deref(),
            Some("later"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn tool_calls_and_results_are_kept_exactly_and_counted_as_messages() {
    let (stores, _server) = both(settings(None, 5)).await;
    let call = serde_json::json!({"id": "call_1", "type": "function",
        "function": {"name": "f", "arguments": "{\"a\":1}"}});
    let asking = Turn {
        calls: vec![call],
        ..Turn::question(Some("t-call".into()), "use f".into(), None, String::new())
    };
    let answering = Turn {
        id: Some("t-result".into()),
        asked: vec![
            Asked::ToolResult(ToolResult {
                tool_call_id: "call_1".into(),
                content: serde_json::json!([{"type": "text", "text": "done"}]),
            }),
            Asked::User(UserContent::Text("and then?".into())),
        ],
        assistant: "finished".into(),
        calls: Vec::new(),
        exchange: None,
        tokens: None,
    };
    for (name, store) in stores {
        for t in [&asking, &answering] {
            store
                .append_turn(&OPEN, &chat("tools"), t, TurnExtras::default())
                .await
                .unwrap();
        }
        let kept = store.turns(&OPEN, &chat("tools")).await.unwrap();
        assert_eq!(kept, [asking.clone(), answering.clone()], "{name}");
        // 2 + 3 + 2 messages over a cap of 5: the oldest turn goes.
        store
            .append_turn(&OPEN, &chat("tools"), &turn(9), TurnExtras::default())
            .await
            .unwrap();
        let kept = store.turns(&OPEN, &chat("tools")).await.unwrap();
        assert_eq!(kept, [answering.clone(), turn(9)], "{name}");
    }
}

#[tokio::test]
async fn a_chat_keeps_at_most_max_history_messages_counting_every_message() {
    let (stores, _server) = both(settings(None, 4)).await;
    for (name, store) in stores {
        let c = chat("counted");
        // Three questions and their answer: four messages, the cap.
        store
            .append_turn(&OPEN, &c, &turn_of(1, 3), TurnExtras::default())
            .await
            .unwrap();
        assert_eq!(store.turns(&OPEN, &c).await.unwrap().len(), 1, "{name}");
        // Two more: six in all, so the oldest turn goes.
        store
            .append_turn(&OPEN, &c, &turn_of(2, 1), TurnExtras::default())
            .await
            .unwrap();
        let kept = store.turns(&OPEN, &c).await.unwrap();
        assert_eq!(kept, vec![turn_of(2, 1)], "{name}");
        let context = store.turn_context(&OPEN, &c, None).await.unwrap();
        assert_eq!(context.history, kept, "{name}: the read sends what is kept");
        // A turn that alone holds more than the cap is kept whole, as the newest turn.
        store
            .append_turn(&OPEN, &c, &turn_of(3, 5), TurnExtras::default())
            .await
            .unwrap();
        assert_eq!(
            store.turns(&OPEN, &c).await.unwrap(),
            vec![turn_of(3, 5)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn chats_are_listed_titled_made_whole_redone_and_deleted_alike() {
    use chat_proxy::store::NewChat;
    let (stores, _server) = both(settings(Some(Duration::from_secs(60)), 100)).await;
    for (name, store) in stores {
        let store = &*store;
        for n in 0..3 {
            let id = format!("c{n}");
            store
                .append_turn(&OPEN, &chat(&id), &turn(n), TurnExtras::default())
                .await
                .unwrap();
            // Apart by a millisecond at least, so the order is the writes'.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        // A chain is not a chat its caller made: never listed.
        let chain = ChatId::new_chain();
        store
            .append_turn(&OPEN, &chain, &turn(9), TurnExtras::default())
            .await
            .unwrap();
        let page = store
            .list_chats(&OPEN, ListOrder::Written, None, 2)
            .await
            .unwrap();
        let ids: Vec<&str> = page.chats.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c2", "c1"], "{name}");
        assert_eq!(page.chats[0].title.as_deref(), Some("q2"), "{name}");
        assert_eq!(page.chats[0].messages, 2, "{name}");
        let rest = store
            .list_chats(&OPEN, ListOrder::Written, page.next.as_ref(), 2)
            .await
            .unwrap();
        let ids: Vec<&str> = rest.chats.iter().map(|c| c.id.as_str()).collect();
        assert_eq!((ids, rest.next), (vec!["c0"], None), "{name}");

        assert!(
            store.set_title(&OPEN, &chat("c0"), "Zero").await.unwrap(),
            "{name}"
        );
        assert!(
            !store.set_title(&OPEN, &chat("none"), "x").await.unwrap(),
            "{name}"
        );
        assert!(
            store
                .chat_summary(&OPEN, &chat("none"))
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        let zero = store
            .chat_summary(&OPEN, &chat("c0"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(zero.title.as_deref(), Some("Zero"), "{name}");
        assert_eq!(
            store
                .list_chats(&OPEN, ListOrder::Written, None, 1)
                .await
                .unwrap()
                .chats[0]
                .id,
            chat("c0"),
            "{name}"
        );

        let turns = [turn(1), turn(2)];
        let new = NewChat {
            prompt: Some("p"),
            title: None,
            turns: &turns,
            usage: Default::default(),
            temporary: false,
        };
        assert!(
            store.create_chat(&OPEN, &chat("made"), new).await.unwrap(),
            "{name}"
        );
        assert!(
            !store.create_chat(&OPEN, &chat("made"), new).await.unwrap(),
            "{name}"
        );
        assert_eq!(
            store.turns(&OPEN, &chat("made")).await.unwrap(),
            turns,
            "{name}"
        );
        assert_eq!(
            prompt_of(store, "made").await.as_deref(),
            Some("p"),
            "{name}"
        );
        let made = store
            .chat_summary(&OPEN, &chat("made"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (made.messages, made.title.as_deref()),
            (4, Some("q1")),
            "{name}"
        );

        // A turn that replaces another drops it and every turn after it, in one write.
        let redo = Turn::question(Some("redo".into()), "again".into(), None, "new".into());
        let replacing = TurnExtras {
            replaces: Some("turn-1"),
            ..TurnExtras::default()
        };
        store
            .append_turn(&OPEN, &chat("made"), &redo, replacing)
            .await
            .unwrap();
        assert_eq!(
            store.turns(&OPEN, &chat("made")).await.unwrap(),
            std::slice::from_ref(&redo),
            "{name}"
        );
        let gone = Turn::question(Some("late".into()), "x".into(), None, "y".into());
        let stale = TurnExtras {
            replaces: Some("turn-1"),
            ..TurnExtras::default()
        };
        assert_eq!(
            store
                .append_turn(&OPEN, &chat("made"), &gone, stale)
                .await
                .unwrap(),
            Written::Moved,
            "{name}"
        );
        assert_eq!(
            store.turns(&OPEN, &chat("made")).await.unwrap(),
            [redo],
            "{name}: unchanged"
        );
        let summary = store
            .chat_summary(&OPEN, &chat("made"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(summary.messages, 2, "{name}");

        store.delete_chat(&OPEN, &chat("made")).await.unwrap();
        assert!(
            store
                .chat_summary(&OPEN, &chat("made"))
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        let listed = store
            .list_chats(&OPEN, ListOrder::Written, None, 10)
            .await
            .unwrap();
        assert!(listed.chats.iter().all(|c| c.id != chat("made")), "{name}");
        assert_eq!(listed.chats.len(), 3, "{name}");
    }
}

#[tokio::test]
async fn where_a_responses_items_are_is_recorded_with_its_usage_once_per_caller() {
    let (stores, _server) = both(settings(Some(Duration::from_secs(600)), 100)).await;
    let day = chat_proxy::clock::UtcDay::today();
    let alice = Tenant::Caller("alice".to_owned());
    let ids = ["msg_1".to_owned(), "rs_2".to_owned()];
    for (name, store) in &stores {
        let spent = chat_proxy::store::Spent {
            id: "turn-items",
            model: "gpt-4o-mini",
            prompt_tokens: 3,
            completion_tokens: 2,
            cached_tokens: 0,
            day: &day,
            ip: None,
            answer: None,
            listed: None,
            items: Some(chat_proxy::store::StoredItems {
                response: "resp_x",
                ids: &ids,
                temporary: None,
            }),
        };
        // Sent twice (a reply lost after it ran): the same record, counted once.
        store.add_usage(&alice, spent).await.unwrap();
        store.add_usage(&alice, spent).await.unwrap();
        let asked = ["rs_2".to_owned(), "msg_9".to_owned(), "msg_1".to_owned()];
        assert_eq!(
            store.item_responses(&alice, &asked).await.unwrap(),
            [Some("resp_x".to_owned()), None, Some("resp_x".to_owned())],
            "{name}"
        );
        assert_eq!(
            store.item_responses(&OPEN, &asked).await.unwrap(),
            [None, None, None],
            "{name}: another caller's items are not found"
        );
        let usage = store.caller_usage(&alice, &day).await.unwrap();
        assert_eq!(usage.day.total.total_tokens, 5, "{name}");
    }
}

#[tokio::test]
async fn a_background_run_is_taken_once_cancelled_once_and_records_each_batch_once() {
    use chat_proxy::store::{Ending, NewRun, RunStatus, Start};
    let (stores, _server) = both(settings(None, 100)).await;
    let far = chat_proxy::clock::now_ms() + 60_000;
    for (name, store) in stores {
        let run = NewRun {
            id: "0123456789abcdef0123456789abcdef",
            ticket: "the ticket",
            start_by_ms: far,
        };
        let c = chat("runs");
        // Queued twice (a resent write): kept once, as first written.
        store.queue_run(&OPEN, &c, run).await.unwrap();
        let again = NewRun {
            ticket: "another ticket",
            ..run
        };
        store.queue_run(&OPEN, &c, again).await.unwrap();
        let kept = store.run_state(&OPEN, &c, run.id).await.unwrap().unwrap();
        assert_eq!(
            (kept.status, kept.ticket.as_str()),
            (RunStatus::Queued, "the ticket"),
            "{name}"
        );
        assert_eq!(
            store
                .run_state(&Tenant::Caller("bob".into()), &c, run.id)
                .await
                .unwrap(),
            None,
            "{name}"
        );

        // Taken by one runner; the same runner again (a resent start) finds it its own.
        let taken = store
            .start_run(&OPEN, &c, run.id, "inv-1", far + 1)
            .await
            .unwrap();
        assert!(
            matches!(&taken, Start::Taken(state) if state.status == RunStatus::InProgress && state.deadline_ms == far + 1),
            "{name}: {taken:?}"
        );
        let resent = store
            .start_run(&OPEN, &c, run.id, "inv-1", far + 1)
            .await
            .unwrap();
        assert!(matches!(resent, Start::Taken(_)), "{name}");
        let other = store
            .start_run(&OPEN, &c, run.id, "inv-2", far)
            .await
            .unwrap();
        assert!(matches!(other, Start::Not(_)), "{name}: {other:?}");
        let missing = store
            .start_run(&OPEN, &c, "f".repeat(32).as_str(), "inv-1", far)
            .await
            .unwrap();
        assert_eq!(missing, Start::Missing, "{name}");

        // Batches in order, each once; a cancellation asked for is told with the next.
        assert!(
            !store
                .record_events(&OPEN, &c, run.id, 0, "[1]")
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .record_events(&OPEN, &c, run.id, 0, "[1]")
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            store
                .record_events(&OPEN, &c, run.id, 2, "[3]")
                .await
                .is_err(),
            "{name}: a gap"
        );
        let asked = store
            .cancel_run(&OPEN, &c, run.id, "cancelled")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (asked.status, asked.cancel_asked),
            (RunStatus::InProgress, true),
            "{name}"
        );
        assert!(
            store
                .record_events(&OPEN, &c, run.id, 1, "[2]")
                .await
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            store.run_events(&OPEN, &c, run.id, 0).await.unwrap(),
            ["[1]", "[2]"],
            "{name}"
        );
        assert_eq!(
            store.run_events(&OPEN, &c, run.id, 1).await.unwrap(),
            ["[2]"],
            "{name}"
        );

        // Ended only by its runner, once, the same way when sent again; not abandoned by
        // the invocation that queued it, now that it runs.
        let by = |runner| Ending::Runner(runner);
        let end =
            |by, status| store.end_run(&OPEN, &c, run.id, by, status, "{\"status\":\"cancelled\"}");
        assert!(
            !end(Ending::Queued, RunStatus::Failed).await.unwrap(),
            "{name}"
        );
        assert!(
            !end(by("inv-2"), RunStatus::Cancelled).await.unwrap(),
            "{name}"
        );
        for _ in 0..2 {
            assert!(
                end(by("inv-1"), RunStatus::Cancelled).await.unwrap(),
                "{name}"
            );
        }
        assert!(
            !end(by("inv-1"), RunStatus::Completed).await.unwrap(),
            "{name}: ended"
        );
        let ended = store.run_state(&OPEN, &c, run.id).await.unwrap().unwrap();
        assert_eq!(ended.status, RunStatus::Cancelled, "{name}");
        assert_eq!(
            ended.response.as_deref(),
            Some("{\"status\":\"cancelled\"}"),
            "{name}"
        );
        assert_eq!(ended.batches, 2, "{name}");

        // A queued run cancelled ends at once with the response given, and is never taken.
        let queued = NewRun {
            id: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ..run
        };
        store.queue_run(&OPEN, &c, queued).await.unwrap();
        for _ in 0..2 {
            let cancelled = store
                .cancel_run(&OPEN, &c, queued.id, "the cancelled one")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(cancelled.status, RunStatus::Cancelled, "{name}");
            assert_eq!(
                cancelled.response.as_deref(),
                Some("the cancelled one"),
                "{name}"
            );
        }
        let late = store
            .start_run(&OPEN, &c, queued.id, "inv-3", far)
            .await
            .unwrap();
        assert!(
            matches!(late, Start::Not(state) if state.status == RunStatus::Cancelled),
            "{name}"
        );

        // A queued run abandoned (its hand-over failed) ends so, and is never taken.
        let abandoned = NewRun {
            id: "cccccccccccccccccccccccccccccccc",
            ..run
        };
        store.queue_run(&OPEN, &c, abandoned).await.unwrap();
        for _ in 0..2 {
            let ended = store
                .end_run(
                    &OPEN,
                    &c,
                    abandoned.id,
                    Ending::Queued,
                    RunStatus::Failed,
                    "gone",
                )
                .await
                .unwrap();
            assert!(ended, "{name}");
        }
        let late = store
            .start_run(&OPEN, &c, abandoned.id, "inv-5", far)
            .await
            .unwrap();
        assert!(
            matches!(late, Start::Not(state) if state.status == RunStatus::Failed),
            "{name}"
        );

        // A queued run past its start-by time is never taken, nor cancelled.
        let stale = NewRun {
            id: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            start_by_ms: 1,
            ..run
        };
        store.queue_run(&OPEN, &c, stale).await.unwrap();
        let late = store
            .start_run(&OPEN, &c, stale.id, "inv-4", far)
            .await
            .unwrap();
        assert!(matches!(late, Start::Not(_)), "{name}");
        let kept = store
            .cancel_run(&OPEN, &c, stale.id, "x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.status, RunStatus::Queued, "{name}: left as it was");
        assert_eq!(
            kept.as_of(chat_proxy::clock::now_ms()).status,
            RunStatus::Failed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_live_turn_is_named_by_its_chat_until_it_ends_and_a_resent_write_changes_nothing() {
    use chat_proxy::store::{Ending, NewLive, RunStatus};
    let (stores, _server) = both(settings(None, 100)).await;
    let far = chat_proxy::clock::now_ms() + 60_000;
    for (name, store) in stores {
        let c = chat("live");
        let first = NewLive {
            id: "0123456789abcdef0123456789abcdef",
            asked: "{\"route\":\"chat\"}",
            deadline_ms: far,
        };
        assert_eq!(store.live_turn(&OPEN, &c).await.unwrap(), None, "{name}");
        // Kept twice (a resent write): kept once, in progress, taken by itself.
        store.begin_live(&OPEN, &c, first).await.unwrap();
        store.begin_live(&OPEN, &c, first).await.unwrap();
        assert_eq!(
            store.live_turn(&OPEN, &c).await.unwrap().as_deref(),
            Some(first.id),
            "{name}"
        );
        let kept = store.run_state(&OPEN, &c, first.id).await.unwrap().unwrap();
        assert_eq!(kept.status, RunStatus::InProgress, "{name}");
        assert_eq!(kept.ticket, first.asked, "{name}");
        // Another caller's chat of the same name names nothing.
        let bob = Tenant::Caller("bob".into());
        assert_eq!(store.live_turn(&bob, &c).await.unwrap(), None, "{name}");
        // A second live turn on the chat is the one named; the first ending leaves it so.
        let second = NewLive {
            id: "fedcba9876543210fedcba9876543210",
            ..first
        };
        store.begin_live(&OPEN, &c, second).await.unwrap();
        let end = |id, status| store.end_run(&OPEN, &c, id, Ending::Runner(id), status, "{}");
        assert!(end(first.id, RunStatus::Completed).await.unwrap(), "{name}");
        assert_eq!(
            store.live_turn(&OPEN, &c).await.unwrap().as_deref(),
            Some(second.id),
            "{name}"
        );
        // A stop is asked of it, and its end (sent twice) names none.
        let asked = store.cancel_run(&OPEN, &c, second.id, "").await.unwrap();
        assert!(asked.unwrap().cancel_asked, "{name}");
        for _ in 0..2 {
            assert!(
                end(second.id, RunStatus::Cancelled).await.unwrap(),
                "{name}"
            );
        }
        assert_eq!(store.live_turn(&OPEN, &c).await.unwrap(), None, "{name}");
        // Its start sent again after its end brings nothing back.
        store.begin_live(&OPEN, &c, second).await.unwrap();
        assert_eq!(store.live_turn(&OPEN, &c).await.unwrap(), None, "{name}");
        let ended = store
            .run_state(&OPEN, &c, second.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.status, RunStatus::Cancelled, "{name}");
        // Past its deadline, a live turn is named no more, and reads failed.
        let lapsed = NewLive {
            id: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            deadline_ms: chat_proxy::clock::now_ms() + 50,
            ..first
        };
        store.begin_live(&OPEN, &c, lapsed).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(store.live_turn(&OPEN, &c).await.unwrap(), None, "{name}");
        let state = store
            .run_state(&OPEN, &c, lapsed.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.as_of(chat_proxy::clock::now_ms()).status,
            RunStatus::Failed,
            "{name}"
        );
    }
}
