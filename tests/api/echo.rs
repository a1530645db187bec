//! The built-in echo upstream (`OPENAI_BASE_URL=echo`): every route works without a key or a
//! network, through the same engine, store and limits as OpenAI.

use std::time::Duration;

use serde_json::json;

use crate::support::{EventReader, TestApp};

async fn echo_app(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("OPENAI_BASE_URL", "echo")];
    env.extend_from_slice(extra);
    TestApp::with_env(&env).await
}

#[tokio::test]
async fn a_turn_is_echoed_stored_and_replayed_as_history() {
    let t = echo_app(&[]).await;
    let first = t.post("/c1/chat", json!({"content": "Hello there"})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.json(),
        json!({"content": "echo: Hello there (2 messages)", "role": "assistant",
               // The default prompt (5 words) and the question (2), and 3 for each message.
               "tokens": {"completion_tokens": 5, "prompt_tokens": 13, "total_tokens": 18, "cached_tokens": 0}})
    );
    // The same request costs the same tokens; the history is sent on the next turn.
    t.post("/c1/system", json!({"content": "Be nice."})).await;
    let second = t.post("/c1/chat", json!({"content": "Again"})).await;
    assert_eq!(second.json()["content"], "echo: Again (5 messages)");
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 4);
    assert!(
        t.openai.requests().await.is_empty(),
        "nothing reached the network's fake"
    );
}

#[tokio::test]
async fn an_image_turn_echoes_its_url() {
    let t = echo_app(&[]).await;
    let reply = t
        .post(
            "/c1/img",
            json!({"content": "What is it?", "url": "https://example.com/cat.png"}),
        )
        .await;
    assert_eq!(
        reply.json()["content"],
        "echo: What is it? (2 messages) [image: https://example.com/cat.png]"
    );
}

#[tokio::test]
async fn a_streamed_image_turn_streams_and_is_stored_with_its_url() {
    let t = echo_app(&[]).await;
    let reply = t
        .post(
            "/c1/img",
            json!({"content": "What is it?", "url": "https://example.com/cat.png", "stream": true}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = reply.events();
    let deltas: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| e.json()["content"].as_str().unwrap().to_owned())
        .collect();
    let expected = "echo: What is it? (2 messages) [image: https://example.com/cat.png]";
    assert!(
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("delta"))
            .count()
            > 1
    );
    assert_eq!(deltas.trim_end(), expected);
    let done = events.last().unwrap();
    assert_eq!(done.event.as_deref(), Some("done"));
    assert_eq!(done.json()["content"], expected);
    let transcript = t.transcript("c1").await;
    assert_eq!(transcript[0]["url"], "https://example.com/cat.png");
    assert_eq!(transcript[1]["content"], expected);
}

#[tokio::test]
async fn a_streamed_turn_comes_word_by_word() {
    let t = echo_app(&[]).await;
    let response = t
        .open(t.request(
            "/c1/chat",
            json!({"content": "one two three four"}),
            &[("accept", "text/event-stream")],
        ))
        .await;
    let events = EventReader::new(response.into_body()).rest().await;
    let deltas: Vec<(Duration, String)> = events
        .iter()
        .filter(|(_, e)| e.event.as_deref() == Some("delta"))
        .map(|(at, e)| (*at, e.json()["content"].as_str().unwrap().to_owned()))
        .collect();
    let words: Vec<&str> = deltas.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        words,
        [
            "echo: ",
            "one ",
            "two ",
            "three ",
            "four ",
            "(2 ",
            "messages)"
        ]
    );
    let spread = deltas.last().unwrap().0 - deltas[0].0;
    assert!(
        spread >= Duration::from_millis(300),
        "visibly streamed: {spread:?}"
    );
    let (_, done) = events.last().unwrap();
    assert_eq!(done.event.as_deref(), Some("done"));
    assert_eq!(
        done.json()["content"],
        "echo: one two three four (2 messages)"
    );
    assert_eq!(done.json()["tokens"]["completion_tokens"], 7);
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn moderation_is_unflagged_unless_marked() {
    let t = echo_app(&[]).await;
    let calm = t
        .post("/mod", json!({"content": "I love my cat."}))
        .await
        .json();
    assert_eq!(calm["results"][0]["flagged"], false);
    let marked = t
        .post("/mod", json!({"content": "I will [flag] you"}))
        .await
        .json();
    assert_eq!(marked["results"][0]["flagged"], true);
    assert_eq!(marked["model"], "omni-moderation-latest");
}

#[tokio::test]
async fn limits_apply_to_the_echo_as_to_openai() {
    let t = echo_app(&[("RATE_LIMIT_PER_MINUTE", "1")]).await;
    assert_eq!(
        t.post("/c1/chat", json!({"content": "one"})).await.status,
        200
    );
    t.post("/c1/chat", json!({"content": "two"}))
        .await
        .assert_error(429, "rate_limit_exceeded");
}

#[tokio::test]
async fn a_compacting_chat_gets_an_echo_summary_that_counts_the_messages_it_stands_for() {
    let t = echo_app(&[("MAX_PROMPT_TOKENS", "1000"), ("COMPACT_AT_TOKENS", "500")]).await;
    let question = |i: usize| format!("question {i} {}", "about the boats ".repeat(10));
    let mut compacted = Vec::new();
    for i in 0..20 {
        let reply = t.post("/long/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Some(cost) = reply.json()["tokens"].get("compaction") {
            compacted.push(cost["messages"].as_u64().unwrap());
        }
    }
    assert!(compacted.len() >= 2, "the window moved: {compacted:?}");
    // What the export shows is the newest summary: it says how many messages it stands
    // for, earlier summaries' included, and which questions they asked.
    let export = t.get("/long/export").await.json();
    let summary = export["compacted"]["summary"].as_str().unwrap();
    let newest = *compacted.last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "echo summary of {newest} messages; asked: \"question 0 "
        )),
        "{summary}"
    );
    assert_eq!(export["compacted"]["messages"], newest);
    assert!(
        compacted.windows(2).all(|pair| pair[1] > pair[0]),
        "{compacted:?}"
    );
}
