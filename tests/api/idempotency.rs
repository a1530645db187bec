//! `Idempotency-Key`: a retry gets the first answer again, with no second upstream call and
//! no second turn; the same key with another body, or while the first runs, is refused.

use std::time::Duration;

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::openai::{chat_completion, error_response};
use crate::support::{Reply, TestApp};

async fn post_keyed(t: &TestApp, path: &str, body: Value, key: &str) -> Reply {
    t.call_with(
        Method::POST,
        path,
        Body::from(body.to_string()),
        &[("idempotency-key", key)],
    )
    .await
}

async fn stored_turns(t: &TestApp, chat: &str) -> usize {
    t.transcript(chat).await.as_array().unwrap().len() / 2
}

#[tokio::test]
async fn a_retried_turn_gets_the_first_answer_without_a_second_call_or_turn() {
    let t = TestApp::start().await;
    for (path, body) in [
        ("/c1/chat", json!({"content": "hello"})),
        (
            "/c1/img",
            json!({"content": "what?", "url": "https://example.com/a.png"}),
        ),
    ] {
        let first = post_keyed(&t, path, body.clone(), &format!("key {path}")).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.header("idempotent-replayed"), None);
        let calls = t.openai.chat_bodies().await.len();
        let retry = post_keyed(&t, path, body, &format!("key {path}")).await;
        assert_eq!(
            (retry.status, retry.text.as_str()),
            (200, first.text.as_str()),
            "{path}"
        );
        assert_eq!(retry.header("content-type"), Some("application/json"));
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
        assert_eq!(
            t.openai.chat_bodies().await.len(),
            calls,
            "{path}: no upstream call"
        );
    }
    assert_eq!(stored_turns(&t, "c1").await, 2);
}

#[tokio::test]
async fn a_retried_completion_gets_the_first_answer_stateful_or_not() {
    let t = TestApp::start().await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for chat in [Some("c1"), None] {
        let mut headers = vec![("idempotency-key", "v1-key")];
        if let Some(chat) = chat {
            headers.push(("x-chat-id", chat));
        }
        let send = || {
            t.call_with(
                Method::POST,
                "/v1/chat/completions",
                Body::from(body.to_string()),
                &headers,
            )
        };
        let first = send().await;
        assert_eq!(first.status, 200, "{}", first.text);
        let calls = t.openai.chat_bodies().await.len();
        let retry = send().await;
        assert_eq!(retry.text, first.text, "{chat:?}");
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
        assert_eq!(t.openai.chat_bodies().await.len(), calls);
    }
    assert_eq!(stored_turns(&t, "c1").await, 1);
}

#[tokio::test]
async fn a_streamed_answer_is_replayed_as_one_done_event_or_one_chunk() {
    let t = TestApp::start().await;
    let seed = json!({"content": "stream me", "stream": true});
    let first = post_keyed(&t, "/c1/chat", seed.clone(), "s-1").await;
    let done = first.events().pop().unwrap();
    let retry = post_keyed(&t, "/c1/chat", seed, "s-1").await;
    assert_eq!(retry.header("content-type"), Some("text/event-stream"));
    assert_eq!(retry.events(), vec![done], "one done event, the same");

    let v1 = json!({"messages": [{"role": "user", "content": "stream me too"}], "stream": true,
                    "stream_options": {"include_usage": true}});
    let headers = [("idempotency-key", "s-2"), ("x-chat-id", "c1")];
    let send = || {
        t.call_with(
            Method::POST,
            "/v1/chat/completions",
            Body::from(v1.to_string()),
            &headers,
        )
    };
    let first = send().await;
    let text = |reply: &Reply| -> String {
        reply
            .events()
            .iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| {
                e.json()["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    let calls = t.openai.chat_bodies().await.len();
    let retry = send().await;
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        calls,
        "no upstream call"
    );
    assert_eq!(text(&retry), text(&first));
    assert_eq!(text(&retry), "reply to: stream me too");
    let events = retry.events();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let usage = &events[events.len() - 2].json()["usage"];
    assert_eq!(usage["completion_tokens"], 5, "the usage chunk, as asked");
    assert_eq!(stored_turns(&t, "c1").await, 2);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let t = TestApp::start().await;
    post_keyed(&t, "/c1/chat", json!({"content": "one"}), "k").await;
    let before = t.dump();
    post_keyed(&t, "/c1/chat", json!({"content": "two"}), "k")
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(t.dump(), before);
    assert_eq!(t.openai.chat_bodies().await.len(), 1);
}

#[tokio::test]
async fn a_retry_while_the_first_runs_is_409() {
    let t = TestApp::start().await;
    t.openai
        .always_chat(
            ResponseTemplate::new(200)
                .set_body_json(chat_completion("m", "slow", 1))
                .set_delay(Duration::from_millis(800)),
        )
        .await;
    let first = post_keyed(&t, "/c1/chat", json!({"content": "hi"}), "busy");
    let second = async {
        t.openai.wait_for_chat_requests(1).await;
        post_keyed(&t, "/c1/chat", json!({"content": "hi"}), "busy").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    second.assert_error(409, "request_in_progress");
    assert_eq!(t.openai.chat_bodies().await.len(), 1);
    // Once answered, the same retry replays.
    let third = post_keyed(&t, "/c1/chat", json!({"content": "hi"}), "busy").await;
    assert_eq!(third.text, first.text);
}

#[tokio::test]
async fn an_answer_is_kept_for_a_day_then_forgotten() {
    let t = TestApp::start().await;
    let first = post_keyed(&t, "/c1/chat", json!({"content": "hi"}), "daily").await;
    assert_eq!(first.status, 200);
    let keys: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.contains(":idem:"))
        .collect();
    assert_eq!(keys.len(), 1, "{:?}", t.keys());
    let ttl: u64 = t.redis.query(&["TTL", &keys[0]]).parse().unwrap();
    assert!((86_390..=86_400).contains(&ttl), "kept for {ttl} s");
    // Past its day, the key is free: the same request is a new turn.
    t.redis.query(&["DEL", &keys[0]]);
    let again = post_keyed(&t, "/c1/chat", json!({"content": "hi"}), "daily").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_eq!(stored_turns(&t, "c1").await, 2);
}

#[tokio::test]
async fn streamed_retries_are_refused_as_buffered_ones_are() {
    let t = TestApp::start().await;
    let streamed = |content: &'static str, key: &'static str| {
        post_keyed(
            &t,
            "/c1/chat",
            json!({"content": content, "stream": true}),
            key,
        )
    };
    // Another body under a key already answered: 422 before any stream.
    assert_eq!(streamed("one", "k").await.status, 200);
    let before = t.dump();
    streamed("two", "k")
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(t.dump(), before);
    // The same request while the first still streams: 409 before any stream.
    t.openai.script(crate::support::streaming::StreamScript {
        pause: Duration::from_millis(100),
        ..Default::default()
    });
    let first = streamed("slow", "busy");
    let second = async {
        t.openai.wait_for_chat_requests(2).await;
        streamed("slow", "busy").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200, "{}", first.text);
    second.assert_error(409, "request_in_progress");
    assert_eq!(t.openai.chat_bodies().await.len(), 2);
}

#[tokio::test]
async fn keys_are_per_chat_and_per_caller() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-a1,bob:sk-b2")]).await;
    let t = &t;
    let send = |path: &'static str, key: &'static str| async move {
        let body = Body::from(json!({"content": "same"}).to_string());
        let headers = [("idempotency-key", "shared"), ("authorization", key)];
        t.call_with(Method::POST, path, body, &headers).await
    };
    assert_eq!(
        send("/c1/chat", "Bearer sk-a1")
            .await
            .header("idempotent-replayed"),
        None
    );
    assert_eq!(
        send("/c2/chat", "Bearer sk-a1")
            .await
            .header("idempotent-replayed"),
        None
    );
    assert_eq!(
        send("/c1/chat", "Bearer sk-b2")
            .await
            .header("idempotent-replayed"),
        None
    );
    assert_eq!(
        send("/c1/chat", "Bearer sk-a1")
            .await
            .header("idempotent-replayed"),
        Some("true")
    );
    assert_eq!(t.openai.chat_bodies().await.len(), 3);
}

#[tokio::test]
async fn a_failed_first_attempt_frees_the_key_for_a_retry() {
    let t = TestApp::start().await;
    t.openai
        .fail_chat(error_response(500, "server_error", "boom"), 3)
        .await;
    post_keyed(&t, "/c1/chat", json!({"content": "again"}), "retry-me")
        .await
        .assert_error(502, "upstream_error");
    let retry = post_keyed(&t, "/c1/chat", json!({"content": "again"}), "retry-me").await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), None, "it ran");
    assert_eq!(stored_turns(&t, "c1").await, 1);
}

#[tokio::test]
async fn a_malformed_key_is_400() {
    let t = TestApp::start().await;
    let long = "k".repeat(256);
    for key in [long.as_str(), ""] {
        post_keyed(&t, "/c1/chat", json!({"content": "x"}), key)
            .await
            .assert_error(400, "invalid_idempotency_key");
    }
    assert!(t.keys().is_empty());
}
