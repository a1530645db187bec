//! Caller keys, isolation between callers, CORS and the per-caller rate limit.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::TestApp;

const KEYS: &str = "alice:sk-alice-1,bob:sk-bob-2";

async fn keyed() -> TestApp {
    TestApp::with_env(&[("PROXY_API_KEYS", KEYS)]).await
}

async fn as_caller(
    t: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> crate::support::Reply {
    let body = body.map_or(Body::Empty, |b| Body::from(b.to_string()));
    t.call_with(
        method,
        path,
        body,
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

#[tokio::test]
async fn without_a_key_every_route_but_hello_is_401() {
    let t = keyed().await;
    assert_eq!(t.get("/").await.status, 200);
    let calls = [
        t.get("/system").await,
        t.post("/system", json!({"content": "x"})).await,
        t.post("/mod", json!({"content": "x"})).await,
        t.get("/c1/system").await,
        t.post("/c1/system", json!({"content": "x"})).await,
        t.post("/c1/chat", json!({"content": "x"})).await,
        t.get("/c1/chat").await,
        t.post("/c1/img", json!({"content": "x", "url": "https://x/y.png"}))
            .await,
        t.post_raw("/c1/clear", "").await,
    ];
    for reply in calls {
        reply.assert_error(401, "invalid_api_key");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"chat-proxy\"")
        );
    }
    assert!(t.keys().is_empty(), "nothing was written");
    assert!(
        t.openai.requests().await.is_empty(),
        "nothing was sent upstream"
    );
}

#[tokio::test]
async fn a_wrong_key_is_401_and_never_echoed() {
    let t = keyed().await;
    for headers in [
        [("authorization", "Bearer sk-alice-")],
        [("authorization", "Bearer sk-alice-1x")],
        [("x-api-key", "sk-nobody")],
        [("authorization", "Basic sk-alice-1")],
    ] {
        let reply = t
            .call_with(Method::GET, "/c1/chat", Body::Empty, &headers)
            .await;
        reply.assert_error(401, "invalid_api_key");
        assert!(!reply.text.contains("sk-"), "{}", reply.text);
    }
}

#[tokio::test]
async fn bearer_and_x_api_key_both_work() {
    let t = keyed().await;
    let bearer = as_caller(
        &t,
        "sk-alice-1",
        Method::POST,
        "/c1/chat",
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(bearer.status, 200, "{}", bearer.text);
    let header = t
        .call_with(
            Method::GET,
            "/c1/chat",
            Body::Empty,
            &[("x-api-key", "sk-alice-1")],
        )
        .await;
    assert_eq!(header.json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn callers_cannot_read_write_or_clear_each_others_chats() {
    let t = keyed().await;
    as_caller(
        &t,
        "sk-alice-1",
        Method::POST,
        "/system",
        Some(json!({"content": "Alice's rules."})),
    )
    .await;
    as_caller(
        &t,
        "sk-alice-1",
        Method::POST,
        "/c1/system",
        Some(json!({"content": "Alice's chat."})),
    )
    .await;
    as_caller(
        &t,
        "sk-alice-1",
        Method::POST,
        "/c1/chat",
        Some(json!({"content": "alice's secret"})),
    )
    .await;

    // Bob, same chat id: nothing of Alice's is visible, and his writes do not reach hers.
    assert_eq!(
        as_caller(&t, "sk-bob-2", Method::GET, "/c1/chat", None)
            .await
            .json(),
        json!([])
    );
    assert_eq!(
        as_caller(&t, "sk-bob-2", Method::GET, "/c1/system", None)
            .await
            .json(),
        json!({"content": ""})
    );
    assert_eq!(
        as_caller(&t, "sk-bob-2", Method::GET, "/system", None)
            .await
            .json(),
        json!({"content": "You are a helpful assistant."})
    );
    as_caller(&t, "sk-bob-2", Method::POST, "/c1/clear", None).await;
    as_caller(
        &t,
        "sk-bob-2",
        Method::POST,
        "/c1/chat",
        Some(json!({"content": "bob here"})),
    )
    .await;

    let bob_sent = t.openai.chat_bodies().await.pop().unwrap();
    assert!(!bob_sent.to_string().contains("alice"), "{bob_sent}");
    assert!(!bob_sent.to_string().contains("Alice"), "{bob_sent}");

    let alice = as_caller(&t, "sk-alice-1", Method::GET, "/c1/chat", None)
        .await
        .json();
    assert_eq!(alice[0]["content"], "alice's secret");
    assert_eq!(alice.as_array().unwrap().len(), 2);
    assert_eq!(
        as_caller(&t, "sk-alice-1", Method::GET, "/system", None)
            .await
            .json(),
        json!({"content": "Alice's rules."})
    );
}

const ORIGIN: &str = "https://app.example.com";

#[tokio::test]
async fn preflight_is_answered_for_allowed_origins_without_a_key() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", KEYS), ("CORS_ALLOW_ORIGINS", ORIGIN)]).await;
    let reply = t
        .call_with(
            Method::OPTIONS,
            "/c1/chat",
            Body::Empty,
            &[
                ("origin", ORIGIN),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert!(reply
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));

    let stranger = t
        .call_with(
            Method::OPTIONS,
            "/c1/chat",
            Body::Empty,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(stranger.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn answers_carry_the_allowed_origin_errors_included() {
    let t = TestApp::with_env(&[("CORS_ALLOW_ORIGINS", ORIGIN)]).await;
    let ok = t
        .call_with(Method::GET, "/c1/chat", Body::Empty, &[("origin", ORIGIN)])
        .await;
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(ok.header("vary"), Some("origin"));
    let error = t
        .call_with(Method::GET, "/c1/nope", Body::Empty, &[("origin", ORIGIN)])
        .await;
    assert_eq!(error.status, 404);
    assert_eq!(error.header("access-control-allow-origin"), Some(ORIGIN));
}

#[tokio::test]
async fn without_cors_there_is_no_preflight() {
    let t = TestApp::start().await;
    let reply = t
        .call_with(
            Method::OPTIONS,
            "/c1/chat",
            Body::Empty,
            &[("origin", ORIGIN)],
        )
        .await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn the_rate_limit_holds_per_caller_and_stores_nothing_past_it() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", KEYS), ("RATE_LIMIT_PER_MINUTE", "3")]).await;
    for i in 0..3 {
        let reply = as_caller(
            &t,
            "sk-alice-1",
            Method::POST,
            "/c1/chat",
            Some(json!({"content": format!("q{i}")})),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let limited = as_caller(
        &t,
        "sk-alice-1",
        Method::POST,
        "/c1/chat",
        Some(json!({"content": "one too many"})),
    )
    .await;
    limited.assert_error(429, "rate_limit_exceeded");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        3,
        "no upstream call past the limit"
    );

    // Bob has his own allowance; Alice's history holds her three turns only.
    let bob = as_caller(&t, "sk-bob-2", Method::GET, "/c1/chat", None).await;
    assert_eq!(bob.status, 200);
    t.redis.query(&["DEL", "chat-proxy:requests:caller:alice"]);
    let alice = as_caller(&t, "sk-alice-1", Method::GET, "/c1/chat", None).await;
    assert_eq!(alice.json().as_array().unwrap().len(), 6);
    assert!(!alice.text.contains("one too many"));
}

#[tokio::test]
async fn the_rate_limit_holds_across_function_instances() {
    let first = TestApp::with_env(&[("RATE_LIMIT_PER_MINUTE", "2")]).await;
    // A second instance of the function, sharing the first one's Redis.
    let config = crate::support::config_for(
        &first.redis.url(),
        &first.openai.base_url(),
        &[("RATE_LIMIT_PER_MINUTE", "2")],
    );
    let second = chat_proxy::App::build(&config).unwrap();
    let request = || {
        lambda_http::http::Request::builder()
            .method("GET")
            .uri("/c1/chat")
            .body(Body::Empty)
            .unwrap()
    };
    let statuses = [
        first.send(request()).await.status,
        chat_proxy::handle(&second, request())
            .await
            .status()
            .as_u16(),
        first.send(request()).await.status,
        chat_proxy::handle(&second, request())
            .await
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 429, 429]);
}

/// A `GET /c1/chat` from `ip`, as a REST API event carries it.
fn from_ip(ip: &str) -> lambda_http::Request {
    let file = format!("{}/events/get-chat.json", env!("CARGO_MANIFEST_DIR"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    event["path"] = json!("/c1/chat");
    event["requestContext"]["path"] = json!("/prod/c1/chat");
    event["requestContext"]["identity"]["sourceIp"] = json!(ip);
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[tokio::test]
async fn an_open_api_counts_each_source_address_on_its_own() {
    let t = TestApp::with_env(&[("RATE_LIMIT_PER_MINUTE", "2")]).await;
    let mut statuses = Vec::new();
    for ip in [
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.1",
        "198.51.100.2",
    ] {
        statuses.push(t.send(from_ip(ip)).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 200]);
    assert_eq!(
        t.redis
            .query(&["HLEN", "chat-proxy:requests:ip:198.51.100.1"]),
        "2",
        "the window keeps at most the limit's requests"
    );
    assert_eq!(
        t.redis
            .query(&["HLEN", "chat-proxy:requests:ip:198.51.100.2"]),
        "2"
    );
    assert_eq!(
        t.redis.query(&["EXISTS", "chat-proxy:requests:ip:unknown"]),
        "0"
    );
}

#[tokio::test]
async fn retry_after_never_says_zero_in_a_windows_last_half_second() {
    let t = TestApp::with_env(&[("RATE_LIMIT_PER_MINUTE", "1")]).await;
    assert_eq!(t.get("/c1/chat").await.status, 200);
    // The window has 400 ms left: TTL would round that down to 0.
    t.redis
        .query(&["PEXPIRE", "chat-proxy:requests:ip:unknown", "400"]);
    let limited = t.get("/c1/chat").await;
    limited.assert_error(429, "rate_limit_exceeded");
    assert_eq!(limited.header("retry-after"), Some("1"));
}
