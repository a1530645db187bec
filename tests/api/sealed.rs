//! Sealed at rest (`SEAL_KEYS`): with sealing on, no value in Redis holds anything a chat
//! said, everything reads back through the API, and a value that does not open (moved to
//! another chat, changed, or sealed with a key the function lacks) is a 500
//! `chat_unreadable` that writes nothing.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use lambda_http::http::Method;
use serde_json::{json, Value};

use crate::chats::said;
use crate::support::{send_to, TestApp};

const KEY_1: &str = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_2: &str = "k2:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// Every value of every key, as Redis holds it.
fn raw_values(t: &TestApp) -> String {
    t.dump()
        .into_iter()
        .map(|(key, value)| format!("{key} => {value}\n"))
        .collect()
}

/// The secrets a test sends: none may be in Redis, plain or in base64. Every run of
/// base64 characters a value holds is decoded and looked through (a short secret's own
/// base64, looked for as text, turns up by chance in kilobytes of random ciphertext).
fn assert_nowhere(t: &TestApp, secrets: &[&str]) {
    let raw = raw_values(t);
    let decoded: Vec<Vec<u8>> = raw
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .filter(|run| run.len() >= 8)
        .filter_map(|run| {
            let unpadded = run.trim_end_matches('=');
            let whole = &unpadded[..unpadded.len() - unpadded.len() % 4];
            STANDARD_NO_PAD.decode(whole).ok()
        })
        .collect();
    for secret in secrets {
        assert!(!raw.contains(secret), "`{secret}` is stored plain:\n{raw}");
        let found = decoded
            .iter()
            .any(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(!found, "`{secret}` in base64");
    }
}

async fn post(t: &TestApp, path: &str, body: Value, headers: &[(&str, &str)]) -> Value {
    let reply = t
        .call_with(
            Method::POST,
            path,
            lambda_http::Body::from(body.to_string()),
            headers,
        )
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    if reply.text.starts_with('{') || reply.text.starts_with('[') {
        reply.json()
    } else {
        Value::String(reply.text)
    }
}

#[tokio::test]
async fn with_sealing_on_redis_holds_nothing_a_chat_said_and_all_of_it_reads_back() {
    let t = TestApp::with_env(&[("SEAL_KEYS", KEY_1)]).await;
    post(
        &t,
        "/system",
        json!({"content": "global prompt alpha"}),
        &[],
    )
    .await;
    post(
        &t,
        "/trip/system",
        json!({"content": "chat prompt bravo"}),
        &[],
    )
    .await;
    post(
        &t,
        "/trip/chat",
        json!({"content": "question charlie"}),
        &[("idempotency-key", "k-1")],
    )
    .await;
    let streamed = t
        .call_with(
            Method::POST,
            "/trip/chat",
            lambda_http::Body::from(
                json!({"content": "question delta", "stream": true}).to_string(),
            ),
            &[],
        )
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    t.app.settle().await;
    post(
        &t,
        "/trip/img",
        json!({"content": "question echo", "url": "https://example.com/foxtrot.png"}),
        &[],
    )
    .await;
    post(&t, "/trip/title", json!({"title": "title golf"}), &[]).await;
    post(
        &t,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "question hotel"}]}),
        &[("x-chat-id", "trip")],
    )
    .await;
    let response = post(
        &t,
        "/v1/responses",
        json!({"input": "question india", "conversation": "trip"}),
        &[],
    )
    .await;
    post(
        &t,
        "/v1/conversations",
        json!({"metadata": {"topic": "metadata juliet"}}),
        &[],
    )
    .await;
    // A stateless call's kept answer, replayed from its sealed copy.
    let stateless = json!({"messages": [{"role": "user", "content": "question kilo"}]});
    let first = post(
        &t,
        "/v1/chat/completions",
        stateless.clone(),
        &[("idempotency-key", "k-2")],
    )
    .await;

    assert_nowhere(
        &t,
        &[
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo",
        ],
    );

    // Everything reads back through the API.
    assert_eq!(
        t.get("/system").await.json(),
        json!({"content": "global prompt alpha"})
    );
    assert_eq!(
        t.get("/trip/system").await.json(),
        json!({"content": "chat prompt bravo"})
    );
    let transcript = t.transcript("trip").await;
    let said: Vec<&str> = transcript
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(said[0], "question charlie");
    assert!(said.contains(&"question delta") && said.contains(&"question india"));
    assert_eq!(transcript[4]["url"], "https://example.com/foxtrot.png");
    assert_eq!(
        t.get("/trip/title").await.json(),
        json!({"title": "title golf"})
    );
    let listed = t.get("/chats").await.json();
    let trip = listed["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "trip")
        .unwrap();
    assert_eq!(trip["title"], "title golf");
    let id = response["id"].as_str().unwrap();
    assert_eq!(t.get(&format!("/v1/responses/{id}")).await.json()["id"], id);
    // The replay is the answer as it was given.
    let again = post(
        &t,
        "/v1/chat/completions",
        stateless,
        &[("idempotency-key", "k-2")],
    )
    .await;
    assert_eq!(again, first);
    // Upstream was sent the history, opened.
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    let sent = sent.to_string();
    assert!(sent.contains("global prompt alpha") && sent.contains("question charlie"));
}

#[tokio::test]
async fn a_value_that_does_not_open_is_chat_unreadable_and_nothing_is_written() {
    let t = TestApp::with_env(&[("SEAL_KEYS", KEY_1)]).await;
    t.say("one", "first secret").await;
    t.say("two", "second secret").await;
    let key = |chat: &str| {
        t.keys()
            .into_iter()
            .find(|k| k.ends_with(&format!("{{{chat}}}:turns")))
            .unwrap()
    };
    // A turn copied from one chat's list to another's does not open there.
    let moved = t.redis.query(&["LINDEX", &key("one"), "0"]);
    t.redis.query(&["RPUSH", &key("two"), &moved]);
    let before = t.dump();
    let asked = t.openai.bodies("/v1/chat/completions").await.len();
    for reply in [
        t.get("/two/chat").await,
        t.post("/two/chat", json!({"content": "more"})).await,
    ] {
        reply.assert_error(500, "chat_unreadable");
        assert!(!reply.text.contains("secret"), "{}", reply.text);
    }
    assert_eq!(t.dump(), before, "the chat is left exactly as it was");
    assert_eq!(t.openai.bodies("/v1/chat/completions").await.len(), asked);
    // The untouched chat still reads.
    assert_eq!(t.transcript("one").await[0]["content"], "first secret");

    // A flipped byte does not open either.
    let stored = t.redis.query(&["LINDEX", &key("one"), "0"]);
    let at = stored.find("\"sealed\":\"k1:").unwrap() + 20;
    let mut flipped = stored.clone().into_bytes();
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_ne!(flipped, stored);
    t.redis.query(&["LSET", &key("one"), "0", &flipped]);
    t.get("/one/chat")
        .await
        .assert_error(500, "chat_unreadable");

    // Restarted without the key: unreadable, and nothing written.
    t.say("three", "third secret").await;
    let restarted = t.instance_sealed_with(None);
    let before = t.dump();
    let request = t.request("/three/chat", json!({"content": "again"}), &[]);
    send_to(restarted, request)
        .await
        .assert_error(500, "chat_unreadable");
    send_to(restarted, t.get_request("/three/chat"))
        .await
        .assert_error(500, "chat_unreadable");
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn rotation_reads_old_and_new_and_writes_the_new_and_plain_chats_still_read() {
    // Chats written before sealing, then with the old key.
    let t = TestApp::start().await;
    t.say("plain", "written plain").await;
    let old_app = t.instance_sealed_with(Some(KEY_1));
    let said = t.request(
        "/sealed-old/chat",
        json!({"content": "under the old key"}),
        &[],
    );
    assert_eq!(send_to(old_app, said).await.status, 200);
    // Both keys, the new one first.
    let new_app = t.instance_sealed_with(Some(&format!("{KEY_2},{KEY_1}")));
    for (chat, first) in [
        ("plain", "written plain"),
        ("sealed-old", "under the old key"),
    ] {
        let reply = send_to(new_app, t.get_request(&format!("/{chat}/chat"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()[0]["content"], first);
        let more = t.request(
            &format!("/{chat}/chat"),
            json!({"content": "with the new key"}),
            &[],
        );
        assert_eq!(send_to(new_app, more).await.status, 200);
    }
    // What was written last is sealed with the new key; what was there stays as it was.
    let turns = |chat: &str| {
        let key = t
            .keys()
            .into_iter()
            .find(|k| k.ends_with(&format!("{{{chat}}}:turns")))
            .unwrap();
        t.redis.query(&["LRANGE", &key, "0", "-1"])
    };
    let plain = turns("plain");
    assert!(
        plain.contains("written plain"),
        "a plain turn stays plain until rewritten"
    );
    assert!(plain.contains("\"sealed\":\"k2:") && !plain.contains("with the new key"));
    let old_chat = turns("sealed-old");
    assert!(old_chat.contains("\"sealed\":\"k1:") && old_chat.contains("\"sealed\":\"k2:"));
}

#[tokio::test]
async fn regenerate_edit_fork_import_branches_and_items_work_sealed() {
    let t = TestApp::with_env(&[("SEAL_KEYS", KEY_1)]).await;
    t.say("redo", "question lima").await;
    t.say("redo", "question mike").await;
    post(&t, "/redo/regenerate", json!({}), &[]).await;
    post(
        &t,
        "/redo/edit",
        json!({"index": 0, "content": "question november"}),
        &[],
    )
    .await;
    assert_eq!(
        said(&t, "redo").await,
        ["question november", "reply to: question november"]
    );
    t.say("redo", "question oscar").await;
    post(&t, "/redo/fork", json!({"into": "forked", "index": 1}), &[]).await;
    assert_eq!(
        said(&t, "forked").await,
        ["question november", "reply to: question november"]
    );
    let exported = t.get("/redo/export").await.json();
    post(
        &t,
        "/chats/import",
        json!({"into": "imported", "turns": exported["turns"]}),
        &[],
    )
    .await;
    assert_eq!(said(&t, "imported").await, said(&t, "redo").await);
    // A branch copies the history into a new chain, sealed under its own key.
    let first = post(&t, "/v1/responses", json!({"input": "question papa"}), &[]).await;
    let id = first["id"].as_str().unwrap();
    post(
        &t,
        "/v1/responses",
        json!({"input": "question quebec", "previous_response_id": id}),
        &[],
    )
    .await;
    let branch = post(
        &t,
        "/v1/responses",
        json!({"input": "question romeo", "previous_response_id": id}),
        &[],
    )
    .await;
    let next = json!({"input": "question sierra", "previous_response_id": branch["id"]});
    post(&t, "/v1/responses", next, &[]).await;
    let sent = t
        .openai
        .bodies("/v1/responses")
        .await
        .pop()
        .unwrap()
        .to_string();
    assert!(sent.contains("question papa") && sent.contains("question romeo"));
    // A conversation's items: added, listed, one deleted.
    let items = post(
        &t,
        "/v1/conversations/redo/items",
        json!({"items": [
        {"type": "message", "role": "user", "content": "question tango"}]}),
        &[],
    )
    .await;
    let item = items["data"][0]["id"].as_str().unwrap().to_owned();
    let reply = t
        .call_with(
            Method::DELETE,
            &format!("/v1/conversations/redo/items/{item}"),
            lambda_http::Body::Empty,
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_nowhere(
        &t,
        &[
            "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
        ],
    );
}

#[tokio::test]
async fn reseal_seals_everything_under_the_first_key_while_turns_run_and_loses_nothing() {
    // Stored plain, before sealing: a chat with a prompt, a title and a kept answer.
    let t = TestApp::start().await;
    t.say("old-plain", "plain uniform").await;
    post(
        &t,
        "/old-plain/system",
        json!({"content": "plain victor"}),
        &[],
    )
    .await;
    post(
        &t,
        "/old-plain/title",
        json!({"title": "plain whiskey"}),
        &[],
    )
    .await;
    post(
        &t,
        "/old-plain/chat",
        json!({"content": "plain xray"}),
        &[("idempotency-key", "r-1")],
    )
    .await;
    // Then sealed with the old key.
    let old = t.instance_sealed_with(Some(KEY_1));
    for chat in ["old-sealed", "busy"] {
        let said = t.request(
            &format!("/{chat}/chat"),
            json!({"content": "sealed yankee"}),
            &[],
        );
        assert_eq!(send_to(old, said).await.status, 200);
    }
    // And a read-only link to one, its snapshot sealed with the old key too.
    let link = send_to(old, t.request("/old-sealed/share", json!({}), &[])).await;
    assert_eq!(link.status, 200, "{}", link.text);
    let shared_path = link.json()["path"].as_str().unwrap().to_owned();
    // The new key first; the reseal runs while turns are written to a chat.
    let store = t.store_sealed_with(&format!("{KEY_2},{KEY_1}")).await;
    let new = t.instance_sealed_with(Some(&format!("{KEY_2},{KEY_1}")));
    let turns = async {
        for i in 0..20 {
            let said = t.request(
                "/busy/chat",
                json!({"content": format!("busy zulu {i}")}),
                &[],
            );
            assert_eq!(send_to(new, said).await.status, 200);
        }
    };
    let (resealed, ()) = tokio::join!(store.reseal(), turns);
    let resealed = resealed.unwrap();
    assert!(resealed.rewritten >= 8, "{resealed:?}");
    assert_eq!(resealed.unreadable, 0);
    // Sent again, it rewrites nothing more.
    let again = store.reseal().await.unwrap();
    assert_eq!(again.rewritten, 0, "{again:?}");
    // Nothing plain, nothing under the old key; and the old key can go.
    let raw = raw_values(&t);
    assert!(
        !raw.contains("k1:"),
        "a value still sealed with the old key:\n{raw}"
    );
    assert_nowhere(
        &t,
        &["uniform", "victor", "whiskey", "xray", "yankee", "zulu"],
    );
    let only_new = t.instance_sealed_with(Some(KEY_2));
    let busy = send_to(only_new, t.get_request("/busy/chat")).await.json();
    let said: Vec<&str> = busy
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let mut expected = vec!["sealed yankee".to_owned()];
    expected.extend((0..20).map(|i| format!("busy zulu {i}")));
    assert_eq!(said, expected, "every turn, once, in order");
    let shared = send_to(only_new, t.get_request(&shared_path)).await;
    assert_eq!(shared.json()["messages"][0]["content"], "sealed yankee");
    let plain = send_to(only_new, t.get_request("/old-plain/chat"))
        .await
        .json();
    assert_eq!(plain[0]["content"], "plain uniform");
    assert_eq!(
        send_to(only_new, t.get_request("/old-plain/system"))
            .await
            .json()["content"],
        "plain victor"
    );
    assert_eq!(
        send_to(only_new, t.get_request("/old-plain/title"))
            .await
            .json()["title"],
        "plain whiskey"
    );
    let replay = t.request(
        "/old-plain/chat",
        json!({"content": "plain xray"}),
        &[("idempotency-key", "r-1")],
    );
    let replayed = send_to(only_new, replay).await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    assert_eq!(replayed.json()["content"], "reply to: plain xray");
    // The chat's size still matches its turns (the caps count it).
    let meta = t
        .redis
        .query(&["HGET", "chat-proxy:chat:{busy}:meta", "bytes"]);
    let stored: usize = t
        .redis
        .query(&["LRANGE", "chat-proxy:chat:{busy}:turns", "0", "-1"])
        .lines()
        .map(str::len)
        .sum();
    assert_eq!(meta.parse::<usize>().unwrap(), stored);
}

#[tokio::test]
async fn sealing_and_the_reseal_work_on_a_redis_cluster() {
    let t = TestApp::over_cluster(&[("SEAL_KEYS", KEY_1)]).await;
    for chat in ["north", "south", "east"] {
        t.say(chat, &format!("cluster {chat} secret")).await;
    }
    post(
        &t,
        "/north/system",
        json!({"content": "cluster prompt"}),
        &[],
    )
    .await;
    assert_eq!(
        t.transcript("south").await[0]["content"],
        "cluster south secret"
    );
    // Every node is scanned: each chat's values (on whichever node) are sealed again.
    let store = t.store_sealed_with(&format!("{KEY_2},{KEY_1}")).await;
    let resealed = store.reseal().await.unwrap();
    // Three chats' turns and titles, and one prompt.
    assert_eq!(resealed.rewritten, 7, "{resealed:?}");
    assert_eq!(store.reseal().await.unwrap().rewritten, 0);
    let app = t.instance_sealed_with(Some(KEY_2));
    let reply = send_to(app, t.get_request("/east/chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()[0]["content"], "cluster east secret");
}

#[tokio::test]
async fn a_kept_request_cannot_be_confirmed_from_a_sealed_redis() {
    let t = TestApp::with_env(&[("SEAL_KEYS", KEY_1)]).await;
    let body = json!({"content": "is it the password hunter2?"});
    // What a reader of Redis would compute from a guess of the request.
    let guess = chat_proxy::idempotency::fingerprint(&[
        b"seed",
        b"chat",
        b"json",
        body.to_string().as_bytes(),
    ]);
    t.openai
        .hold_next_chat(std::time::Duration::from_millis(500))
        .await;
    let keyed = t.call_with(
        Method::POST,
        "/c1/chat",
        lambda_http::Body::from(body.to_string()),
        &[("idempotency-key", "k-1")],
    );
    let held = async {
        t.openai.wait_for_chat_requests(1).await;
        raw_values(&t)
    };
    let (reply, while_held) = tokio::join!(keyed, held);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        while_held.contains("pending"),
        "the claim was read while held"
    );
    assert!(
        !while_held.contains(&guess),
        "the claim holds the request's hash"
    );
    assert!(
        !raw_values(&t).contains(&guess),
        "the answer holds the request's hash"
    );
    // The retry is still recognised as the same request, and another body is not.
    let again = t
        .call_with(
            Method::POST,
            "/c1/chat",
            lambda_http::Body::from(body.to_string()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    t.call_with(
        Method::POST,
        "/c1/chat",
        lambda_http::Body::from(json!({"content": "another"}).to_string()),
        &[("idempotency-key", "k-1")],
    )
    .await
    .assert_error(422, "idempotency_key_reused");
}

#[tokio::test]
async fn sealed_turns_moved_within_their_chat_are_unreadable() {
    let t = TestApp::with_env(&[("SEAL_KEYS", KEY_1)]).await;
    for n in 1..=3 {
        t.say("c1", &format!("question {n}")).await;
    }
    let key = "chat-proxy:chat:{c1}:turns";
    let stored: Vec<String> = t
        .redis
        .query(&["LRANGE", key, "0", "-1"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(stored.len(), 3);
    // A writer of Redis swaps the last two turns: each opens, but not in that order.
    t.redis.query(&["LSET", key, "1", &stored[2]]);
    t.redis.query(&["LSET", key, "2", &stored[1]]);
    t.get("/c1/chat").await.assert_error(500, "chat_unreadable");
    // Or takes one from the middle.
    t.redis.query(&["DEL", key]);
    t.redis.query(&["RPUSH", key, &stored[0], &stored[2]]);
    t.get("/c1/chat").await.assert_error(500, "chat_unreadable");
    // The oldest dropped (as the caps drop it) is how a chat is kept: it reads.
    t.redis.query(&["DEL", key]);
    t.redis.query(&["RPUSH", key, &stored[1], &stored[2]]);
    assert_eq!(said(&t, "c1").await.len(), 4);
}

#[tokio::test]
async fn sealed_turns_stay_in_order_through_races_and_removals() {
    let t = TestApp::with_env(&[("SEAL_KEYS", KEY_1)]).await;
    t.say("c1", "one").await;
    // A turn held upstream while another is stored: sealed to follow "one", it is sealed
    // again to follow the turn now newest.
    t.openai
        .hold_next_chat(std::time::Duration::from_millis(500))
        .await;
    let held = t.post("/c1/chat", json!({"content": "two"}));
    let meanwhile = async {
        t.openai.wait_for_chat_requests(2).await;
        t.say("c1", "three").await;
    };
    let (held, ()) = tokio::join!(held, meanwhile);
    assert_eq!(held.status, 200, "{}", held.text);
    assert_eq!(held.header("x-chat-stored"), None, "stored after the other");
    assert_eq!(
        said(&t, "c1").await,
        [
            "one",
            "reply to: one",
            "three",
            "reply to: three",
            "two",
            "reply to: two"
        ]
    );
    // A response removed from the middle of a conversation: the next turn follows the one
    // before it, and the conversation still reads.
    t.say("c2", "start").await;
    let responses: Vec<String> = {
        let mut ids = Vec::new();
        for n in 1..=3 {
            let reply = post(
                &t,
                "/v1/responses",
                json!({"input": format!("r{n}"), "conversation": "c2"}),
                &[],
            )
            .await;
            ids.push(reply["id"].as_str().unwrap().to_owned());
        }
        ids
    };
    let deleted = t
        .call(
            Method::DELETE,
            &format!("/v1/responses/{}", responses[1]),
            lambda_http::Body::Empty,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(
        said(&t, "c2").await,
        [
            "start",
            "reply to: start",
            "r1",
            "reply to: r1",
            "r3",
            "reply to: r3"
        ]
    );
}
