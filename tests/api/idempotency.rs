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
    t.live_turns_ended().await;
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

/// What a streamed `/v1` answer said, gathered from its chunks: its id and created, the
/// text, the tool calls (name and whole arguments), the finish reason and the usage.
fn streamed_answer(reply: &Reply) -> Value {
    let chunks: Vec<Value> = reply
        .events()
        .iter()
        .filter(|e| e.data != "[DONE]" && !e.is_comment())
        .map(|e| e.json())
        .collect();
    assert!(!chunks.is_empty(), "no chunks in {}", reply.text);
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for chunk in &chunks {
        assert_eq!(chunk["id"], chunks[0]["id"], "one id throughout");
        assert_eq!(chunk["created"], chunks[0]["created"]);
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        for choice in chunk["choices"].as_array().unwrap() {
            let delta = &choice["delta"];
            text.push_str(delta["content"].as_str().unwrap_or(""));
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap() as usize;
                if calls.len() <= index {
                    calls.push(Default::default());
                }
                let entry = &mut calls[index];
                if let Some(id) = call["id"].as_str() {
                    entry.0 = id.to_owned();
                }
                entry
                    .1
                    .push_str(call["function"]["name"].as_str().unwrap_or(""));
                entry
                    .2
                    .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
        }
    }
    json!({"id": chunks[0]["id"], "created": chunks[0]["created"], "model": chunks[0]["model"],
           "text": text, "calls": calls, "finish_reason": finish, "usage": usage})
}

async fn post_completion(t: &TestApp, body: &Value, key: &str, chat: Option<&str>) -> Reply {
    let mut headers = vec![("idempotency-key", key)];
    if let Some(chat) = chat {
        headers.push(("x-chat-id", chat));
    }
    t.call_with(
        Method::POST,
        "/v1/chat/completions",
        Body::from(body.to_string()),
        &headers,
    )
    .await
}

#[tokio::test]
async fn a_streamed_completion_is_replayed_as_it_was_first_sent() {
    let t = TestApp::start().await;
    // A stateless stream that ends in a tool call.
    t.openai
        .fail_chat(
            ResponseTemplate::new(200).set_body_json(crate::support::openai::tool_call_completion(
                "gpt-4o-mini",
                &[("get_weather", r#"{"city":"Oslo"}"#)],
                9,
            )),
            1,
        )
        .await;
    let tools = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    let first = post_completion(&t, &tools, "tools-1", None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let sent = streamed_answer(&first);
    assert_eq!(sent["finish_reason"], "tool_calls", "{sent}");
    assert_eq!(
        sent["calls"],
        json!([["call_0abcDEF", "get_weather", "{\"city\":\"Oslo\"}"]])
    );
    let retry = post_completion(&t, &tools, "tools-1", None).await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        streamed_answer(&retry),
        sent,
        "the first answer, not a rewrite"
    );

    // A stored chat's turn cut short by max_tokens, with the usage chunk asked for.
    let mut cut = chat_completion("gpt-4o-mini", "The first words of a long", 3);
    cut["choices"][0]["finish_reason"] = json!("length");
    t.openai
        .fail_chat(ResponseTemplate::new(200).set_body_json(cut), 1)
        .await;
    let long = json!({"stream": true, "max_tokens": 6, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Tell me a long story."}]});
    let first = post_completion(&t, &long, "long-1", Some("c1")).await;
    let sent = streamed_answer(&first);
    assert_eq!(sent["finish_reason"], "length");
    assert_eq!(sent["usage"]["completion_tokens"], 5, "{sent}");
    let calls = t.openai.chat_bodies().await.len();
    let retry = post_completion(&t, &long, "long-1", Some("c1")).await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        calls,
        "no upstream call"
    );
    assert_eq!(streamed_answer(&retry), sent);
}
