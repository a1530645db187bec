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
async fn the_history_cap_counts_messages_not_turns() {
    let t = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "4")]).await;
    let v1 = |messages: Value| {
        t.call_with(
            lambda_http::http::Method::POST,
            "/v1/chat/completions",
            lambda_http::Body::from(json!({ "messages": messages }).to_string()),
            &[("x-chat-id", "c1")],
        )
    };
    // One turn of three questions and its answer: four messages, the cap.
    let three = json!([
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
        {"role": "user", "content": "three"}
    ]);
    assert_eq!(v1(three).await.status, 200);
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 4);
    // One more question: its turn fits only without the first.
    let reply = v1(json!([{"role": "user", "content": "four"}])).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let kept: Vec<Value> = t
        .transcript("c1")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(kept, vec![json!("four"), json!("reply to: four")]);
    // The next turn sends what is kept: two messages of history, then its own.
    t.say("c1", "five").await;
    let sent = &t.openai.chat_bodies().await[2]["messages"];
    let contents: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "You are a helpful assistant.",
            "four",
            "reply to: four",
            "five"
        ]
    );
    // A turn that alone holds more than the cap is kept whole.
    let five = json!([
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "user", "content": "d"},
        {"role": "user", "content": "e"}
    ]);
    assert_eq!(v1(five).await.status, 200);
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn keys_use_the_prefix_and_the_chat_id_as_hash_tag() {
    let t = TestApp::with_env(&[("REDIS_KEY_PREFIX", "myapp")]).await;
    t.post("/system", json!({"content": "g"})).await;
    t.post("/c-1/system", json!({"content": "p"})).await;
    t.say("c-1", "hi").await;
    let stored = t
        .redis
        .query(&["LRANGE", "myapp:chat:{c-1}:turns", "0", "-1"]);
    let turn: Value = serde_json::from_str(&stored).unwrap();
    let id = turn["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{turn}");
    let day = chat_proxy::clock::UtcDay::today();
    assert_eq!(
        t.keys(),
        vec![
            "myapp:chat:{c-1}:meta".to_owned(),
            "myapp:chat:{c-1}:system".to_owned(),
            format!("myapp:chat:{{c-1}}:turn:{id}"),
            "myapp:chat:{c-1}:turns".to_owned(),
            "myapp:global:system".to_owned(),
            // The caller's list of chats, in its counters' slot.
            "myapp:usage:{open}:chats".to_owned(),
            // The caller's counters, with the hash tag {open} (an open API with a daily token
            // limit counts by address too: usage::an_open_api_limits_tokens_per_source_address).
            format!("myapp:usage:{{open}}:day:{}", day.date),
            // The same chats by when they were made.
            "myapp:usage:{open}:made".to_owned(),
            format!("myapp:usage:{{open}}:month:{}", day.month),
            format!("myapp:usage:{{open}}:spent:{id}"),
        ]
    );
    // That a chat's keys share one slot is checked on a real cluster
    // (redis_deployments::chats_spread_over_cluster_nodes_each_in_one_slot).
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
    for key in [system, turns, "chat-proxy:chat:{c1}:meta"] {
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

/// The commands one turn on `chat` runs in Redis (`INFO commandstats`, scripts' inner
/// commands included).
async fn commands_of_a_turn(t: &TestApp, chat: &str) -> BTreeMap<String, u64> {
    let before = t.redis.command_counts();
    t.say(chat, "how much?").await;
    let mut commands = t.redis.command_counts();
    for (name, count) in &before {
        if let Some(after) = commands.get_mut(name) {
            *after -= count;
        }
    }
    // The INFO call that read the counters is not part of the turn.
    commands.retain(|name, count| *count > 0 && name != "info");
    commands
}

#[tokio::test]
async fn a_turn_runs_the_same_commands_whatever_the_history_length() {
    let t = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "200")]).await;
    t.say("short", "first").await;
    for i in 0..50 {
        t.say("long", &format!("message {i}")).await;
    }
    assert_eq!(t.transcript("long").await.as_array().unwrap().len(), 100);

    let short = commands_of_a_turn(&t, "short").await;
    let long = commands_of_a_turn(&t, "long").await;
    assert_eq!(short, long);
    let expected: BTreeMap<String, u64> = [
        // The read: the global prompt; the chat's version, floor and window (by name: `v`,
        // `floor`, `window`, `created_at`); its prompt with a deleted chat's floor; then its
        // history: native commands.
        ("get", 1),
        ("hmget", 2), // the version and the window; in the write, the chat's size
        ("mget", 1),
        ("lrange", 1), // the history
        // The write: one script for the turn and the caller's counters; inside it:
        ("evalsha", 1),
        ("exists", 2), // the turn's marker and the count's, checked first
        ("set", 2),    // and set last
        ("rpush", 1),
        // The chat's size written back, with its version and the time (and, once, its birth
        // and its title from its first question, read with its size).
        ("hset", 1),
        // The chat's usage (its turns, prompt and completion tokens), then the day's and
        // the month's counts for the model (prompt and completion tokens; no cached tokens
        // here).
        ("hincrby", 7),
        ("zadd", 1), // the chat at the top of its caller's list (its birth was its first)
        // The chat's turns and meta (it has no prompt of its own: none to renew), the day,
        // the month, the list.
        ("expire", 5),
    ]
    .iter()
    .map(|(name, count)| (name.to_string(), *count))
    .collect();
    assert_eq!(short, expected);
}

/// Round trips a request waits for, counted on the wire: the relay holds every chunk for
/// `HOP` each way and counts the bursts of requests Redis saw while the request ran.
pub(crate) async fn round_trips(
    t: &TestApp,
    request: impl std::future::Future<Output = crate::support::Reply>,
) -> u32 {
    round_trips_with(t, request).await.0
}

/// [`round_trips`], with the request's reply.
pub(crate) async fn round_trips_with(
    t: &TestApp,
    request: impl std::future::Future<Output = crate::support::Reply>,
) -> (u32, crate::support::Reply) {
    const HOP: std::time::Duration = std::time::Duration::from_millis(60);
    t.relay().settle(HOP).await;
    t.relay().set_delay(HOP);
    let started = tokio::time::Instant::now();
    let reply = request.await;
    let elapsed = started.elapsed();
    let trips = t.relay().bursts_since(started);
    t.relay().set_delay(std::time::Duration::ZERO);
    assert!(reply.status < 300, "{}", reply.text);
    // The setup did what it should: the relay was in the path and held what it relayed.
    assert!(
        elapsed >= 2 * HOP * trips,
        "{trips} round trips in {elapsed:?}: the relay did not hold them"
    );
    (trips, reply)
}

pub(crate) fn assert_trips(measured: u32, expected: u32, what: &str) {
    assert_eq!(
        measured, expected,
        "{what}: {measured} round trips, expected {expected}"
    );
}

#[tokio::test]
async fn a_turn_waits_for_two_round_trips_on_the_wire_whatever_the_history_length() {
    let t = TestApp::over_relay(&[("MAX_HISTORY_MESSAGES", "200")]).await;
    for i in 0..50 {
        t.say("long", &format!("message {i}")).await;
    }
    // The setup did what it should: the relay is in the path, and a plain read costs one.
    assert_trips(
        round_trips(&t, t.get("/long/system")).await,
        1,
        "GET /<id>/system",
    );
    let new_chat = t.post("/short/chat", json!({"content": "hi"}));
    assert_trips(round_trips(&t, new_chat).await, 2, "a turn on a new chat");
    let long_chat = t.post("/long/chat", json!({"content": "hi"}));
    assert_trips(
        round_trips(&t, long_chat).await,
        2,
        "a turn on a 100-message chat",
    );
    // The same chat through OpenAI's API, buffered and streamed: the same two.
    t.openai.script(crate::support::streaming::StreamScript {
        pause: std::time::Duration::ZERO,
        ..Default::default()
    });
    let v1 = |stream: bool| {
        t.request(
            "/v1/chat/completions",
            json!({"stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
            &[("x-chat-id", "long")],
        )
    };
    for (stream, what) in [(false, "a /v1 turn"), (true, "a streamed /v1 turn")] {
        let turn = async {
            let reply = t.send(v1(stream)).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply
        };
        assert_trips(round_trips(&t, turn).await, 2, what);
    }
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        54,
        "every turn reached upstream"
    );
}

#[tokio::test]
async fn the_rate_limit_is_checked_within_the_turns_read_round_trip() {
    let t = TestApp::over_relay(&[("RATE_LIMIT_PER_MINUTE", "100")]).await;
    t.say("c1", "warm").await;
    let turn = t.post("/c1/chat", json!({"content": "counted"}));
    assert_trips(round_trips(&t, turn).await, 2, "a rate-limited turn");
    // And it was counted: the window holds both requests.
    assert_eq!(
        t.redis.query(&["HLEN", "chat-proxy:requests:ip:unknown"]),
        "2"
    );
}

#[tokio::test]
async fn the_transcript_gives_each_reply_its_tokens_when_asked() {
    let t = TestApp::start().await;
    let first = t.say("tok", "hello there").await;
    let second = t.say("tok", "and once more").await;
    // As the older proxy answered it, unless asked.
    let plain = t.transcript("tok").await;
    assert!(plain
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m.get("tokens").is_none()));
    let read = t.get("/tok/chat?tokens=true").await;
    assert_eq!(read.status, 200, "{}", read.text);
    let messages = read.json();
    let tokens = |answer: &Value| {
        let t = &answer["tokens"];
        json!({"prompt_tokens": t["prompt_tokens"], "completion_tokens": t["completion_tokens"],
            "cached_tokens": t["cached_tokens"], "total_tokens": t["total_tokens"]})
    };
    assert!(first["tokens"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(messages[1]["tokens"], tokens(&first));
    assert_eq!(messages[3]["tokens"], tokens(&second));
    assert_eq!(messages[0].get("tokens"), None, "a question has none");
    t.get("/tok/chat?tokens=maybe")
        .await
        .assert_error(400, "invalid_value");
}

#[tokio::test]
async fn a_seed_turn_asks_the_model_it_names_when_it_is_allowed_and_nothing_else() {
    let t = TestApp::with_env(&[("ALLOWED_MODELS", "gpt-4o-mini,gpt-4.1,gpt-4o")]).await;
    let sent_model = |bodies: Vec<Value>| bodies.last().unwrap()["model"].clone();
    // Each kind of seed turn asks the model it names.
    for (path, body) in [
        ("/m/chat", json!({"content": "hello", "model": "gpt-4.1"})),
        (
            "/m/img",
            json!({"content": "what is it?", "url": "https://example.com/a.png",
            "model": "gpt-4o"}),
        ),
        ("/m/regenerate", json!({"model": "gpt-4.1"})),
        (
            "/m/edit",
            json!({"index": 0, "content": "hello again", "model": "gpt-4o"}),
        ),
    ] {
        let reply = t.post(path, body.clone()).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(
            sent_model(t.openai.chat_bodies().await),
            body["model"],
            "{path}"
        );
    }
    // Streamed too.
    let streamed = t
        .post(
            "/m/chat",
            json!({"content": "more", "model": "gpt-4.1", "stream": true}),
        )
        .await;
    assert_eq!(streamed.status, 200);
    assert_eq!(sent_model(t.openai.chat_bodies().await), "gpt-4.1");
    // Without one, the configured model.
    t.say("m", "plain").await;
    let configured = sent_model(t.openai.chat_bodies().await);
    assert_eq!(configured, "gpt-4o-mini");
    // One ALLOWED_MODELS does not list, or not a string: refused before anything is sent
    // or stored.
    let asked = t.openai.chat_bodies().await.len();
    t.live_turns_ended().await;
    let before = t.dump();
    for (body, code) in [
        (
            json!({"content": "x", "model": "o9-secret"}),
            "model_not_allowed",
        ),
        (json!({"content": "x", "model": 4}), "invalid_model"),
    ] {
        t.post("/m/chat", body).await.assert_error(400, code);
    }
    t.post("/m/regenerate", json!({"model": "o9-secret"}))
        .await
        .assert_error(400, "model_not_allowed");
    assert_eq!(t.openai.chat_bodies().await.len(), asked);
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn each_turn_renews_the_expiry_of_the_chats_own_prompt_with_its_turns() {
    let t = TestApp::with_env(&[("CHAT_TTL_SECONDS", "1000")]).await;
    let ttl = |key: &str| -> i64 { t.redis.query(&["TTL", key]).trim().parse().unwrap() };
    let set = t
        .post("/kept/system", json!({"content": "Be brief."}))
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    t.say("kept", "first").await;
    let system = t
        .keys()
        .into_iter()
        .find(|key| key.ends_with("{kept}:system"))
        .expect("the chat's prompt is kept");
    let turns = system.replace(":system", ":turns");
    // Made older by hand: the next turn gives it the chat's whole life again.
    t.redis.query(&["EXPIRE", &system, "50"]);
    t.redis.query(&["EXPIRE", &turns, "50"]);
    assert!(ttl(&system) <= 50);
    t.say("kept", "second").await;
    assert!(ttl(&system) > 900, "{}", ttl(&system));
    assert!(ttl(&turns) > 900, "{}", ttl(&turns));
    // A chat with no prompt of its own gets none from its turns.
    t.say("bare", "hello").await;
    assert!(!t.keys().iter().any(|key| key.ends_with("{bare}:system")));
}
