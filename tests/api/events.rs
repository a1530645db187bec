//! The API Gateway HTTP API (payload 2.0) events in `events/`, run through the handler in
//! the order a session would send them.

use serde_json::{json, Value};

use crate::support::TestApp;

async fn run(t: &TestApp, name: &str) -> crate::support::Reply {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let request = lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    t.send(request).await
}

#[tokio::test]
async fn every_event_is_answered_as_its_route_promises() {
    let t = TestApp::start().await;

    let hello = run(&t, "get-root").await;
    assert_eq!((hello.status, hello.text.as_str()), (200, "Hello, World!"));

    assert_eq!(run(&t, "post-system").await.json(), json!({}));
    assert_eq!(
        run(&t, "get-system").await.json(),
        json!({"content": "You are a terse assistant."})
    );
    assert_eq!(run(&t, "post-chat-system").await.json(), json!({}));
    assert_eq!(
        run(&t, "get-chat-system").await.json(),
        json!({"content": "Answer like a pirate."})
    );

    let chat = run(&t, "post-chat").await;
    assert_eq!(chat.status, 200, "{}", chat.text);
    assert_eq!(
        chat.json()["content"],
        "reply to: What is the capital of France?"
    );

    // API Gateway base64-encodes some bodies; the handler reads them the same.
    let encoded = run(&t, "post-chat-base64").await;
    assert_eq!(encoded.json()["content"], "reply to: And of Spain?");

    let image = run(&t, "post-img").await;
    assert_eq!(
        image.json()["content"],
        "reply to: What is in this picture?"
    );

    let transcript = run(&t, "get-chat").await.json();
    let roles: Vec<&str> = transcript
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
    assert!(transcript[4]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    let moderation = run(&t, "post-mod").await.json();
    assert_eq!(moderation["results"][0]["flagged"], false);

    assert_eq!(run(&t, "post-clear").await.json(), json!({}));
    assert_eq!(run(&t, "get-chat").await.json(), json!([]));

    let sent = t.openai.chat_bodies().await;
    assert_eq!(sent.len(), 3);
    let first_messages: Vec<Value> = sent[0]["messages"].as_array().unwrap().clone();
    assert_eq!(first_messages[0]["content"], "You are a terse assistant.");
    assert_eq!(first_messages[1]["content"], "Answer like a pirate.");
}

#[tokio::test]
async fn there_is_an_event_for_every_route() {
    let dir = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let mut routes: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let request = lambda_http::request::from_str(&raw).unwrap();
            let route = chat_proxy::routes::Route::parse(request.method(), request.uri().path())
                .expect("every event is a valid route");
            route.name().to_owned()
        })
        .collect();
    routes.sort();
    routes.dedup();
    assert_eq!(routes.len(), 10, "{routes:?}");
}
