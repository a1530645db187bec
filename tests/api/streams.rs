//! Streamed turns, tested over time: an upstream that sends its chunks with pauses, a client
//! that reads events as they come, and one that leaves halfway.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::openai::{error_response, rate_limited};
use crate::support::streaming::{Fault, StreamScript};
use crate::support::{EventReader, SseEvent, TestApp};

const QUESTION: &str = "name the planets of the solar system in their order from the sun";

fn slow(pause_ms: u64) -> StreamScript {
    StreamScript {
        pause: Duration::from_millis(pause_ms),
        ..StreamScript::default()
    }
}

/// The events of a streamed turn, with the deltas' text joined.
struct Streamed {
    deltas: Vec<(Duration, String)>,
    last: SseEvent,
    last_at: Duration,
    comments: Vec<Duration>,
}

async fn read_turn(reader: &mut EventReader) -> Streamed {
    let mut deltas = Vec::new();
    let mut comments = Vec::new();
    loop {
        let (at, event) = reader
            .next()
            .await
            .expect("the stream ends with done or error");
        match event.event.as_deref() {
            Some("delta") => {
                deltas.push((at, event.json()["content"].as_str().unwrap().to_owned()))
            }
            Some(":") => comments.push(at),
            Some("done" | "error") => {
                assert!(reader.next().await.is_none(), "nothing after {event:?}");
                return Streamed {
                    deltas,
                    last: event,
                    last_at: at,
                    comments,
                };
            }
            other => panic!("unexpected event {other:?}: {event:?}"),
        }
    }
}

async fn user_questions(t: &TestApp, chat: &str) -> Vec<String> {
    t.transcript(chat)
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn deltas_arrive_over_time_in_order_and_done_is_their_sum() {
    let t = TestApp::start().await;
    t.openai.script(slow(40));
    let response = t
        .open(t.request(
            "/c1/chat",
            json!({"content": QUESTION}),
            &[("accept", "text/event-stream")],
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut reader = EventReader::new(response.into_body());
    let streamed = read_turn(&mut reader).await;

    let expected = format!("reply to: {QUESTION}");
    let words = expected.split(' ').count();
    assert_eq!(streamed.deltas.len(), words, "one delta per word");
    let joined: String = streamed.deltas.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(joined, expected);
    // Read as they came: the first delta long before the last one, which precedes done.
    let (first, last) = (streamed.deltas[0].0, streamed.deltas[words - 1].0);
    assert!(
        last - first >= Duration::from_millis(40 * (words as u64 - 2)),
        "{first:?} {last:?}"
    );
    assert!(streamed.last_at >= last);

    assert_eq!(streamed.last.event.as_deref(), Some("done"));
    let done = streamed.last.json();
    assert_eq!(done["content"], expected);
    assert_eq!(done["role"], "assistant");
    assert_eq!(done["tokens"]["completion_tokens"], 5);
    assert_eq!(done["tokens"]["prompt_tokens"], 2);
    assert_eq!(done["tokens"]["total_tokens"], 7);
    assert_eq!(
        done.as_object().unwrap().len(),
        3,
        "the buffered answer's fields: {done}"
    );

    let sent = &t.openai.chat_bodies().await[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(user_questions(&t, "c1").await, [QUESTION]);
    assert_eq!(t.transcript("c1").await[1]["content"], expected);
}

#[tokio::test]
async fn stream_true_in_the_body_streams_too_and_images_go_to_the_vision_model() {
    let t = TestApp::with_env(&[("VISION_MODEL", "gpt-test-vision")]).await;
    let reply = t
        .post(
            "/c1/img",
            json!({"content": "what is it?", "url": "https://example.com/cat.png", "stream": true}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = reply.events();
    assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
    assert_eq!(
        events.last().unwrap().json()["content"],
        "reply to: what is it?"
    );
    let sent = &t.openai.chat_bodies().await[0];
    assert_eq!(sent["model"], "gpt-test-vision");
    assert_eq!(sent["messages"][1]["content"][1]["type"], "image_url");
    assert_eq!(
        t.transcript("c1").await[0]["url"],
        "https://example.com/cat.png"
    );
}

#[tokio::test]
async fn without_asking_the_answer_is_the_seeds_json() {
    let t = TestApp::start().await;
    for body in [
        json!({"content": "hi"}),
        json!({"content": "hi", "stream": false}),
    ] {
        let reply = t.post("/c1/chat", body).await;
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json()["content"], "reply to: hi");
    }
    assert!(t
        .openai
        .chat_bodies()
        .await
        .iter()
        .all(|b| b.get("stream").is_none()));
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_is_an_error_event_and_nothing_is_stored() {
    let t = TestApp::start().await;
    t.say("c1", "kept").await;
    for fault in [Fault::CutAfter(2), Fault::EndAfter(2), Fault::ErrorAfter(2)] {
        t.openai.script(StreamScript { fault, ..slow(10) });
        let reply = t
            .post("/c1/chat", json!({"content": QUESTION, "stream": true}))
            .await;
        assert_eq!(reply.status, 200, "{fault:?}");
        let events = reply.events();
        let deltas = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("delta"))
            .count();
        assert_eq!(deltas, 2, "{fault:?}: {events:?}");
        let last = events.last().unwrap();
        assert_eq!(last.event.as_deref(), Some("error"), "{fault:?}");
        assert_eq!(last.json()["error"]["code"], "upstream_error", "{fault:?}");
        assert!(!events.iter().any(|e| e.event.as_deref() == Some("done")));
    }
    assert_eq!(user_questions(&t, "c1").await, ["kept"], "nothing stored");
    // A stream that has begun is never asked again: one request per fault, after the
    // one that stored "kept".
    assert_eq!(t.openai.chat_bodies().await.len(), 4, "no retry mid-stream");
}

#[tokio::test]
async fn a_server_error_before_the_stream_begins_is_retried_and_the_turn_streams() {
    let t = TestApp::start().await;
    t.openai
        .fail_chat(error_response(503, "server_error", "overloaded"), 1)
        .await;
    t.openai.script(slow(5));
    let reply = t
        .post("/c1/chat", json!({"content": QUESTION, "stream": true}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = reply.events();
    assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        2,
        "refused once, then streamed"
    );
    assert_eq!(user_questions(&t, "c1").await, [QUESTION], "stored once");
}

#[tokio::test]
async fn a_silent_upstream_gets_keep_alive_comments() {
    let t = TestApp::with_env(&[("KEEP_ALIVE_SECONDS", "1")]).await;
    t.openai.script(StreamScript {
        first_delay: Duration::from_millis(2600),
        ..slow(5)
    });
    let response = t
        .open(t.request(
            "/c1/chat",
            json!({"content": "think hard", "stream": true}),
            &[],
        ))
        .await;
    let mut reader = EventReader::new(response.into_body());
    let streamed = read_turn(&mut reader).await;
    assert!(streamed.comments.len() >= 2, "{:?}", streamed.comments);
    assert!(
        streamed.comments[0] < Duration::from_millis(1500),
        "{:?}",
        streamed.comments
    );
    assert!(streamed
        .comments
        .iter()
        .all(|at| *at < streamed.deltas[0].0));
    assert_eq!(streamed.last.event.as_deref(), Some("done"));
    assert_eq!(user_questions(&t, "c1").await, ["think hard"]);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_its_turn_stored() {
    let t = TestApp::start().await;
    t.openai.script(slow(60));
    let response = t
        .open(t.request(
            "/c1/chat",
            json!({"content": QUESTION, "stream": true}),
            &[],
        ))
        .await;
    let mut reader = EventReader::new(response.into_body());
    let (_, first) = reader.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("delta"));
    drop(reader);
    // Nothing is stored yet: upstream is still writing the reply.
    assert!(t.transcript("c1").await.as_array().unwrap().is_empty());
    // What the Lambda runtime does before the next invocation: wait for the turn.
    tokio::time::timeout(Duration::from_secs(10), t.app.settle())
        .await
        .expect("the turn finished");
    let transcript = t.transcript("c1").await;
    assert_eq!(transcript[0]["content"], QUESTION);
    assert_eq!(transcript[1]["content"], format!("reply to: {QUESTION}"));
}

#[tokio::test]
async fn a_v1_turn_stores_nothing_when_upstream_cuts_and_everything_when_the_client_leaves() {
    let t = TestApp::start().await;
    let turn = |question: &str| {
        t.request(
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": question}]}),
            &[("x-chat-id", "c1")],
        )
    };
    // Upstream cut after two chunks: the caller's stream ends with an error, no [DONE].
    t.openai.script(StreamScript {
        fault: Fault::CutAfter(2),
        ..slow(10)
    });
    let reply = t.send(turn("cut short")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.text.contains("chat.completion.chunk"),
        "it streamed: {}",
        reply.text
    );
    let last = reply.events().pop().unwrap();
    assert_eq!(
        last.json()["error"]["code"],
        "upstream_error",
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("[DONE]"));
    assert!(
        t.transcript("c1").await.as_array().unwrap().is_empty(),
        "nothing stored"
    );

    // A caller that leaves after the first chunk: the turn is stored all the same.
    t.openai.script(slow(60));
    let response = t.open(turn(QUESTION)).await;
    let mut reader = EventReader::new(response.into_body());
    let (_, first) = reader.next().await.unwrap();
    assert_eq!(first.json()["object"], "chat.completion.chunk");
    drop(reader);
    tokio::time::timeout(Duration::from_secs(10), t.app.settle())
        .await
        .expect("the turn finished");
    let transcript = t.transcript("c1").await;
    assert_eq!(transcript[0]["content"], QUESTION);
    assert_eq!(transcript[1]["content"], format!("reply to: {QUESTION}"));
    assert_eq!(transcript.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn what_fails_before_the_stream_keeps_its_status_and_json() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-a1")]).await;
    let sse = [
        ("accept", "text/event-stream"),
        ("authorization", "Bearer sk-a1"),
    ];
    let cases = [
        (
            t.request("/c1/chat", json!({"content": ""}), &sse),
            400,
            "invalid_content",
        ),
        (
            t.request("/c1/chat", json!({"content": "x", "stream": 1}), &sse),
            400,
            "invalid_stream",
        ),
        (
            t.request(
                "/c1/chat",
                json!({"content": "x"}),
                &[("accept", "text/event-stream")],
            ),
            401,
            "invalid_api_key",
        ),
        (
            t.request("/..%2F/chat", json!({"content": "x"}), &sse),
            400,
            "invalid_chat_id",
        ),
    ];
    for (request, status, code) in cases {
        let reply = t.send(request).await;
        reply.assert_error(status, code);
    }
    // Upstream refusing before it streams: its status, as a buffered turn gets it.
    t.openai.fail_chat(rate_limited(60), 1).await;
    let reply = t
        .send(t.request("/c1/chat", json!({"content": "x"}), &sse))
        .await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.header("retry-after"), Some("60"));
    t.openai
        .fail_chat(
            error_response(400, "invalid_request_error", "bad request"),
            1,
        )
        .await;
    let reply = t
        .send(t.request("/c1/chat", json!({"content": "x"}), &sse))
        .await;
    reply.assert_error(400, "upstream_rejected");
    // Upstream failing past its retries before it streams: the buffered turn's 502.
    t.openai
        .fail_chat(error_response(500, "server_error", "boom"), 3)
        .await;
    let reply = t
        .send(t.request("/c1/chat", json!({"content": "x"}), &sse))
        .await;
    reply.assert_error(502, "upstream_error");
    assert!(t.keys().is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_not_a_stream() {
    let t = TestApp::with_env(&[("MAX_BODY_BYTES", "1024")]).await;
    let reply = t
        .send(t.request(
            "/c1/chat",
            json!({"content": "x".repeat(2000), "stream": true}),
            &[("accept", "text/event-stream")],
        ))
        .await;
    reply.assert_error(413, "body_too_large");
    assert!(t.openai.chat_bodies().await.is_empty());
    assert!(t.keys().is_empty(), "nothing stored");
}

#[tokio::test]
async fn redis_down_before_a_stream_is_a_503_not_a_stream() {
    let mut t = TestApp::start().await;
    t.redis.stop();
    let reply = t
        .send(t.request("/c1/chat", json!({"content": "x", "stream": true}), &[]))
        .await;
    reply.assert_error(503, "storage_unavailable");
    assert!(t.openai.chat_bodies().await.is_empty());
}

#[tokio::test]
async fn a_stream_past_its_deadline_is_an_error_event_and_nothing_is_stored() {
    let t =
        TestApp::with_env(&[("STREAM_TIMEOUT_SECONDS", "1"), ("KEEP_ALIVE_SECONDS", "1")]).await;
    t.openai.script(StreamScript {
        fault: Fault::StallAfter(1, Duration::from_secs(3)),
        ..slow(5)
    });
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        t.post("/c1/chat", json!({"content": QUESTION, "stream": true})),
    )
    .await
    .expect("the stream ended at its deadline");
    let last = reply.events().pop().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["code"], "upstream_timeout");
    assert!(t.transcript("c1").await.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_streamed_turn_that_cannot_be_stored_says_so_in_done() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        first_delay: Duration::from_millis(300),
        ..slow(5)
    });
    let turn = t.post("/c1/chat", json!({"content": "hi", "stream": true}));
    let stop_redis = async {
        t.openai.wait_for_chat_requests(1).await;
        let _ = t.redis.cli(&["SHUTDOWN", "NOSAVE"]);
    };
    let (reply, ()) = tokio::join!(turn, stop_redis);
    let done = reply.events().pop().unwrap();
    assert_eq!(done.event.as_deref(), Some("done"));
    assert_eq!(done.json()["content"], "reply to: hi");
    assert_eq!(done.json()["stored"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_streamed_turns_on_one_chat_are_all_stored_in_pairs() {
    let t = TestApp::start().await;
    t.openai.script(slow(5));
    let questions: Vec<String> = (0..16).map(|i| format!("question number {i}")).collect();
    let replies = join_all(
        questions
            .iter()
            .map(|q| t.post("/busy/chat", json!({"content": q, "stream": true}))),
    )
    .await;
    for (question, reply) in questions.iter().zip(&replies) {
        let done = reply.events().pop().unwrap();
        assert_eq!(done.event.as_deref(), Some("done"), "{}", reply.text);
        assert_eq!(done.json()["content"], format!("reply to: {question}"));
    }
    let transcript = t.transcript("busy").await;
    let messages = transcript.as_array().unwrap();
    assert_eq!(messages.len(), 32);
    let mut seen = std::collections::HashSet::new();
    for pair in messages.chunks(2) {
        let question = pair[0]["content"].as_str().unwrap();
        assert_eq!(pair[1]["content"], format!("reply to: {question}"));
        assert!(seen.insert(question.to_owned()), "{question} stored twice");
    }
}

#[tokio::test]
async fn a_refusal_streams_as_the_reply() {
    let t = TestApp::start().await;
    t.openai
        .always_chat(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "refusal": "I can't help with that."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
        })))
        .await;
    let reply = t
        .post("/c1/chat", json!({"content": "bad", "stream": true}))
        .await;
    let done = reply.events().pop().unwrap().json();
    assert_eq!(done["content"], "I can't help with that.");
    assert_eq!(done["tokens"]["total_tokens"], 15);
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_its_turn() {
    // Keep-alive at 1 s: a client that leaves a full buffer untouched for 2 s is gone.
    let t = TestApp::with_env(&[("KEEP_ALIVE_SECONDS", "1")]).await;
    // Two hundred words, a delta each: more events than the stream buffers.
    let long: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    t.openai
        .always_chat(ResponseTemplate::new(200).set_body_json(
            crate::support::openai::chat_completion("m", &long.join(" "), 1),
        ))
        .await;
    t.openai.script(slow(1));
    let response = t
        .open(t.request("/c1/chat", json!({"content": "go", "stream": true}), &[]))
        .await;
    assert_eq!(response.status(), 200);
    // The client holds the stream open and reads nothing; the turn still ends and is
    // stored, long before its deadline.
    tokio::time::timeout(Duration::from_secs(10), t.app.settle())
        .await
        .expect("the turn finished without its client reading");
    let transcript = t.transcript("c1").await;
    assert_eq!(transcript.as_array().unwrap().len(), 2, "{transcript}");
    assert_eq!(transcript[1]["content"], long.join(" "));
    drop(response);
}

#[tokio::test]
async fn an_upstream_that_ends_its_reply_but_not_its_stream_does_not_hold_the_turn() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        fault: Fault::HangAfterEnd,
        ..StreamScript::default()
    });
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        t.post("/c1/chat", json!({"content": "hi", "stream": true})),
    )
    .await
    .expect("answered within seconds, not at the stream's deadline");
    let done = reply.events().pop().unwrap();
    assert_eq!(done.event.as_deref(), Some("done"), "{}", reply.text);
    assert_eq!(done.json()["content"], "reply to: hi");
    assert_eq!(
        done.json()["tokens"]["completion_tokens"],
        5,
        "upstream's usage"
    );
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 2);
}
