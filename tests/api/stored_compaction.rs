//! Compaction of stored chats (`COMPACT_AT_TOKENS`): when a turn's window moves, the turns
//! it moves past are compacted by one more upstream call (a summary on the seed routes and
//! `/v1/chat/completions`, `/responses/compact` on the Responses API), made once and sent in
//! the same place on every turn until the window moves again; a failed call leaves the turn
//! answered and cut as without compaction. Everything is read from what the fake OpenAI was
//! sent.

use chat_proxy::config::DEFAULT_COMPACT_PROMPT;
use lambda_http::http::Method;
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::Mock;

use crate::support::openai::{error_response, item_text, prompt_tokens, user_text, Counting};
use crate::support::{Reply, TestApp};

const SUMMARY_HEAD: &str = "Summary of the earlier part of this conversation";

fn question(i: usize) -> String {
    format!("Question {i}: tell me one more fact about the history of the harbour and its boats.")
}

/// A window of 1000 tokens that compacts, and a history long enough to keep every turn.
const COMPACTING: [(&str, &str); 3] = [
    ("MAX_PROMPT_TOKENS", "1000"),
    ("COMPACT_AT_TOKENS", "1000"),
    ("MAX_HISTORY_MESSAGES", "1000"),
];

async fn counting_app(extra: &[(&str, &str)]) -> TestApp {
    let mut env = COMPACTING.to_vec();
    env.extend_from_slice(extra);
    counting(TestApp::with_env(&env).await)
}

/// The app, its fake counting tokens as OpenAI does.
fn counting(t: TestApp) -> TestApp {
    t.openai.count(Counting {
        real_tokens: true,
        ..Counting::default()
    });
    t
}

fn is_summary_call(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .is_some_and(|last| last["role"] == "user" && user_text(last) == DEFAULT_COMPACT_PROMPT)
}

/// The summary a turn's request sent after its prompts, if any.
fn summary_sent(body: &Value) -> Option<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "system" && user_text(m).starts_with(SUMMARY_HEAD))
        .map(user_text)
}

/// The number in `Question <n>:` of the first user message of `messages`.
fn first_question(messages: &[Value]) -> usize {
    let first = messages
        .iter()
        .find(|m| m["role"] == "user")
        .map(user_text)
        .unwrap();
    first["Question ".len()..first.find(':').unwrap()]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_seed_chat_makes_its_summary_once_per_window_move_and_sends_it_until_the_next() {
    let t = counting_app(&[]).await;
    let mut compacting_replies = Vec::new();
    for i in 0..45 {
        let reply = t.post("/long/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "turn {i}: {}", reply.text);
        if reply.json()["tokens"].get("compaction").is_some() {
            compacting_replies.push((i, reply.json()["tokens"].clone()));
        }
    }
    let bodies = t.openai.chat_bodies().await;
    let turns: Vec<&Value> = bodies.iter().filter(|b| !is_summary_call(b)).collect();
    assert_eq!(turns.len(), 45, "one call per turn besides the summaries");
    let summaries = bodies.iter().filter(|b| is_summary_call(b)).count();
    assert!(
        summaries >= 2,
        "the window moved several times: {summaries} summaries"
    );

    let mut previous_summary: Option<String> = None;
    let mut summary_calls = 0;
    for (at, body) in bodies.iter().enumerate() {
        if is_summary_call(body) {
            summary_calls += 1;
            // The summary call: the earlier summary first (after the first), then the
            // turns the window moved past, then the prompt.
            let messages = body["messages"].as_array().unwrap();
            match &previous_summary {
                None => assert_eq!(messages[0]["role"], "user", "{messages:?}"),
                Some(summary) => assert_eq!(&user_text(&messages[0]), summary),
            }
            // Its turn follows at once, sends the summary it answered after the prompts,
            // and keeps the turns from the one after the last it summarized.
            let turn = &bodies[at + 1];
            assert!(!is_summary_call(turn), "one summary per move");
            let answered = format!("reply to: {DEFAULT_COMPACT_PROMPT}");
            let sent = summary_sent(turn).expect("the turn sends the new summary");
            assert!(sent.ends_with(&answered), "{sent}");
            let turn_messages = turn["messages"].as_array().unwrap();
            assert_eq!(turn_messages[0]["role"], "system");
            assert_eq!(user_text(&turn_messages[1]), sent, "in a fixed place");
            let summarized = &messages[..messages.len() - 1];
            let last_summarized = summarized
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(user_text)
                .unwrap();
            let last: usize = last_summarized
                ["Question ".len()..last_summarized.find(':').unwrap()]
                .parse()
                .unwrap();
            assert_eq!(first_question(&turn_messages[2..]), last + 1);
            assert!(prompt_tokens(turn_messages) <= 1000);
            previous_summary = Some(sent);
            continue;
        }
        // A turn that did not move its window sends the summary it was sent last time.
        let after_summary = at > 0 && is_summary_call(&bodies[at - 1]);
        if !after_summary {
            assert_eq!(summary_sent(body), previous_summary, "request {at}");
        }
        assert!(prompt_tokens(body["messages"].as_array().unwrap()) <= 1000);
    }
    assert_eq!(summary_calls, summaries);

    // Each compacting turn says what its summary cost; the others say nothing of it.
    assert_eq!(compacting_replies.len(), summaries);
    for (i, tokens) in &compacting_replies {
        let cost = &tokens["compaction"];
        assert!(
            cost["prompt_tokens"].as_u64().unwrap() > 0,
            "turn {i}: {cost}"
        );
        assert!(cost["completion_tokens"].as_u64().unwrap() > 0, "{cost}");
        assert!(cost["ms"].is_u64(), "{cost}");
        assert!(cost["messages"].as_u64().unwrap() >= 2, "{cost}");
    }

    // The whole history is kept and shown; the export shows the summary sent now.
    let transcript = t.transcript("long").await;
    assert_eq!(transcript.as_array().unwrap().len(), 90, "{transcript}");
    let export = t.get("/long/export").await.json();
    let compacted = &export["compacted"];
    let summary = compacted["summary"].as_str().unwrap();
    assert_eq!(
        Some(format!(
            "{SUMMARY_HEAD}, whose messages are no longer sent:\n\n{summary}"
        )),
        previous_summary
    );
    let ids: Vec<&str> = export["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&compacted["before"].as_str().unwrap()));
}

#[tokio::test]
async fn what_a_summary_cost_is_counted_in_the_chats_usage_and_the_callers_day() {
    let t = counting_app(&[]).await;
    let mut spent = 0;
    for i in 0..30 {
        let reply = t
            .post("/costly/chat", json!({"content": question(i)}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let tokens = &reply.json()["tokens"];
        spent += tokens["total_tokens"].as_u64().unwrap();
        if let Some(cost) = tokens.get("compaction") {
            spent += cost["total_tokens"].as_u64().unwrap();
        }
    }
    let summaries: u64 = t
        .openai
        .chat_bodies()
        .await
        .iter()
        .filter(|b| is_summary_call(b))
        .count() as u64;
    assert!(summaries >= 1, "the window moved");
    let usage = t.get("/usage").await.json();
    assert_eq!(
        usage["day"]["total_tokens"].as_u64().unwrap(),
        spent,
        "{usage}"
    );
    let chat = t.get("/costly/usage").await.json();
    assert_eq!(chat["total_tokens"].as_u64().unwrap(), spent, "{chat}");
}

#[tokio::test]
async fn a_failed_summary_still_answers_the_turn_which_is_cut_as_without_compaction() {
    let t = counting_app(&[]).await;
    // Every summary call is refused (a 400: not tried again).
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("Summarize the conversation so far"))
        .respond_with(error_response(
            400,
            "invalid_request_error",
            "no summaries today",
        ))
        .with_priority(1)
        .mount(&t.openai.server)
        .await;
    for i in 0..30 {
        let reply = t.post("/cut/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "turn {i}: {}", reply.text);
        assert!(reply.json()["tokens"].get("compaction").is_none());
    }
    let bodies = t.openai.chat_bodies().await;
    let attempts: Vec<usize> = (0..bodies.len())
        .filter(|&at| is_summary_call(&bodies[at]))
        .collect();
    assert!(
        !attempts.is_empty(),
        "the window moved and a summary was asked"
    );
    for at in attempts {
        // The turn went on at once, cut, with no summary.
        let turn = &bodies[at + 1];
        assert!(!is_summary_call(turn));
        assert_eq!(summary_sent(turn), None);
        assert!(first_question(&turn["messages"].as_array().unwrap()[1..]) > 0);
    }
    // Only when the window moves: 30 turns, a handful of tries.
    assert_eq!(
        bodies.len() - 30,
        bodies.iter().filter(|b| is_summary_call(b)).count()
    );
    assert!(
        bodies.len() - 30 <= 4,
        "{} summaries asked",
        bodies.len() - 30
    );
    assert_eq!(t.get("/cut/export").await.json()["compacted"], Value::Null);
}

#[tokio::test]
async fn without_compact_at_tokens_no_summary_is_ever_asked() {
    let t = TestApp::with_env(&[
        ("MAX_PROMPT_TOKENS", "1000"),
        ("MAX_HISTORY_MESSAGES", "1000"),
    ])
    .await;
    t.openai.count(Counting {
        real_tokens: true,
        ..Counting::default()
    });
    for i in 0..30 {
        let reply = t.post("/plain/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let bodies = t.openai.chat_bodies().await;
    assert_eq!(bodies.len(), 30);
    // The window did move: the last request no longer starts at the first question.
    let last = bodies.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert!(first_question(&last) > 0);
    assert!(bodies.iter().all(|b| summary_sent(b).is_none()));
}

#[tokio::test]
async fn chat_completions_report_the_compaction_in_their_usage_buffered_and_streamed() {
    let t = counting_app(&[]).await;
    let mut buffered = None;
    let mut streamed = None;
    for i in 0..60 {
        let stream = i % 2 == 1;
        let body = json!({"model": "gpt-4o-mini", "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": question(i)}]});
        let reply = t
            .call_with(
                Method::POST,
                "/v1/chat/completions",
                lambda_http::Body::from(body.to_string()),
                &[("x-chat-id", "sdk")],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let usage = match stream {
            false => reply.json()["usage"].clone(),
            true => {
                t.app.settle().await;
                reply
                    .events()
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                    .find(|chunk| chunk["usage"].is_object())
                    .map(|chunk| chunk["usage"].clone())
                    .expect("a usage chunk")
            }
        };
        if let Some(cost) = usage.get("compaction") {
            match stream {
                false => buffered = buffered.or(Some(cost.clone())),
                true => streamed = streamed.or(Some(cost.clone())),
            }
        }
    }
    for cost in [
        buffered.expect("a buffered turn compacted"),
        streamed.expect("a streamed one"),
    ] {
        assert!(cost["prompt_tokens"].as_u64().unwrap() > 0, "{cost}");
        assert_eq!(
            cost["total_tokens"].as_u64().unwrap(),
            cost["prompt_tokens"].as_u64().unwrap() + cost["completion_tokens"].as_u64().unwrap()
        );
    }
}

async fn post(t: &TestApp, path: &str, body: Value) -> Reply {
    t.call_with(
        Method::POST,
        path,
        lambda_http::Body::from(body.to_string()),
        &[],
    )
    .await
}

#[tokio::test]
async fn a_conversation_is_compacted_by_responses_compact_once_per_window_move() {
    let t = counting_app(&[]).await;
    let made = post(&t, "/v1/conversations", json!({})).await;
    assert_eq!(made.status, 200, "{}", made.text);
    let conversation = made.json()["id"].as_str().unwrap().to_owned();
    for i in 0..30 {
        let reply = post(
            &t,
            "/v1/responses",
            json!({"input": question(i), "conversation": conversation}),
        )
        .await;
        assert_eq!(reply.status, 200, "turn {i}: {}", reply.text);
    }
    let requests = t.openai.requests().await;
    let calls: Vec<(String, Value)> = requests
        .iter()
        .map(|r| {
            (
                r.url.path().to_owned(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect();
    let compactions: Vec<usize> = (0..calls.len())
        .filter(|&at| calls[at].0 == "/v1/responses/compact")
        .collect();
    assert!(!compactions.is_empty(), "the window moved");
    let (mut kept, mut dropped) = (0, 0);
    assert_eq!(calls.len() - compactions.len(), 30, "one response per turn");
    for &at in &compactions {
        let (_, compact) = &calls[at];
        let input = compact["input"].as_array().unwrap();
        assert!(input
            .iter()
            .any(|item| item_text(item).starts_with("Question ")));
        assert!(
            compact.get("store").is_none(),
            "a compaction keeps nothing anyway"
        );
        // Its turn follows, and sends the compaction's item after the prompts.
        let (path, turn) = &calls[at + 1];
        assert_eq!(path, "/v1/responses");
        assert_eq!(turn["store"], false);
        let sent = turn["input"].as_array().unwrap();
        // A compaction keeps the user's messages whole: one that leaves the turns to come
        // too little room is not kept, and its turn is cut alone.
        let Some(compaction) = sent.iter().position(|item| item["type"] == "compaction") else {
            dropped += 1;
            continue;
        };
        kept += 1;
        // After the prompts, in the place of the turns it stands for: the user messages
        // it kept, then the compaction item.
        assert_eq!(sent[0]["role"], "system");
        assert!(sent[1..compaction]
            .iter()
            .all(|item| item["role"] == "user"));
        // Reused, unchanged, until the next move.
        let next_move = compactions
            .iter()
            .find(|&&c| c > at)
            .copied()
            .unwrap_or(calls.len());
        for (_, later) in &calls[at + 2..next_move] {
            let item = later["input"]
                .as_array()
                .unwrap()
                .iter()
                .find(|item| item["type"] == "compaction")
                .cloned();
            assert_eq!(item.as_ref(), Some(&sent[compaction]));
        }
    }
    assert!(
        kept >= 1,
        "{kept} compactions kept, {dropped} too long to keep"
    );
    // Every item is still listed.
    let items = t
        .get(&format!("/v1/conversations/{conversation}/items?limit=100"))
        .await
        .json();
    assert_eq!(items["data"].as_array().unwrap().len(), 60, "{items}");
    assert_eq!(items["has_more"], false);
}

#[tokio::test]
async fn a_sealed_chats_summary_is_sealed_in_redis_and_reads_back() {
    let key = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let t = counting_app(&[("SEAL_KEYS", key)]).await;
    for i in 0..25 {
        let reply = t
            .post("/sealed/chat", json!({"content": question(i)}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let export = t.get("/sealed/export").await.json();
    let summary = export["compacted"]["summary"]
        .as_str()
        .expect("compacted")
        .to_owned();
    assert!(summary.starts_with("reply to: "), "{summary}");
    let stored: String = t
        .dump()
        .into_iter()
        .map(|(key, value)| format!("{key} {value}"))
        .collect();
    assert!(stored.contains("compacted"), "the field is kept");
    assert!(
        !stored.contains("reply to: "),
        "nothing said is in Redis in the clear"
    );
}

#[tokio::test]
async fn with_compaction_on_every_turn_still_costs_two_redis_round_trips() {
    let t = counting(TestApp::over_relay(&COMPACTING).await);
    let mut compacting = 0;
    let mut after_a_summary = 0;
    for i in 0..30 {
        let turn = async {
            let reply = t.post("/trips/chat", json!({"content": question(i)})).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply
        };
        let (trips, reply) = crate::turns::round_trips_with(&t, turn).await;
        crate::turns::assert_trips(trips, 2, &format!("turn {i}"));
        match reply.json()["tokens"].get("compaction") {
            Some(_) => compacting += 1,
            None if summary_sent(t.openai.chat_bodies().await.last().unwrap()).is_some() => {
                after_a_summary += 1
            }
            None => {}
        }
    }
    // The setup did what it should: turns compacted, and turns sent a summary made before.
    assert!(compacting >= 1, "{compacting} turns compacted");
    assert!(
        after_a_summary >= 5,
        "{after_a_summary} turns sent a kept summary"
    );
}

#[tokio::test]
async fn a_turn_that_fails_after_its_compaction_still_counts_what_the_compaction_cost() {
    let t = counting_app(&[("COMPACT_MODEL", "gpt-4.1-nano")]).await;
    // Find where the window moves: the same turns on a chat of their own.
    let mut turn = 0;
    loop {
        let reply = t
            .post("/probe/chat", json!({"content": question(turn)}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.json()["tokens"].get("compaction").is_some() {
            break;
        }
        turn += 1;
        assert!(turn < 40, "the window never moved");
    }
    for i in 0..turn {
        let reply = t.post("/fails/chat", json!({"content": question(i)})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let before = t.get("/usage").await.json()["day"]["models"].clone();
    let summaries_before = t
        .openai
        .chat_bodies()
        .await
        .iter()
        .filter(|b| is_summary_call(b))
        .count();
    // The turn's own call (the one that sends its new question) is refused; its summary
    // call is answered.
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(format!("Question {turn}:")))
        .respond_with(error_response(400, "invalid_request_error", "not this one"))
        .with_priority(1)
        .mount(&t.openai.server)
        .await;
    let failed = t
        .post("/fails/chat", json!({"content": question(turn)}))
        .await;
    assert_eq!(failed.status, 400, "{}", failed.text);
    let bodies = t.openai.chat_bodies().await;
    let summaries = bodies.iter().filter(|b| is_summary_call(b)).count();
    assert_eq!(
        summaries,
        summaries_before + 1,
        "the failed turn compacted first"
    );
    let summary_call = bodies.iter().rev().find(|b| is_summary_call(b)).unwrap();
    assert_eq!(summary_call["model"], "gpt-4.1-nano");
    // What it cost is the caller's, under the model that compacted; nothing of the turn
    // was stored.
    let after = t.get("/usage").await.json()["day"]["models"].clone();
    let nano = |models: &Value| {
        models["gpt-4.1-nano"]["prompt_tokens"]
            .as_u64()
            .unwrap_or(0)
    };
    let expected =
        crate::support::openai::prompt_tokens(summary_call["messages"].as_array().unwrap());
    assert_eq!(nano(&after) - nano(&before), expected, "{after}");
    assert_eq!(
        after["gpt-4o-mini"], before["gpt-4o-mini"],
        "the turn's model: nothing"
    );
    assert_eq!(
        t.transcript("fails").await.as_array().unwrap().len(),
        2 * turn
    );
}

#[tokio::test]
async fn deleting_an_item_the_compaction_stands_for_drops_the_compaction() {
    let t = counting_app(&[]).await;
    let conversation = post(&t, "/v1/conversations", json!({})).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut turns = 0;
    loop {
        let reply = post(
            &t,
            "/v1/responses",
            json!({"input": question(turns), "conversation": conversation}),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        turns += 1;
        if reply.json()["usage"].get("compaction").is_some() {
            break;
        }
        assert!(turns < 40, "the window never moved");
    }
    let export = t.get(&format!("/{conversation}/export")).await.json();
    assert!(
        export["compacted"]["items"].is_array(),
        "{}",
        export["compacted"]
    );
    // The first question's item, which the compaction stands for, is deleted.
    let items = t
        .get(&format!(
            "/v1/conversations/{conversation}/items?order=asc&limit=1"
        ))
        .await
        .json();
    let first = items["data"][0]["id"].as_str().unwrap().to_owned();
    let deleted = t
        .call_with(
            Method::DELETE,
            &format!("/v1/conversations/{conversation}/items/{first}"),
            lambda_http::Body::Empty,
            &[],
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let export = t.get(&format!("/{conversation}/export")).await.json();
    assert_eq!(export["compacted"], Value::Null);
    let next = post(
        &t,
        "/v1/responses",
        json!({"input": "and now?", "conversation": conversation}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let sent = t.openai.bodies("/v1/responses").await;
    let input = sent.last().unwrap()["input"].as_array().unwrap().clone();
    assert!(
        input.iter().all(|item| item["type"] != "compaction"),
        "{input:?}"
    );
    assert!(input.iter().all(|item| item_text(item) != question(0)));
}
