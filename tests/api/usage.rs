//! What turns cost: per chat over its life, per caller by UTC day and month and per model,
//! and the daily token limit, shared by every instance of the function.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::openai::COMPLETION_TOKENS;
use crate::support::TestApp;

#[tokio::test]
async fn a_chats_usage_sums_its_turns_and_outlives_a_clear() {
    let t = TestApp::start().await;
    let mut sums = (0, 0);
    for q in ["one", "two", "three"] {
        let tokens = t.say("c1", q).await["tokens"].clone();
        sums.0 += tokens["prompt_tokens"].as_u64().unwrap();
        sums.1 += tokens["completion_tokens"].as_u64().unwrap();
    }
    let expected = json!({
        "turns": 3,
        "prompt_tokens": sums.0,
        "completion_tokens": sums.1,
        "cached_tokens": 0,
        "total_tokens": sums.0 + sums.1
    });
    assert_eq!(t.get("/c1/usage").await.json(), expected);
    t.post_raw("/c1/clear", "").await;
    assert_eq!(
        t.get("/c1/usage").await.json(),
        expected,
        "kept when cleared"
    );
    assert_eq!(
        t.get("/other/usage").await.json(),
        json!({"turns": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "total_tokens": 0})
    );
}

#[tokio::test]
async fn a_callers_usage_counts_the_day_and_month_per_model_stateless_calls_included() {
    let t = TestApp::with_env(&[
        ("PROXY_API_KEYS", "alice:sk-a1,bob:sk-b2"),
        ("VISION_MODEL", "gpt-test-vision"),
    ])
    .await;
    let alice = [("authorization", "Bearer sk-a1")];
    let body = |v: Value| Body::from(v.to_string());
    let chat = t
        .call_with(
            Method::POST,
            "/c1/chat",
            body(json!({"content": "hi"})),
            &alice,
        )
        .await
        .json();
    let image = t
        .call_with(
            Method::POST,
            "/c1/img",
            body(json!({"content": "what?", "url": "https://example.com/a.png"})),
            &alice,
        )
        .await
        .json();
    let stateless = t
        .call_with(
            Method::POST,
            "/v1/chat/completions",
            body(json!({"messages": [{"role": "user", "content": "no chat"}]})),
            &alice,
        )
        .await
        .json();
    let prompt = |v: &Value| v["prompt_tokens"].as_u64().unwrap();
    let chat_model = prompt(&chat["tokens"]) + prompt(&stateless["usage"]);
    let vision = prompt(&image["tokens"]);

    let usage = t
        .call_with(Method::GET, "/usage", Body::Empty, &alice)
        .await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    let usage = usage.json();
    let day = chat_proxy::clock::UtcDay::today();
    assert_eq!(usage["day"]["date"], day.date);
    assert_eq!(usage["month"]["month"], day.month);
    for period in ["day", "month"] {
        let period = &usage[period];
        assert_eq!(period["prompt_tokens"], chat_model + vision);
        assert_eq!(period["completion_tokens"], 3 * COMPLETION_TOKENS);
        assert_eq!(
            period["total_tokens"],
            chat_model + vision + 3 * COMPLETION_TOKENS
        );
        assert_eq!(period["models"]["gpt-4o-mini"]["prompt_tokens"], chat_model);
        assert_eq!(period["models"]["gpt-test-vision"]["prompt_tokens"], vision);
        assert_eq!(
            period["models"]["gpt-test-vision"]["completion_tokens"],
            COMPLETION_TOKENS
        );
    }
    // Bob's counters are his own.
    let bob = t
        .call_with(
            Method::GET,
            "/usage",
            Body::Empty,
            &[("authorization", "Bearer sk-b2")],
        )
        .await
        .json();
    assert_eq!(bob["day"]["total_tokens"], 0);
    assert_eq!(bob["day"]["models"], json!({}));
}

#[tokio::test]
async fn the_daily_token_limit_holds_across_function_instances_until_midnight() {
    let first = TestApp::with_env(&[
        ("PROXY_API_KEYS", "alice:sk-a1"),
        ("TOKEN_LIMIT_PER_DAY", "10"),
    ])
    .await;
    let config = crate::support::config_for(
        &first.redis.url(),
        &first.openai.base_url(),
        &[
            ("PROXY_API_KEYS", "alice:sk-a1"),
            ("TOKEN_LIMIT_PER_DAY", "10"),
        ],
    );
    let second = chat_proxy::App::build(&config).unwrap();
    let turn = |content: &str| {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/c1/chat")
            .header("authorization", "Bearer sk-a1")
            .body(Body::from(json!({"content": content}).to_string()))
            .unwrap()
    };
    // 2 prompt + 5 completion tokens, then 4 + 5: past 10 after the second turn, which
    // was under way and is finished and counted.
    assert_eq!(first.send(turn("one")).await.status, 200);
    let response = chat_proxy::handle(&second, turn("two")).await;
    assert_eq!(response.status(), 200);
    let limited = first.send(turn("three")).await;
    limited.assert_error(429, "token_limit_exceeded");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    let midnight = chat_proxy::clock::UtcDay::today().seconds_left;
    assert!(
        retry_after.abs_diff(midnight) <= 2,
        "{retry_after} vs {midnight}"
    );
    let response = chat_proxy::handle(&second, turn("four")).await;
    assert_eq!(
        response.status(),
        429,
        "the other instance sees the same count"
    );
    assert_eq!(
        first.openai.chat_bodies().await.len(),
        2,
        "no upstream call past the limit"
    );
}

#[tokio::test]
async fn stateless_completions_count_toward_the_daily_limit_and_meet_it() {
    let t = TestApp::with_env(&[
        ("PROXY_API_KEYS", "alice:sk-a1"),
        ("TOKEN_LIMIT_PER_DAY", "10"),
    ])
    .await;
    let alice = [("authorization", "Bearer sk-a1")];
    let completion = |text: &str| {
        Body::from(json!({"messages": [{"role": "user", "content": text}]}).to_string())
    };
    // Each call costs its prompt plus 5 completion tokens: past 10 after the second.
    for text in ["one", "two"] {
        let reply = t
            .call_with(
                Method::POST,
                "/v1/chat/completions",
                completion(text),
                &alice,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let limited = t
        .call_with(
            Method::POST,
            "/v1/chat/completions",
            completion("three"),
            &alice,
        )
        .await;
    limited.assert_error(429, "token_limit_exceeded");
    assert!(limited.header("retry-after").is_some());
    // A turn of a chat meets the same limit: it is one budget per caller.
    let turn = t
        .call_with(
            Method::POST,
            "/c1/chat",
            Body::from(json!({"content": "four"}).to_string()),
            &alice,
        )
        .await;
    turn.assert_error(429, "token_limit_exceeded");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        2,
        "no upstream call past the limit"
    );
}

#[tokio::test]
async fn an_open_api_limits_tokens_per_source_address() {
    let t = TestApp::with_env(&[("TOKEN_LIMIT_PER_DAY", "5")]).await;
    let from = |ip: &str| {
        let file = format!("{}/events/post-chat.json", env!("CARGO_MANIFEST_DIR"));
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        event["requestContext"]["identity"]["sourceIp"] = json!(ip);
        lambda_http::request::from_str(&event.to_string()).unwrap()
    };
    assert_eq!(t.send(from("198.51.100.1")).await.status, 200);
    t.send(from("198.51.100.1"))
        .await
        .assert_error(429, "token_limit_exceeded");
    assert_eq!(
        t.send(from("198.51.100.2")).await.status,
        200,
        "another address"
    );
}

#[tokio::test]
async fn the_limits_and_the_idempotency_claim_ride_the_turns_read_round_trip() {
    let t = TestApp::over_relay(&[
        ("RATE_LIMIT_PER_MINUTE", "100"),
        ("TOKEN_LIMIT_PER_DAY", "1000000"),
    ])
    .await;
    t.say("c1", "warm").await;
    let turn = t.call_with(
        Method::POST,
        "/c1/chat",
        Body::from(json!({"content": "counted"}).to_string()),
        &[("idempotency-key", "k-1")],
    );
    crate::turns::assert_trips(
        crate::turns::round_trips(&t, turn).await,
        2,
        "a limited turn with an Idempotency-Key",
    );
}

#[tokio::test]
async fn streamed_turns_are_counted_like_buffered_ones() {
    let t = TestApp::start().await;
    let streamed = t
        .post("/c1/chat", json!({"content": "one", "stream": true}))
        .await;
    let done = streamed.events().pop().unwrap().json();
    let v1 = t
        .call_with(
            Method::POST,
            "/v1/chat/completions",
            Body::from(
                json!({"messages": [{"role": "user", "content": "two"}], "stream": true})
                    .to_string(),
            ),
            &[("x-chat-id", "c1")],
        )
        .await;
    assert_eq!(v1.status, 200);
    t.app.settle().await;
    let usage = t.get("/c1/usage").await.json();
    assert_eq!(usage["turns"], 2);
    // The second turn's request sent 4 messages: the prompt and the first turn, then "two".
    assert_eq!(
        usage["prompt_tokens"],
        done["tokens"]["prompt_tokens"].as_u64().unwrap() + 4
    );
    assert_eq!(usage["completion_tokens"], 2 * COMPLETION_TOKENS);
    let caller = t.get("/usage").await.json();
    assert_eq!(caller["day"]["total_tokens"], usage["total_tokens"]);
}
