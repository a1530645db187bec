//! Every bad input: a clear JSON error with the right status, and nothing stored changes.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::json;

use crate::support::openai::API_KEY;
use crate::support::TestApp;

/// A chat with a prompt and one turn, so a test can show that a bad request changed nothing.
async fn seeded() -> TestApp {
    let t = TestApp::start().await;
    t.post("/system", json!({"content": "Global."})).await;
    t.post("/c1/system", json!({"content": "Chat."})).await;
    t.say("c1", "kept").await;
    t
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_code_and_change_nothing() {
    let t = seeded().await;
    let before = t.dump();
    let upstream_calls = t.openai.requests().await.len();

    let cases: &[(&str, &str, &str)] = &[
        ("not json", "invalid_json", "text"),
        ("", "invalid_json", "empty"),
        ("[\"content\"]", "invalid_json", "an array"),
        ("{}", "invalid_content", "no content"),
        (r#"{"content": 42}"#, "invalid_content", "a number"),
        (r#"{"content": ["a"]}"#, "invalid_content", "a list"),
        (r#"{"content": ""}"#, "invalid_content", "empty content"),
        (
            r#"{"content": "x", "role": "system"}"#,
            "unknown_field",
            "an extra field",
        ),
    ];
    for path in ["/system", "/c1/system", "/c1/chat", "/mod"] {
        for (body, code, what) in cases {
            let reply = t.post_raw(path, *body).await;
            assert_eq!(reply.status, 400, "{path} with {what}: {}", reply.text);
            reply.assert_error(400, code);
        }
    }
    assert_eq!(t.dump(), before);
    assert_eq!(t.openai.requests().await.len(), upstream_calls);
}

#[tokio::test]
async fn image_turns_need_a_string_url() {
    let t = seeded().await;
    let before = t.dump();
    for body in [
        json!({"content": "what?"}),
        json!({"content": "what?", "url": ""}),
        json!({"content": "what?", "url": 7}),
        json!({"url": "https://example.com/x.png"}),
    ] {
        let reply = t.post("/c1/img", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        let code = reply.json()["error"]["code"].as_str().unwrap().to_owned();
        assert!(
            code == "invalid_url" || code == "invalid_content",
            "{body}: {code}"
        );
    }
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn image_urls_must_be_short_http_urls() {
    let t = seeded().await;
    let before = t.dump();
    let huge_data_url = format!("data:image/png;base64,{}", "A".repeat(1024 * 1024));
    let long = format!("https://example.com/{}", "a".repeat(5000));
    for url in [
        huge_data_url.as_str(),
        long.as_str(),
        "ftp://example.com/cat.png",
        "file:///etc/passwd",
        "cat.png",
    ] {
        let body = json!({"content": "what?", "url": url}).to_string();
        let reply = t.call(Method::POST, "/c1/img", Body::from(body)).await;
        if url.len() > 1024 * 1024 {
            reply.assert_error(413, "body_too_large");
        } else {
            reply.assert_error(400, "invalid_url");
        }
    }
    assert_eq!(t.dump(), before);
    assert_eq!(t.openai.chat_bodies().await.len(), 1, "only the seed turn");
}

#[tokio::test]
async fn a_data_url_under_the_body_limit_is_still_refused() {
    let t = TestApp::with_env(&[("MAX_BODY_BYTES", "6291456")]).await;
    let data = format!("data:image/png;base64,{}", "A".repeat(1024 * 1024));
    let reply = t
        .post("/c1/img", json!({"content": "what?", "url": data}))
        .await;
    reply.assert_error(400, "invalid_url");
    assert!(t.keys().is_empty());
    assert!(t.openai.requests().await.is_empty());
}

#[tokio::test]
async fn the_body_limit_applies_to_routes_that_ignore_their_body() {
    let t = seeded().await;
    let before = t.dump();
    let big = "x".repeat(2 * 1024 * 1024);
    for (method, path) in [
        (Method::POST, "/c1/clear"),
        (Method::GET, "/c1/chat"),
        (Method::GET, "/system"),
        (Method::GET, "/"),
    ] {
        let reply = t.call(method.clone(), path, Body::from(big.clone())).await;
        reply.assert_error(413, "body_too_large");
    }
    assert_eq!(t.dump(), before, "the chat was not cleared");
}

#[tokio::test]
async fn non_utf8_bodies_are_refused() {
    let t = seeded().await;
    let before = t.dump();
    let reply = t
        .call(
            Method::POST,
            "/c1/chat",
            Body::from(vec![0xff, 0xfe, b'{', b'}']),
        )
        .await;
    reply.assert_error(400, "invalid_encoding");
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let t = TestApp::with_env(&[("MAX_BODY_BYTES", "1024")]).await;
    let content = "a".repeat(2000);
    let reply = t.post("/c1/chat", json!({"content": content})).await;
    reply.assert_error(413, "body_too_large");
    assert!(t.keys().is_empty());
    assert!(t.openai.requests().await.is_empty());
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let t = seeded().await;
    let before = t.dump();
    let nested = format!("{{\"content\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
    t.post_raw("/c1/chat", nested)
        .await
        .assert_error(400, "invalid_json");
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn unknown_paths_get_404() {
    let t = TestApp::start().await;
    for path in [
        "/c1/nope",
        "/c1/chat/extra",
        "/c1/chat/",
        "//",
        "/chats/nope",
    ] {
        let reply = t.get(path).await;
        reply.assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let t = TestApp::start().await;
    let cases = [
        (Method::DELETE, "/c1/chat", "GET, POST"),
        (Method::GET, "/c1/img", "POST"),
        (Method::GET, "/c1/clear", "POST"),
        (Method::GET, "/mod", "POST"),
        (Method::PUT, "/system", "GET, POST"),
        (Method::POST, "/", "GET"),
        // A chat itself is only deleted.
        (Method::GET, "/c1", "DELETE"),
        (Method::DELETE, "/chats", "GET"),
    ];
    for (method, path, allow) in cases {
        let reply = t.call(method.clone(), path, Body::Empty).await;
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
}

#[tokio::test]
async fn invalid_chat_ids_get_400_and_touch_nothing() {
    let t = seeded().await;
    let before = t.dump();
    let long = "x".repeat(129);
    for id in [
        "has%20space",
        "a%2Fb",
        "%7Btag%7D",
        "caf%C3%A9",
        "..",
        ".",
        "%2E%2E",
        long.as_str(),
    ] {
        let reply = t
            .post(&format!("/{id}/chat"), json!({"content": "hi"}))
            .await;
        reply.assert_error(400, "invalid_chat_id");
        let reply = t.get(&format!("/{id}/chat")).await;
        reply.assert_error(400, "invalid_chat_id");
    }
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn error_bodies_never_hold_the_api_key() {
    let t = TestApp::start().await;
    t.openai
        .always_chat(crate::support::openai::error_response(
            401,
            "invalid_request_error",
            &format!("Incorrect API key provided: {API_KEY}."),
        ))
        .await;
    let reply = t.post("/c1/chat", json!({"content": "hi"})).await;
    reply.assert_error(403, "upstream_auth_failed");
    assert!(!reply.text.contains(API_KEY), "{}", reply.text);
}
