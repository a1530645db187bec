//! Temporary chats (`POST /chats/temporary`): kept only `TEMPORARY_CHAT_SECONDS` after
//! their last write, every key of them; never listed (`GET /chats`, `GET
//! /v1/conversations`) nor found by a search, whichever write touched them last and
//! whichever instance made it; not shared; said so by `GET /<chat_id>/chat`.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::{send_to, Reply, TestApp};

const ALICE: (&str, &str) = ("authorization", "Bearer sk-alice-1");

async fn call(t: &TestApp, method: Method, path: &str, body: Option<Value>) -> Reply {
    let body = body.map_or(Body::Empty, |b| Body::from(b.to_string()));
    t.call_with(method, path, body, &[ALICE]).await
}

async fn temporary(t: &TestApp, body: Option<Value>) -> String {
    let made = call(t, Method::POST, "/chats/temporary", body).await;
    assert_eq!(made.status, 200, "{}", made.text);
    let made = made.json();
    assert_eq!(made["temporary"], true);
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("temp-") && id.len() == 29, "{id}");
    id
}

async fn say(t: &TestApp, chat: &str, content: &str) -> Reply {
    let reply = call(
        t,
        Method::POST,
        &format!("/{chat}/chat"),
        Some(json!({ "content": content })),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
}

/// A turn sent with an `Idempotency-Key` (its answer is kept), answered.
async fn keyed_turn(t: &TestApp, chat: &str, content: &str, key: &str) {
    let reply = t
        .call_with(
            Method::POST,
            &format!("/{chat}/chat"),
            Body::from(json!({ "content": content }).to_string()),
            &[ALICE, ("idempotency-key", key)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// A streamed turn (its live record), read to its end and its record ended.
async fn streamed_turn(t: &TestApp, chat: &str, content: &str) {
    let reply = call(
        t,
        Method::POST,
        &format!("/{chat}/chat"),
        Some(json!({ "content": content, "stream": true })),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("event: done"), "{}", reply.text);
    t.live_turns_ended().await;
}

fn listed_ids(page: &Value, field: &str) -> Vec<String> {
    page[field]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {page}"))
        .iter()
        .map(|chat| chat["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every key whose name holds `chat`, with its TTL in seconds (-1: none).
fn keys_of(t: &TestApp, chat: &str) -> Vec<(String, i64)> {
    t.keys()
        .into_iter()
        .filter(|key| key.contains(chat))
        .map(|key| {
            let ttl = t.redis.query(&["TTL", &key]).trim().parse().unwrap();
            (key, ttl)
        })
        .collect()
}

/// The members of the caller's two indexes (by last write, by birth).
fn indexed(t: &TestApp) -> String {
    t.keys()
        .into_iter()
        .filter(|key| key.ends_with(":chats") || key.ends_with(":made"))
        .map(|key| t.redis.query(&["ZRANGE", &key, "0", "-1"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_temporary_chat_is_a_chat_that_is_never_listed_searched_or_shared() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1")]).await;
    let other = t.another_instance();
    let chat = temporary(&t, Some(json!({"system": "Answer in French."}))).await;
    // Its turns go to its id like any chat's, from any instance.
    let request = lambda_http::http::Request::builder()
        .method(Method::POST)
        .uri(format!("/{chat}/chat"))
        .header("content-type", "application/json")
        .header(ALICE.0, ALICE.1)
        .body(Body::from(
            json!({"content": "where is zanzibar"}).to_string(),
        ))
        .unwrap();
    let first = send_to(other, request).await;
    assert_eq!(first.status, 200, "{}", first.text);
    say(&t, &chat, "and its capital zanzibar city").await;
    // Upstream was sent its prompt and its history, as any chat's.
    let sent = t.openai.chat_bodies().await;
    assert_eq!(sent.len(), 2, "both turns reached upstream");
    let messages = sent[1]["messages"].as_array().unwrap();
    let texts: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        &texts[1..],
        [
            ("system", "Answer in French."),
            ("user", "where is zanzibar"),
            ("assistant", "reply to: where is zanzibar"),
            ("user", "and its capital zanzibar city"),
        ],
        "the global prompt, its own, its history, the question"
    );

    // A kept chat that says the same, to show the list and the search do find it.
    say(&t, "kept", "zanzibar again").await;
    let transcript = call(&t, Method::GET, &format!("/{chat}/chat"), None).await;
    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.json().as_array().unwrap().len(), 4);
    assert_eq!(transcript.header("x-chat-temporary"), Some("3600"));
    let kept = call(&t, Method::GET, "/kept/chat", None).await;
    assert_eq!(kept.header("x-chat-temporary"), None);

    // Renamed, its prompt set, its turn regenerated, cleared and written again: each write
    // of every kind leaves it off both lists.
    let renamed = call(
        &t,
        Method::POST,
        &format!("/{chat}/title"),
        Some(json!({"title": "zanzibar trip"})),
    )
    .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    let prompt = call(
        &t,
        Method::POST,
        &format!("/{chat}/system"),
        Some(json!({"content": "Answer in Swahili."})),
    )
    .await;
    assert_eq!(prompt.status, 200, "{}", prompt.text);
    let redo = call(
        &t,
        Method::POST,
        &format!("/{chat}/regenerate"),
        Some(json!({})),
    )
    .await;
    assert_eq!(redo.status, 200, "{}", redo.text);
    let page = call(&t, Method::GET, "/chats", None).await.json();
    assert_eq!(listed_ids(&page, "chats"), vec!["kept"]);
    let found = call(&t, Method::GET, "/chats?q=zanzibar", None)
        .await
        .json();
    assert_eq!(listed_ids(&found, "chats"), vec!["kept"], "{found}");
    let conversations = call(&t, Method::GET, "/v1/conversations", None).await;
    assert_eq!(conversations.status, 200, "{}", conversations.text);
    assert!(
        !conversations.text.contains(&chat),
        "{}",
        conversations.text
    );
    // Not even in the index a list reads from.
    assert!(!indexed(&t).contains(&chat), "{}", indexed(&t));
    let cleared = call(&t, Method::POST, &format!("/{chat}/clear"), None).await;
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    say(&t, &chat, "zanzibar once more").await;
    assert!(!indexed(&t).contains(&chat), "{}", indexed(&t));
    let found = call(&t, Method::GET, "/chats?q=zanzibar", None)
        .await
        .json();
    assert_eq!(listed_ids(&found, "chats"), vec!["kept"], "{found}");

    // A link would keep it past its expiry: refused, nothing made.
    let before = t.dump();
    let shared = call(&t, Method::POST, &format!("/{chat}/share"), Some(json!({}))).await;
    shared.assert_error(409, "temporary_chat");
    assert_eq!(t.dump(), before);

    // A fork of it is temporary too; an export still gives it to its owner.
    let fork = call(&t, Method::POST, &format!("/{chat}/fork"), None).await;
    assert_eq!(fork.status, 200, "{}", fork.text);
    let fork = fork.json()["id"].as_str().unwrap().to_owned();
    assert!(fork.starts_with("temp-"), "{fork}");
    let forked = call(&t, Method::GET, &format!("/{fork}/chat"), None).await;
    assert_eq!(forked.header("x-chat-temporary"), Some("3600"));
    assert_eq!(forked.json().as_array().unwrap().len(), 2);
    let page = call(&t, Method::GET, "/chats", None).await.json();
    assert_eq!(listed_ids(&page, "chats"), vec!["kept"]);
    let export = call(&t, Method::GET, &format!("/{chat}/export"), None).await;
    assert_eq!(export.status, 200, "{}", export.text);

    // Deleted like any chat.
    let deleted = call(&t, Method::DELETE, &format!("/{chat}"), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let gone = call(&t, Method::GET, &format!("/{chat}/chat"), None).await;
    assert_eq!(gone.json(), json!([]));
    assert_eq!(gone.header("x-chat-temporary"), None);
}

#[tokio::test]
async fn every_key_of_a_temporary_chat_expires_within_its_time_even_where_chats_are_kept_forever() {
    let t = TestApp::with_env(&[
        ("PROXY_API_KEYS", "alice:sk-alice-1"),
        ("CHAT_TTL_SECONDS", "0"),
        ("TEMPORARY_CHAT_SECONDS", "300"),
    ])
    .await;
    let chat = temporary(&t, None).await;
    // A turn with an Idempotency-Key (its answer is kept), a streamed one (its live
    // record), a title and a prompt.
    keyed_turn(&t, &chat, "hello", "first-turn").await;
    streamed_turn(&t, &chat, "stream this").await;
    call(
        &t,
        Method::POST,
        &format!("/{chat}/title"),
        Some(json!({"title": "short-lived"})),
    )
    .await;
    call(
        &t,
        Method::POST,
        &format!("/{chat}/system"),
        Some(json!({"content": "Be brief."})),
    )
    .await;
    // A turn through the Responses API: its output items are recorded by id, in the
    // caller's slot (for an `item_reference` to them).
    let responded = call(
        &t,
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": "and via responses", "conversation": chat})),
    )
    .await;
    assert_eq!(responded.status, 200, "{}", responded.text);
    // Continuing that response by its id makes a branch: a new chain holding the chat's
    // history, as temporary as the chat.
    let first = responded.json()["id"].as_str().unwrap().to_owned();
    call(
        &t,
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": "one more", "conversation": chat})),
    )
    .await;
    let branched = call(
        &t,
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": "a branch", "previous_response_id": first})),
    )
    .await;
    assert_eq!(branched.status, 200, "{}", branched.text);
    let chains: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|key| key.contains(":chat:{~"))
        .collect();
    assert!(
        chains.iter().any(|key| key.ends_with(":turns")),
        "the branch was made: {chains:?}"
    );
    for key in &chains {
        let ttl: i64 = t.redis.query(&["TTL", key]).trim().parse().unwrap();
        assert!((1..=300).contains(&ttl), "{key} lives {ttl} s");
    }
    say(&t, "kept", "hello").await;

    let items: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|key| key.contains(":item:"))
        .collect();
    assert!(!items.is_empty(), "the response's items were recorded");
    for key in &items {
        let ttl: i64 = t.redis.query(&["TTL", key]).trim().parse().unwrap();
        assert!((1..=300).contains(&ttl), "{key} lives {ttl} s");
    }
    let keys = keys_of(&t, &chat);
    for kind in [
        ":turns", ":meta", ":system", ":idem:", ":idems", ":run:", ":turn:",
    ] {
        assert!(
            keys.iter().any(|(key, _)| key.contains(kind)),
            "a {kind} key was written: {keys:?}"
        );
    }
    for (key, ttl) in &keys {
        assert!((1..=300).contains(ttl), "{key} lives {ttl} s");
    }
    // The setup: a kept chat's keys do not expire at all here.
    let kept = keys_of(&t, "{kept}");
    assert!(
        kept.iter()
            .any(|(key, ttl)| key.ends_with(":turns") && *ttl == -1),
        "{kept:?}"
    );
}

#[tokio::test]
async fn a_temporary_chat_is_gone_after_its_time_and_nothing_of_it_is_left() {
    let t = TestApp::with_env(&[
        ("PROXY_API_KEYS", "alice:sk-alice-1"),
        ("TEMPORARY_CHAT_SECONDS", "2"),
    ])
    .await;
    let made = call(&t, Method::POST, "/chats/temporary", None)
        .await
        .json();
    assert_eq!(made["expires_after_seconds"], 2);
    let chat = made["id"].as_str().unwrap().to_owned();
    keyed_turn(&t, &chat, "remember walruses", "walrus").await;
    streamed_turn(&t, &chat, "and seals").await;
    let transcript = call(&t, Method::GET, &format!("/{chat}/chat"), None).await;
    assert_eq!(transcript.json().as_array().unwrap().len(), 4);
    assert!(!keys_of(&t, &chat).is_empty());

    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let gone = call(&t, Method::GET, &format!("/{chat}/chat"), None).await;
    assert_eq!(gone.json(), json!([]));
    assert_eq!(gone.header("x-chat-temporary"), None);
    assert_eq!(keys_of(&t, &chat), vec![], "nothing of it is left");
}

#[tokio::test]
async fn a_bad_body_makes_no_temporary_chat() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1")]).await;
    let before = t.dump();
    for (body, code, param) in [
        (json!({"system": 5}), "invalid_value", Some("system")),
        (json!({"id": "mine"}), "unknown_field", None),
        (json!(["system"]), "invalid_json", None),
    ] {
        let reply = call(&t, Method::POST, "/chats/temporary", Some(body.clone())).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        let error = &reply.json()["error"];
        assert_eq!(error["code"], code, "{body}: {}", reply.text);
        if let Some(param) = param {
            assert_eq!(error["param"], param);
        }
    }
    let not_json = t
        .call_with(
            Method::POST,
            "/chats/temporary",
            Body::from("{system"),
            &[ALICE],
        )
        .await;
    assert_eq!(not_json.status, 400, "{}", not_json.text);
    let get = call(&t, Method::GET, "/chats/temporary", None).await;
    get.assert_error(405, "method_not_allowed");
    let anonymous = t.post("/chats/temporary", json!({})).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(t.dump(), before, "nothing stored");
    // An empty body, an empty object and no prompt each make one.
    temporary(&t, None).await;
    temporary(&t, Some(json!({}))).await;
    temporary(&t, Some(json!({"system": null}))).await;
}

#[tokio::test]
async fn a_temporary_chat_works_alike_on_a_cluster() {
    // On a Cluster a turn's chat and its caller's counters are two scripts (two nodes).
    let t = TestApp::over_cluster(&[
        ("PROXY_API_KEYS", "alice:sk-alice-1"),
        ("TEMPORARY_CHAT_SECONDS", "120"),
    ])
    .await;
    let chat = temporary(&t, None).await;
    keyed_turn(&t, &chat, "clustered", "on-a-cluster").await;
    say(&t, "kept", "clustered too").await;
    let transcript = call(&t, Method::GET, &format!("/{chat}/chat"), None).await;
    assert_eq!(transcript.json().as_array().unwrap().len(), 2);
    assert_eq!(transcript.header("x-chat-temporary"), Some("120"));
    let page = call(&t, Method::GET, "/chats", None).await.json();
    assert_eq!(listed_ids(&page, "chats"), vec!["kept"]);
    let keys: Vec<String> = t
        .all_keys()
        .into_iter()
        .filter(|key| key.contains(&chat))
        .collect();
    assert!(keys.iter().any(|key| key.contains(":idem:")), "{keys:?}");
}
