//! What one request may make the proxy send or read: `MAX_PROMPT_TOKENS` counts everything
//! a turn sends, and the stored chats a request's references make it read are bounded.
//! Each refusal is a 400 naming its param, with nothing sent upstream and nothing stored.

use serde_json::{json, Value};

use crate::support::{Reply, TestApp};

async fn respond(t: &TestApp, body: Value) -> Reply {
    t.post("/v1/responses", body).await
}

/// About `tokens` tokens of text.
fn words(tokens: usize) -> String {
    "word ".repeat(tokens)
}

#[tokio::test]
async fn max_prompt_tokens_counts_everything_a_turn_sends() {
    let t = TestApp::with_env(&[("MAX_PROMPT_TOKENS", "1000")]).await;
    let conversation = t.post("/v1/conversations", json!({})).await.json()["id"].clone();
    let tools = json!([{"type": "function", "name": "lookup", "description": words(3000),
        "parameters": {"type": "object"}}]);
    let before = t.dump();
    for (what, body) in [
        (
            "instructions",
            json!({"input": "hi", "instructions": words(3000)}),
        ),
        (
            "a developer item",
            json!({"input": [{"role": "developer", "content": words(3000)},
                             {"role": "user", "content": "hi"}]}),
        ),
        (
            "an assistant item in a conversation",
            json!({"conversation": conversation, "input": [
                {"role": "assistant", "content": words(3000)},
                {"role": "user", "content": "hi"}]}),
        ),
        ("the tools", json!({"input": "hi", "tools": tools})),
    ] {
        respond(&t, body)
            .await
            .assert_error(400, "message_too_long");
        assert!(
            t.openai.bodies("/v1/responses").await.is_empty(),
            "{what}: nothing was sent upstream"
        );
    }
    assert_eq!(t.dump(), before, "nothing stored");
    // And on the chat door: the tools' definitions count.
    let completion = t
        .call_with(
            lambda_http::http::Method::POST,
            "/v1/chat/completions",
            lambda_http::Body::from(
                json!({"messages": [{"role": "user", "content": "hi"}], "tools": [
                    {"type": "function", "function": {"name": "lookup",
                     "description": words(3000), "parameters": {"type": "object"}}}]})
                .to_string(),
            ),
            &[("x-chat-id", "c1")],
        )
        .await;
    completion.assert_error(400, "message_too_long");
    assert!(t.openai.chat_bodies().await.is_empty());
}

#[tokio::test]
async fn an_item_a_reference_fills_in_counts_toward_max_prompt_tokens() {
    let t = TestApp::with_env(&[("MAX_PROMPT_TOKENS", "1000")]).await;
    // A stored answer of about 600 tokens (the echo repeats the question).
    let first = respond(&t, json!({"input": words(600)})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let item = first.json()["output"][0]["id"].as_str().unwrap().to_owned();
    let asked = t.openai.bodies("/v1/responses").await.len();
    // A new chain that names it and asks 600 tokens more: over the budget once filled in.
    respond(
        &t,
        json!({"input": [{"type": "item_reference", "id": item},
                         {"role": "user", "content": words(600)}]}),
    )
    .await
    .assert_error(400, "message_too_long");
    assert_eq!(t.openai.bodies("/v1/responses").await.len(), asked);
}

#[tokio::test]
async fn references_to_items_of_many_chains_are_refused_before_they_are_read() {
    let t = TestApp::start().await;
    let mut items = Vec::new();
    for n in 0..9 {
        let reply = respond(&t, json!({"input": format!("chain {n}")})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        items.push(json!({"type": "item_reference",
                          "id": reply.json()["output"][0]["id"].clone()}));
    }
    let asked = t.openai.bodies("/v1/responses").await.len();
    let mut input = items.clone();
    input.push(json!({"role": "user", "content": "all of them"}));
    let refused = respond(&t, json!({"input": input})).await;
    refused.assert_error(400, "too_many_references");
    assert_eq!(refused.json()["error"]["param"], "input");
    assert_eq!(t.openai.bodies("/v1/responses").await.len(), asked);
    // Eight are within the bound.
    let mut input: Vec<Value> = items[..8].to_vec();
    input.push(json!({"role": "user", "content": "eight of them"}));
    let answered = respond(&t, json!({"input": input})).await;
    assert_eq!(answered.status, 200, "{}", answered.text);
}
