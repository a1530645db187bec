//! Prompts the cache can keep: every turn of a kept chat asks upstream with the same
//! `prompt_cache_key`, derived from the caller and the chat (never the chat's id), on both
//! upstream APIs; a caller's own `prompt_cache_key` and `prompt_cache_retention` pass as sent;
//! a call that keeps no chat sends none.

use lambda_http::http::Method;
use serde_json::{json, Value};

use crate::support::TestApp;

const SEAL_KEY: &str = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The `prompt_cache_key` of the newest request upstream got on `path`.
async fn sent_key(t: &TestApp, path: &str) -> Value {
    let body = t
        .openai
        .bodies(path)
        .await
        .pop()
        .expect("upstream was asked");
    body.get("prompt_cache_key").cloned().unwrap_or(Value::Null)
}

async fn completion(t: &TestApp, body: Value, chat: Option<&str>) -> Value {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(chat) = chat {
        headers.push(("x-chat-id", chat));
    }
    let reply = t
        .call_with(
            Method::POST,
            "/v1/chat/completions",
            body.to_string().into(),
            &headers,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    sent_key(t, "/v1/chat/completions").await
}

#[tokio::test]
async fn every_turn_of_a_chat_sends_one_key_that_is_not_its_id() {
    let t = TestApp::start().await;
    for question in ["one", "two"] {
        let reply = t
            .post("/alice@example.com/chat", json!({"content": question}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let bodies = t.openai.chat_bodies().await;
    assert_eq!(bodies.len(), 2);
    let key = bodies[0]["prompt_cache_key"].as_str().unwrap().to_owned();
    assert_eq!(
        bodies[1]["prompt_cache_key"],
        key.as_str(),
        "the same for every turn"
    );
    assert!(key.starts_with("cp_") && key.len() == 35, "{key}");
    assert!(!key.contains("alice") && !key.contains("example"), "{key}");

    // Another chat, another key; the chat's own turns through /v1 keep its key.
    t.post("/bob/chat", json!({"content": "one"})).await;
    assert_ne!(sent_key(&t, "/v1/chat/completions").await, key.as_str());
    let body = json!({"messages": [{"role": "user", "content": "three"}]});
    assert_eq!(
        completion(&t, body, Some("alice@example.com")).await,
        key.as_str()
    );
}

#[tokio::test]
async fn a_stateless_call_sends_none_and_a_callers_own_key_passes_as_sent() {
    let t = TestApp::start().await;
    let stateless =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(completion(&t, stateless, None).await, Value::Null);

    let own = json!({"messages": [{"role": "user", "content": "hi"}],
        "prompt_cache_key": "mine", "prompt_cache_retention": "24h"});
    assert_eq!(completion(&t, own, Some("c1")).await, "mine");
    let body = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(body["prompt_cache_retention"], "24h");
    let keys = body
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k == "prompt_cache_key")
        .count();
    assert_eq!(keys, 1, "sent once: {body}");
}

#[tokio::test]
async fn a_chain_of_responses_keeps_its_key_from_its_first_turn() {
    let t = TestApp::start().await;
    let first = t.post("/v1/responses", json!({"input": "one"})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let key = sent_key(&t, "/v1/responses").await;
    assert!(key.as_str().is_some_and(|k| k.starts_with("cp_")), "{key}");
    let id = first.json()["id"].clone();
    let next = t
        .post(
            "/v1/responses",
            json!({"input": "two", "previous_response_id": id}),
        )
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(sent_key(&t, "/v1/responses").await, key);
    // Kept nowhere, no key.
    t.post("/v1/responses", json!({"input": "aside", "store": false}))
        .await;
    assert_eq!(sent_key(&t, "/v1/responses").await, Value::Null);
    // A caller's own key wins.
    let own = json!({"input": "three", "previous_response_id": next.json()["id"],
        "prompt_cache_key": "mine"});
    t.post("/v1/responses", own).await;
    assert_eq!(sent_key(&t, "/v1/responses").await, "mine");
}

#[tokio::test]
async fn the_key_depends_on_the_caller_and_on_the_seal_keys() {
    let keys = "alice:sk-a1,bob:sk-b2";
    let t = TestApp::with_env(&[("PROXY_API_KEYS", keys)]).await;
    let mut sent = Vec::new();
    for token in ["Bearer sk-a1", "Bearer sk-b2"] {
        let body = json!({"content": "hi"}).to_string();
        let reply = t
            .call_with(
                Method::POST,
                "/trip/chat",
                body.into(),
                &[("authorization", token)],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        sent.push(sent_key(&t, "/v1/chat/completions").await);
    }
    assert_ne!(sent[0], sent[1], "one chat id, two callers, two keys");

    let sealed = TestApp::with_env(&[("PROXY_API_KEYS", keys), ("SEAL_KEYS", SEAL_KEY)]).await;
    let body = json!({"content": "hi"}).to_string();
    let as_alice = [("authorization", "Bearer sk-a1")];
    sealed
        .call_with(Method::POST, "/trip/chat", body.into(), &as_alice)
        .await;
    let keyed = sent_key(&sealed, "/v1/chat/completions").await;
    assert!(
        keyed.as_str().is_some_and(|k| k.starts_with("cp_")),
        "{keyed}"
    );
    assert_ne!(
        keyed, sent[0],
        "under SEAL_KEYS, a MAC nobody without them can compute"
    );
}
