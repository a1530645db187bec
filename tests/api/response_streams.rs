//! A streamed response as a client reads it again or sees it fail: a retry with the same
//! `Idempotency-Key` reads the same text in the same kinds of events, and upstream's own
//! `response.failed` reaches the caller under the proxy's id.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::streaming::{Fault, StreamScript, FAILED_MESSAGE};
use crate::support::{Reply, SseEvent, TestApp};

async fn stream(t: &TestApp, body: Value, key: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = key
        .map(|key| ("idempotency-key", key))
        .into_iter()
        .collect();
    t.call_with(
        Method::POST,
        "/v1/responses",
        Body::from(body.to_string()),
        &headers,
    )
    .await
}

/// The events' data, comments left out.
fn data(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|event| !event.is_comment())
        .map(SseEvent::json)
        .collect()
}

/// The text the deltas of a stream carry, end to end.
fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|event| event["type"] == "response.output_text.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_replayed_stream_carries_the_first_streams_text() {
    let t = TestApp::start().await;
    let body = json!({"input": "one two three four", "stream": true});
    let first = stream(&t, body.clone(), Some("k-1")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let first = data(&first.events());
    assert!(text_of(&first).starts_with("reply to:"), "{first:?}");
    let again = stream(&t, body, Some("k-1")).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let again = data(&again.events());
    assert_eq!(
        t.openai.bodies("/v1/responses").await.len(),
        1,
        "asked once"
    );
    // The same text, read as a client reads it: from the deltas.
    assert_eq!(text_of(&again), text_of(&first));
    // The same kinds of events, in the same order (each text in one delta).
    let kinds = |events: &[Value]| {
        let mut kinds: Vec<String> = events
            .iter()
            .map(|event| event["type"].as_str().unwrap().to_owned())
            .collect();
        kinds.dedup();
        kinds
    };
    let first_kinds: Vec<String> = kinds(&first)
        .into_iter()
        .filter(|kind| kind != "response.in_progress")
        .collect();
    let again_kinds: Vec<String> = kinds(&again)
        .into_iter()
        .filter(|kind| {
            kind != "response.in_progress"
                && kind != "response.content_part.added"
                && kind != "response.content_part.done"
                && kind != "response.output_text.done"
        })
        .collect();
    assert_eq!(again_kinds, first_kinds);
    // The same response at the end, under the same id.
    assert_eq!(
        again.last().unwrap()["response"],
        first.last().unwrap()["response"]
    );
    for (sequence, event) in again.iter().enumerate() {
        assert_eq!(event["sequence_number"], sequence);
    }
}

#[tokio::test]
async fn upstreams_response_failed_reaches_the_caller_under_the_proxys_id() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        fault: Fault::FailAfter(2),
        ..StreamScript::default()
    });
    let reply = stream(
        &t,
        json!({"input": "one two three four five", "stream": true}),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = data(&reply.events());
    let id = events[0]["response"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{events:?}");
    assert_eq!(last["response"]["id"], id.as_str());
    assert_eq!(last["response"]["error"]["message"], FAILED_MESSAGE);
    assert!(
        events.iter().all(|event| event["type"] != "error"),
        "no error of the proxy's own after upstream's: {events:?}"
    );
    // Nothing kept of a failed response.
    t.get(&format!("/v1/responses/{id}"))
        .await
        .assert_error(404, "response_not_found");
}
