//! How turns are kept: concurrency, the history cap, expiry, keys, and Redis cost per turn.

use std::collections::{BTreeMap, HashSet};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_turns_on_one_chat_lose_nothing_and_keep_pairs_together() {
    let t = TestApp::start().await;
    let questions: Vec<String> = (0..24).map(|i| format!("question {i}")).collect();

    let replies = join_all(questions.iter().map(|q| t.say("busy", q))).await;
    for (question, reply) in questions.iter().zip(&replies) {
        assert_eq!(reply["content"], format!("reply to: {question}"));
    }

    let transcript = t.transcript("busy").await;
    let messages = transcript.as_array().unwrap();
    assert_eq!(messages.len(), 2 * questions.len());
    let mut seen = HashSet::new();
    for pair in messages.chunks(2) {
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
        let question = pair[0]["content"].as_str().unwrap();
        assert_eq!(pair[1]["content"], format!("reply to: {question}"));
        assert!(seen.insert(question.to_owned()), "{question} stored twice");
    }
    assert_eq!(seen.len(), questions.len());
}

#[tokio::test]
async fn history_is_capped_to_the_newest_messages() {
    let t = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "4")]).await;
    for q in ["one", "two", "three", "four"] {
        t.say("c1", q).await;
    }
    let contents: Vec<Value> = t
        .transcript("c1")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(
        contents,
        vec![
            json!("three"),
            json!("reply to: three"),
            json!("four"),
            json!("reply to: four")
        ]
    );
    // The fourth turn sent the two turns before it, not all three.
    let fourth = &t.openai.chat_bodies().await[3];
    let sent: Vec<&str> = fourth["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("<parts>"))
        .collect();
    assert_eq!(
        sent,
        vec![
            "You are a helpful assistant.",
            "two",
            "reply to: two",
            "three",
            "reply to: three",
            "four"
        ]
    );
    assert_eq!(t.redis.query(&["LLEN", "chat-proxy:chat:{c1}:turns"]), "2");
}

#[tokio::test]
async fn keys_use_the_prefix_and_the_chat_id_as_hash_tag() {
    let t = TestApp::with_env(&[("REDIS_KEY_PREFIX", "myapp")]).await;
    t.post("/system", json!({"content": "g"})).await;
    t.post("/c-1/system", json!({"content": "p"})).await;
    t.say("c-1", "hi").await;
    assert_eq!(
        t.keys(),
        vec![
            "myapp:chat:{c-1}:system",
            "myapp:chat:{c-1}:turns",
            "myapp:global:system"
        ]
    );
    let system = t
        .redis
        .query(&["CLUSTER", "KEYSLOT", "myapp:chat:{c-1}:system"]);
    let turns = t
        .redis
        .query(&["CLUSTER", "KEYSLOT", "myapp:chat:{c-1}:turns"]);
    assert_eq!(system, turns, "a chat's keys share one Cluster slot");
}

fn ttl(t: &TestApp, key: &str) -> i64 {
    t.redis.query(&["TTL", key]).parse().unwrap()
}

#[tokio::test]
async fn every_chat_key_expires_ttl_seconds_after_the_last_write() {
    let t = TestApp::with_env(&[("CHAT_TTL_SECONDS", "3600")]).await;
    let system = "chat-proxy:chat:{c1}:system";
    let turns = "chat-proxy:chat:{c1}:turns";

    t.post("/c1/system", json!({"content": "p"})).await;
    assert!((3590..=3600).contains(&ttl(&t, system)));

    t.say("c1", "hi").await;
    for key in [system, turns] {
        assert!((3590..=3600).contains(&ttl(&t, key)), "{key}");
    }

    // A turn renews the prompt's expiry too: the chat lives on as a whole.
    t.redis.query(&["EXPIRE", system, "100"]);
    t.say("c1", "again").await;
    assert!((3590..=3600).contains(&ttl(&t, system)));

    // The global prompt is not a chat's and never expires.
    t.post("/system", json!({"content": "g"})).await;
    assert_eq!(ttl(&t, "chat-proxy:global:system"), -1);
}

#[tokio::test]
async fn a_chat_is_gone_once_its_ttl_passes() {
    let t = TestApp::with_env(&[("CHAT_TTL_SECONDS", "1")]).await;
    t.post("/c1/system", json!({"content": "p"})).await;
    t.say("c1", "hi").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(t.transcript("c1").await, json!([]));
    assert_eq!(t.get("/c1/system").await.json(), json!({"content": ""}));
}

#[tokio::test]
async fn ttl_zero_keeps_chats_forever() {
    let t = TestApp::with_env(&[("CHAT_TTL_SECONDS", "0")]).await;
    t.post("/c1/system", json!({"content": "p"})).await;
    t.say("c1", "hi").await;
    assert_eq!(ttl(&t, "chat-proxy:chat:{c1}:system"), -1);
    assert_eq!(ttl(&t, "chat-proxy:chat:{c1}:turns"), -1);
}

/// What one turn on `chat` costs in Redis: round trips and commands run.
async fn cost_of_a_turn(t: &TestApp, chat: &str) -> (u64, BTreeMap<String, u64>) {
    let trips_before = t.store.round_trips();
    let commands_before = t.redis.command_counts();
    t.say(chat, "how much?").await;
    let trips = t.store.round_trips() - trips_before;
    let mut commands = t.redis.command_counts();
    for (name, count) in &commands_before {
        if let Some(after) = commands.get_mut(name) {
            *after -= count;
        }
    }
    // The INFO call that read the counters is not part of the turn.
    commands.retain(|name, count| *count > 0 && name != "info");
    (trips, commands)
}

#[tokio::test]
async fn a_turn_costs_two_round_trips_whatever_the_history_length() {
    let t = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "200")]).await;
    t.say("short", "first").await;
    for i in 0..50 {
        t.say("long", &format!("message {i}")).await;
    }
    assert_eq!(t.transcript("long").await.as_array().unwrap().len(), 100);

    let (short_trips, short_commands) = cost_of_a_turn(&t, "short").await;
    let (long_trips, long_commands) = cost_of_a_turn(&t, "long").await;

    assert_eq!(short_trips, 2, "one pipelined read, one write");
    assert_eq!(long_trips, 2);
    assert_eq!(short_commands, long_commands);
    let expected: BTreeMap<String, u64> = [
        ("get", 2),    // the two prompts
        ("lrange", 1), // the history
        ("eval", 1),   // the write, and inside it:
        ("rpush", 1),
        ("ltrim", 1),
        ("expire", 2),
    ]
    .iter()
    .map(|(name, count)| (name.to_string(), *count))
    .collect();
    assert_eq!(short_commands, expected);
}
