//! The context budget: a chat that grows past MAX_PROMPT_TOKENS keeps working, sends its
//! newest turns, keeps the prefix of its requests stable between cuts, and recovers when
//! upstream's own context is smaller. The fake upstream counts tokens as OpenAI does.

use serde_json::{json, Value};

use crate::support::openai::{count_tokens, prompt_tokens, Counting};
use crate::support::TestApp;

const BUDGET: u64 = 1000;

fn question(i: usize) -> String {
    format!("Question {i}: tell me one more fact about the history of the harbour and its boats.")
}

async fn counting_app(extra: &[(&str, &str)]) -> TestApp {
    let t = TestApp::with_env(extra).await;
    t.openai.count(Counting {
        real_tokens: true,
        ..Counting::default()
    });
    t
}

/// The messages of each request sent upstream, in order.
async fn sent_messages(t: &TestApp) -> Vec<Vec<Value>> {
    t.openai
        .chat_bodies()
        .await
        .into_iter()
        .map(|body| body["messages"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn a_chat_of_300_turns_never_fails_and_sends_its_newest_turns_within_budget() {
    let t = counting_app(&[
        ("MAX_PROMPT_TOKENS", "1000"),
        ("MAX_HISTORY_MESSAGES", "1000"),
    ])
    .await;
    for i in 0..300 {
        let reply = t.post("/long/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "turn {i}: {}", reply.text);
    }
    let requests = sent_messages(&t).await;
    assert_eq!(
        requests.len(),
        300,
        "one upstream call per turn, none refused"
    );
    for (i, messages) in requests.iter().enumerate() {
        let tokens = prompt_tokens(messages);
        assert!(tokens <= BUDGET, "request {i} sent {tokens} tokens");
        // The newest turns: the history sent ends with the turn just before.
        if i > 0 {
            let n = messages.len();
            assert_eq!(messages[n - 1]["content"], question(i));
            assert_eq!(messages[n - 3]["content"], question(i - 1));
            assert_eq!(
                messages[n - 2]["content"],
                format!("reply to: {}", question(i - 1))
            );
        }
    }
    // Every turn is stored (the cut only limits what is sent).
    assert_eq!(t.transcript("long").await.as_array().unwrap().len(), 600);
    // Late requests send far more than a token or two of history: the budget is used.
    let last = prompt_tokens(requests.last().unwrap());
    assert!(
        last > BUDGET / 2,
        "the last request sent only {last} tokens"
    );
}

#[tokio::test]
async fn between_cuts_each_request_repeats_the_previous_one_as_its_prefix() {
    let t = counting_app(&[("MAX_PROMPT_TOKENS", "1000")]).await;
    for i in 0..120 {
        t.say("stable", &question(i)).await;
    }
    let requests = sent_messages(&t).await;
    let mut cuts = 0;
    for pair in requests.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        // The same prefix: everything sent before, then its reply, then the new question.
        if after.len() == before.len() + 2 && after[..before.len()] == before[..] {
            continue;
        }
        cuts += 1;
        // A cut drops history from the front, in one step that leaves room for later turns.
        let tokens = prompt_tokens(after);
        assert!(tokens <= BUDGET * 3 / 4 + 60, "a cut left {tokens} tokens");
    }
    assert!(
        cuts >= 3,
        "the budget was reached several times: {cuts} cuts"
    );
    assert!(
        cuts * 4 <= requests.len(),
        "{cuts} cuts in {} requests: the prefix must hold between cuts",
        requests.len()
    );
}

#[tokio::test]
async fn an_upstream_context_smaller_than_the_budget_is_recovered_from() {
    let t = counting_app(&[("MAX_PROMPT_TOKENS", "4000")]).await;
    t.openai.count(Counting {
        real_tokens: true,
        context_window: Some(700),
        ..Counting::default()
    });
    for i in 0..60 {
        let reply = t.post("/small/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "turn {i}: {}", reply.text);
    }
    let requests = sent_messages(&t).await;
    let refused: Vec<&Vec<Value>> = requests.iter().filter(|m| prompt_tokens(m) > 700).collect();
    assert!(
        !refused.is_empty(),
        "upstream refused some requests as too long"
    );
    // Each refusal was followed by one retry with at most half the history, which fit.
    assert!(requests.len() <= 60 + refused.len());
    for (i, messages) in requests.iter().enumerate() {
        if prompt_tokens(messages) > 700 {
            let retry = &requests[i + 1];
            assert!(
                prompt_tokens(retry) <= 700,
                "the retry after request {i} fit"
            );
            assert!(retry.len() < messages.len());
        }
    }
}

#[tokio::test]
async fn a_message_that_alone_exceeds_the_budget_is_refused_without_an_upstream_call() {
    let t = counting_app(&[("MAX_PROMPT_TOKENS", "1000")]).await;
    t.say("c1", "kept").await;
    let before = t.dump();
    let long = "word ".repeat(1500);
    let reply = t.post("/c1/chat", json!({"content": long})).await;
    reply.assert_error(400, "message_too_long");
    assert_eq!(t.openai.chat_bodies().await.len(), 1);
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn cached_tokens_are_reported_with_the_turns_tokens() {
    let t = counting_app(&[]).await;
    t.openai.count(Counting {
        real_tokens: true,
        cached_tokens: 1024,
        ..Counting::default()
    });
    let reply = t.post("/c1/chat", json!({"content": "hello"})).await;
    let tokens = &reply.json()["tokens"];
    let prompt = tokens["prompt_tokens"].as_u64().unwrap();
    assert_eq!(tokens["cached_tokens"], prompt.min(1024));
    // The older proxy's three fields first, in their order, then the added one.
    let at = |field: &str| reply.text.find(&format!("\"{field}\"")).unwrap();
    assert!(at("completion_tokens") < at("prompt_tokens"));
    assert!(at("prompt_tokens") < at("total_tokens"));
    assert!(at("total_tokens") < at("cached_tokens"));
}

#[tokio::test]
async fn turns_carry_exact_sizes_once_their_request_chain_is_known() {
    let t = counting_app(&[]).await;
    for i in 0..5 {
        t.say("exact", &question(i)).await;
    }
    let stored = t
        .redis
        .query(&["LRANGE", "chat-proxy:chat:{exact}:turns", "0", "-1"]);
    let turns: Vec<Value> = stored
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The first turn's question is estimated; every later turn's size is upstream's own
    // count of the turn as history: its question and its reply, each with its framing.
    // (`tokens` is stored as `[size, exact, prompt, completion, cached, answer, sent]`.)
    assert_eq!(turns[0]["tokens"][1], 0, "not exact");
    for (i, turn) in turns.iter().enumerate().skip(1) {
        assert_eq!(turn["tokens"][1], 1, "turn {i} exact");
        let truth = 3
            + count_tokens(&question(i))
            + 3
            + count_tokens(&format!("reply to: {}", question(i)));
        assert_eq!(turn["tokens"][0], truth, "turn {i}");
    }
}

#[tokio::test]
async fn streamed_turns_keep_within_the_budget_too() {
    let t = counting_app(&[("MAX_PROMPT_TOKENS", "1000")]).await;
    for i in 0..80 {
        let reply = t
            .post(
                "/streamed/chat",
                json!({"content": question(i), "stream": true}),
            )
            .await;
        let done = reply.events().pop().unwrap();
        assert_eq!(
            done.event.as_deref(),
            Some("done"),
            "turn {i}: {}",
            reply.text
        );
    }
    let requests = sent_messages(&t).await;
    assert!(requests.iter().all(|m| prompt_tokens(m) <= BUDGET));
    // All 80 stored; the newest 50 kept (MAX_HISTORY_MESSAGES, 100).
    assert_eq!(
        t.transcript("streamed").await.as_array().unwrap().len(),
        100
    );
}
