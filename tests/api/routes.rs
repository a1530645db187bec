//! Every route of the HTTP API: what it answers, and what it sent upstream.

use lambda_http::http::Method;
use serde_json::json;

use crate::support::openai::{moderation_result, API_KEY, COMPLETION_TOKENS};
use crate::support::TestApp;

#[tokio::test]
async fn root_says_hello_world_as_html() {
    let t = TestApp::start().await;
    let reply = t.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text, "Hello, World!");
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn global_prompt_is_the_configured_default_until_set() {
    let t = TestApp::with_env(&[("SYSTEM_PROMPT", "Default prompt.")]).await;
    assert_eq!(
        t.get("/system").await.json(),
        json!({"content": "Default prompt."})
    );

    let set = t.post("/system", json!({"content": "Be terse."})).await;
    assert_eq!(set.status, 200);
    assert_eq!(set.json(), json!({}));
    assert_eq!(
        t.get("/system").await.json(),
        json!({"content": "Be terse."})
    );
}

#[tokio::test]
async fn chat_prompt_is_empty_until_set() {
    let t = TestApp::start().await;
    assert_eq!(t.get("/c1/system").await.json(), json!({"content": ""}));

    let set = t
        .post("/c1/system", json!({"content": "Talk like a pirate."}))
        .await;
    assert_eq!((set.status, set.json()), (200, json!({})));
    assert_eq!(
        t.get("/c1/system").await.json(),
        json!({"content": "Talk like a pirate."})
    );
    assert_eq!(t.get("/c2/system").await.json(), json!({"content": ""}));
}

#[tokio::test]
async fn a_turn_answers_with_content_role_and_tokens() {
    let t = TestApp::start().await;
    let reply = t.post("/c1/chat", json!({"content": "Hi!"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    // Two messages went upstream (global prompt, question): prompt_tokens echoes that.
    assert_eq!(
        reply.json(),
        json!({
            "content": "reply to: Hi!",
            "role": "assistant",
            "tokens": {"completion_tokens": COMPLETION_TOKENS, "prompt_tokens": 2, "total_tokens": 2 + COMPLETION_TOKENS, "cached_tokens": 0}
        })
    );
    // Field order is part of the contract the older proxy's clients saw.
    assert!(reply.text.starts_with(r#"{"content":"#), "{}", reply.text);
}

#[tokio::test]
async fn upstream_gets_global_prompt_chat_prompt_history_then_question() {
    let t = TestApp::with_env(&[("CHAT_MODEL", "gpt-test-chat")]).await;
    t.post("/system", json!({"content": "Global rules."})).await;
    t.post("/c1/system", json!({"content": "Chat rules."}))
        .await;
    t.say("c1", "first").await;
    t.say("c1", "second").await;

    let bodies = t.openai.chat_bodies().await;
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["model"], "gpt-test-chat");
    assert_eq!(
        bodies[1]["messages"],
        json!([
            {"role": "system", "content": "Global rules."},
            {"role": "system", "content": "Chat rules."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply to: first"},
            {"role": "user", "content": "second"},
        ])
    );
    let request = &t.openai.requests().await[0];
    assert_eq!(
        request.headers.get("authorization").unwrap(),
        format!("Bearer {API_KEY}").as_str()
    );
}

#[tokio::test]
async fn without_a_chat_prompt_only_the_global_one_is_sent() {
    let t = TestApp::with_env(&[("SYSTEM_PROMPT", "Default prompt.")]).await;
    t.say("c1", "hello").await;
    let bodies = t.openai.chat_bodies().await;
    assert_eq!(
        bodies[0]["messages"],
        json!([
            {"role": "system", "content": "Default prompt."},
            {"role": "user", "content": "hello"},
        ])
    );
}

#[tokio::test]
async fn transcript_lists_messages_in_order_and_is_empty_for_unknown_chats() {
    let t = TestApp::start().await;
    assert_eq!(t.transcript("never-used").await, json!([]));
    t.say("c1", "one").await;
    t.say("c1", "two").await;
    assert_eq!(
        t.transcript("c1").await,
        json!([
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "reply to: one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "reply to: two"},
        ])
    );
}

#[tokio::test]
async fn image_turn_goes_to_the_vision_model_as_text_and_image_parts() {
    let t = TestApp::with_env(&[("VISION_MODEL", "gpt-test-vision")]).await;
    t.say("c1", "hello").await;
    let url = "https://example.com/cat.png";
    let reply = t
        .post("/c1/img", json!({"content": "What is this?", "url": url}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["content"], "reply to: What is this?");
    assert_eq!(reply.json()["role"], "assistant");
    assert!(reply.json()["tokens"]["total_tokens"].is_u64());

    let bodies = t.openai.chat_bodies().await;
    assert_eq!(bodies[1]["model"], "gpt-test-vision");
    let messages = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "system, history of one turn, question");
    assert_eq!(messages[1], json!({"role": "user", "content": "hello"}));
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]})
    );
}

#[tokio::test]
async fn image_turn_joins_the_history_with_its_url() {
    let t = TestApp::start().await;
    let url = "https://example.com/cat.png";
    t.post("/c1/img", json!({"content": "What is this?", "url": url}))
        .await;
    t.say("c1", "What colour is it?").await;

    assert_eq!(
        t.transcript("c1").await,
        json!([
            {"role": "user", "content": "What is this?", "url": url},
            {"role": "assistant", "content": "reply to: What is this?"},
            {"role": "user", "content": "What colour is it?"},
            {"role": "assistant", "content": "reply to: What colour is it?"},
        ])
    );
    // The follow-up still shows the model the image it is about.
    let bodies = t.openai.chat_bodies().await;
    assert_eq!(
        bodies[1]["messages"][1]["content"][1],
        json!({"type": "image_url", "image_url": {"url": url}})
    );
}

#[tokio::test]
async fn moderation_result_is_passed_on_as_received() {
    let t = TestApp::with_env(&[("MODERATION_MODEL", "omni-test")]).await;
    let reply = t
        .post("/mod", json!({"content": "I want to hug my cat."}))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), moderation_result(false));

    let sent = t.openai.bodies("/v1/moderations").await;
    assert_eq!(
        sent,
        vec![json!({"model": "omni-test", "input": "I want to hug my cat."})]
    );
}

#[tokio::test]
async fn clear_drops_the_messages_but_keeps_the_prompt() {
    let t = TestApp::start().await;
    t.post("/c1/system", json!({"content": "Chat rules."}))
        .await;
    t.say("c1", "one").await;
    t.say("c2", "other chat").await;

    let cleared = t.post_raw("/c1/clear", "this body is ignored").await;
    assert_eq!((cleared.status, cleared.json()), (200, json!({})));
    assert_eq!(t.transcript("c1").await, json!([]));
    assert_eq!(
        t.get("/c1/system").await.json(),
        json!({"content": "Chat rules."})
    );
    assert_eq!(t.transcript("c2").await.as_array().unwrap().len(), 2);

    // The next turn starts afresh, with the prompt and without the old history.
    t.say("c1", "again").await;
    let last = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(last["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn chats_do_not_see_each_others_history() {
    let t = TestApp::start().await;
    t.say("alice", "secret of alice").await;
    t.say("bob", "hello").await;
    let last = t.openai.chat_bodies().await.pop().unwrap();
    assert!(!last.to_string().contains("secret of alice"));
    assert_eq!(t.transcript("bob").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn percent_encoded_chat_ids_are_the_same_chat() {
    let t = TestApp::start().await;
    t.say("user@example.com", "hello").await;
    let encoded = t.get("/user%40example.com/chat").await;
    assert_eq!(encoded.status, 200, "{}", encoded.text);
    assert_eq!(encoded.json().as_array().unwrap().len(), 2);

    let reply = t
        .post("/tenant%3Ac1/chat", json!({"content": "encoded"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("tenant:c1").await.as_array().unwrap().len(), 2);
    assert_eq!(
        t.redis
            .query(&["LLEN", "chat-proxy:chat:{tenant:c1}:turns"]),
        "1"
    );
}

#[tokio::test]
async fn head_is_answered_as_get_without_a_body() {
    let t = TestApp::start().await;
    t.say("c1", "hello").await;
    for path in ["/", "/system", "/c1/system", "/c1/chat"] {
        let get = t.get(path).await;
        let head = t
            .call(
                lambda_http::http::Method::HEAD,
                path,
                lambda_http::Body::Empty,
            )
            .await;
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        assert!(!get.text.is_empty(), "{path}");
        assert_eq!(head.text, "", "{path}");
    }
}

#[tokio::test]
async fn the_playground_is_served_without_a_key_with_its_headers_and_etag() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-a1")]).await;
    for (path, kind) in [
        ("/playground", "text/html"),
        ("/playground/app.js", "text/javascript"),
        ("/playground/style.css", "text/css"),
        ("/playground/icon.svg", "image/svg+xml"),
        ("/playground/markdown-it.min.js", "text/javascript"),
        ("/playground/purify.min.js", "text/javascript"),
        ("/playground/highlight.min.js", "text/javascript"),
        ("/playground/highlight-github.min.css", "text/css"),
        ("/playground/highlight-github-dark.min.css", "text/css"),
    ] {
        let page = t.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        assert!(
            page.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(page
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        let etag = page.header("etag").unwrap().to_owned();
        let again = t
            .call_with(
                Method::GET,
                path,
                lambda_http::Body::Empty,
                &[("if-none-match", &etag)],
            )
            .await;
        assert_eq!((again.status, again.text.as_str()), (304, ""), "{path}");
    }
    assert!(t
        .get("/playground")
        .await
        .text
        .contains(r#"<label for="message" class="visually-hidden">Message</label>"#));
    // The vendored libraries are the files as npm publishes them.
    let markdown = t.get("/playground/markdown-it.min.js").await.text;
    assert!(
        markdown.contains("e.markdownit=t()"),
        "markdown-it's browser build"
    );
    let purify = t.get("/playground/purify.min.js").await.text;
    assert!(purify.starts_with("/*! @license DOMPurify 3.5.0"));
    let highlighter = t.get("/playground/highlight.min.js").await.text;
    assert!(highlighter.starts_with("/*!\n  Highlight.js v11.12.0"));
}

#[tokio::test]
async fn playground_false_turns_the_page_off() {
    let t = TestApp::with_env(&[("PLAYGROUND", "false")]).await;
    t.get("/playground").await.assert_error(404, "not_found");
    for file in [
        "app.js",
        "markdown-it.min.js",
        "purify.min.js",
        "highlight.min.js",
        "highlight-github.min.css",
        "highlight-github-dark.min.css",
    ] {
        t.get(&format!("/playground/{file}"))
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(t.get("/").await.text, "Hello, World!");
}
