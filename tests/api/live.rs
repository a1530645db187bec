//! Seed turns followed while they are made (`GET /<chat_id>/live`), from another instance
//! and another connection, and stopped (`POST /<chat_id>/stop`): real Redis, an upstream
//! that pauses between chunks, clients that read as events come, leave, and come back.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::streaming::StreamScript;
use crate::support::{send_to, EventReader, SseEvent, TestApp};

const QUESTION: &str =
    "name the planets of the solar system in their order from the sun and say one thing of each";

fn slow(pause_ms: u64) -> StreamScript {
    StreamScript {
        pause: Duration::from_millis(pause_ms),
        ..StreamScript::default()
    }
}

/// A streamed seed turn on `chat`, opened: its reader.
async fn start_turn(t: &TestApp, chat: &str) -> EventReader {
    let response = t
        .open(t.request(
            &format!("/{chat}/chat"),
            json!({"content": QUESTION, "stream": true}),
            &[],
        ))
        .await;
    assert_eq!(response.status(), 200);
    EventReader::new(response.into_body())
}

/// The next `n` deltas of a stream (skipping comments): their events.
async fn deltas(reader: &mut EventReader, n: usize) -> Vec<SseEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        let (_, event) = reader.next().await.expect("more deltas");
        match event.event.as_deref() {
            Some(":") => {}
            Some("delta") => got.push(event),
            other => panic!("a delta, not {other:?}: {event:?}"),
        }
    }
    got
}

/// The rest of a stream: its deltas, and its last event (`done` or `error`).
async fn rest(reader: &mut EventReader) -> (Vec<SseEvent>, SseEvent) {
    let mut got = Vec::new();
    while let Some((_, event)) = reader.next().await {
        match event.event.as_deref() {
            Some(":") => {}
            Some("delta") => got.push(event),
            Some("done" | "error") => {
                assert!(reader.next().await.is_none(), "nothing after {event:?}");
                return (got, event);
            }
            other => panic!("unexpected {other:?}: {event:?}"),
        }
    }
    panic!("the stream ended without done or error");
}

fn text(events: &[SseEvent]) -> String {
    events
        .iter()
        .map(|event| event.json()["content"].as_str().unwrap().to_owned())
        .collect()
}

fn positions(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event.id.as_deref().expect("an id").parse().unwrap())
        .collect()
}

/// Follows the chat's live turn on `app` from `after`: its reader.
async fn follow(app: &'static chat_proxy::App, t: &TestApp, chat: &str, after: u64) -> EventReader {
    let request = t.get_request(&format!("/{chat}/live?stream=true&after={after}"));
    let response = chat_proxy::handle(app, request).await;
    assert_eq!(response.status(), 200, "the turn is followed");
    EventReader::new(response.into_body())
}

/// Waits until the chat names a live turn (its recorder keeps it beside the stream).
async fn live_id(t: &TestApp, chat: &str) -> String {
    for _ in 0..100 {
        let read = t.get(&format!("/{chat}/chat")).await;
        if let Some(id) = read.header("x-chat-live") {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the chat never named its live turn");
}

#[tokio::test]
async fn another_instance_follows_a_turn_from_a_position_and_gets_every_later_delta_once() {
    let t = TestApp::start().await;
    t.openai.script(slow(80));
    let mut first = start_turn(&t, "c1").await;
    let opening = deltas(&mut first, 3).await;
    assert_eq!(positions(&opening), [1, 2, 3], "each delta at its position");
    // The chat names the turn in progress, which its transcript does not hold yet.
    let id = live_id(&t, "c1").await;
    assert_eq!(t.transcript("c1").await, json!([]));
    let other = t.another_instance();
    // How far it is, whole so far.
    let snapshot = send_to(other, t.get_request("/c1/live")).await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text);
    let snapshot = snapshot.json();
    assert_eq!(snapshot["id"], id.as_str());
    assert_eq!(snapshot["status"], "in_progress");
    assert_eq!(
        snapshot["asked"],
        json!({"route": "chat", "content": QUESTION, "url": null})
    );
    let so_far = snapshot["content"].as_str().unwrap();
    let position = snapshot["position"].as_u64().unwrap();
    assert!(position >= 1, "{snapshot}");
    // Followed from the third delta, on another instance, as the turn goes on.
    let mut follower = follow(other, &t, "c1", 3).await;
    let (own_rest, own_done) = rest(&mut first).await;
    let (followed, followed_done) = rest(&mut follower).await;
    assert_eq!(own_done.event.as_deref(), Some("done"));
    assert_eq!(
        followed, own_rest,
        "every later delta once, in order, at its position"
    );
    assert_eq!(positions(&followed)[0], 4);
    assert_eq!(followed_done.json(), own_done.json(), "the same end");
    let whole = own_done.json()["content"].as_str().unwrap().to_owned();
    assert_eq!(text(&opening) + &text(&followed), whole);
    assert!(
        whole.starts_with(so_far),
        "{so_far:?} is the start of {whole:?}"
    );
    // Ended and stored: the chat names no live turn, and its transcript holds the turn.
    let read = t.get("/c1/chat").await;
    assert_eq!(read.header("x-chat-live"), None);
    assert_eq!(read.json()[1]["content"], whole.as_str());
    t.get("/c1/live").await.assert_error(404, "no_live_turn");
    // Its record lives a minute more, for followers to read its end, then goes.
    t.live_turns_ended().await;
    for key in t.keys().iter().filter(|key| key.contains(":run:")) {
        let ttl: i64 = t.redis.query(&["TTL", key]).parse().unwrap();
        assert!((1..=60).contains(&ttl), "{key} lives {ttl} s");
    }
}

#[tokio::test]
async fn a_client_that_left_halfway_comes_back_and_reads_the_rest_once() {
    let t = TestApp::start().await;
    t.openai.script(slow(60));
    let mut first = start_turn(&t, "c2").await;
    let before = deltas(&mut first, 2).await;
    drop(first);
    // Back on another connection, from its last position, as a reloaded page.
    let mut back = follow(t.app, &t, "c2", 2).await;
    let (after, done) = rest(&mut back).await;
    assert_eq!(done.event.as_deref(), Some("done"), "{}", done.data);
    assert_eq!(
        positions(&after),
        (3..3 + after.len() as u64).collect::<Vec<_>>()
    );
    let whole = done.json()["content"].as_str().unwrap().to_owned();
    assert_eq!(
        text(&before) + &text(&after),
        whole,
        "nothing lost or doubled"
    );
    // The turn went on without its client, and was stored once.
    let transcript = t.transcript("c2").await;
    assert_eq!(transcript.as_array().unwrap().len(), 2);
    assert_eq!(transcript[1]["content"], whole.as_str());
}

#[tokio::test]
async fn stop_from_another_instance_keeps_what_was_written_as_the_turn() {
    let t = TestApp::start().await;
    t.openai.script(slow(150));
    let mut first = start_turn(&t, "c3").await;
    let opening = deltas(&mut first, 2).await;
    live_id(&t, "c3").await;
    let mut follower = follow(t.another_instance(), &t, "c3", 0).await;
    let stopped = send_to(t.another_instance(), {
        let mut request = t.request("/c3/stop", json!({}), &[]);
        *request.method_mut() = lambda_http::http::Method::POST;
        request
    })
    .await;
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert_eq!(stopped.json()["stop_asked"], true);
    let (rest_of_own, done) = rest(&mut first).await;
    assert_eq!(done.event.as_deref(), Some("done"), "{}", done.data);
    let done = done.json();
    assert_eq!(done["stopped"], true, "{done}");
    let kept = done["content"].as_str().unwrap().to_owned();
    assert_eq!(text(&opening) + &text(&rest_of_own), kept);
    // Stopped well before the end: the echo's reply is the whole question, word by word.
    assert!(kept.split_whitespace().count() < QUESTION.split_whitespace().count() - 3);
    // The follower sees the same end.
    let (followed, followed_done) = rest(&mut follower).await;
    assert_eq!(text(&followed), kept);
    assert_eq!(followed_done.json(), done);
    // What was written is the turn: the question, and the answer as it was cut.
    let transcript = t.transcript("c3").await;
    assert_eq!(transcript[0]["content"], QUESTION);
    assert_eq!(transcript[1]["content"], kept.as_str());
    assert_eq!(transcript.as_array().unwrap().len(), 2);
    // The next turn sends it upstream as the chat's history.
    t.openai.script(slow(0));
    t.say("c3", "and then?").await;
    let bodies = t.openai.chat_bodies().await;
    let messages = bodies.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    let sent: Vec<Value> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(sent, [json!(kept)]);
    // Stopped and ended: nothing is live any more.
    t.post("/c3/stop", json!({}))
        .await
        .assert_error(404, "no_live_turn");
}

#[tokio::test]
async fn stop_works_on_a_turn_followed_after_its_client_left() {
    let t = TestApp::start().await;
    t.openai.script(slow(150));
    let mut first = start_turn(&t, "c4").await;
    deltas(&mut first, 1).await;
    drop(first);
    let mut back = follow(t.app, &t, "c4", 1).await;
    deltas(&mut back, 1).await;
    assert_eq!(t.post("/c4/stop", json!({})).await.status, 200);
    let (_, done) = rest(&mut back).await;
    let done = done.json();
    assert_eq!(done["stopped"], true, "{done}");
    let transcript = t.transcript("c4").await;
    assert_eq!(transcript[1]["content"], done["content"]);
}

#[tokio::test]
async fn a_turn_that_fails_ends_its_followers_with_the_same_error_and_stores_nothing() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        pause: Duration::from_millis(80),
        fault: crate::support::streaming::Fault::CutAfter(6),
        ..StreamScript::default()
    });
    let mut first = start_turn(&t, "c5").await;
    deltas(&mut first, 1).await;
    let mut follower = follow(t.another_instance(), &t, "c5", 0).await;
    let (own, own_end) = rest(&mut first).await;
    let (followed, followed_end) = rest(&mut follower).await;
    assert_eq!(own_end.event.as_deref(), Some("error"));
    assert_eq!(followed_end, own_end, "the same error");
    assert_eq!(followed.len(), own.len() + 1, "every delta, from the first");
    assert_eq!(t.transcript("c5").await, json!([]));
    t.get("/c5/live").await.assert_error(404, "no_live_turn");
}

#[tokio::test]
async fn a_regenerate_and_an_edit_say_what_they_ask() {
    let t = TestApp::start().await;
    t.say("c6", "first").await;
    t.openai.script(slow(100));
    for (route, body, asked) in [
        (
            "regenerate",
            json!({"stream": true}),
            json!({"route": "regenerate"}),
        ),
        (
            "edit",
            json!({"stream": true, "index": 0, "content": "first, again"}),
            json!({"route": "edit", "index": 0, "content": "first, again"}),
        ),
    ] {
        let response = t.open(t.request(&format!("/c6/{route}"), body, &[])).await;
        assert_eq!(response.status(), 200);
        let mut reader = EventReader::new(response.into_body());
        deltas(&mut reader, 1).await;
        live_id(&t, "c6").await;
        let snapshot = t.get("/c6/live").await;
        assert_eq!(snapshot.json()["asked"], asked, "{route}");
        let (_, done) = rest(&mut reader).await;
        assert_eq!(
            done.event.as_deref(),
            Some("done"),
            "{route}: {}",
            done.data
        );
    }
}

#[tokio::test]
async fn without_a_live_turn_or_with_a_bad_position_nothing_is_followed() {
    let t = TestApp::start().await;
    t.say("c7", "hello").await;
    // A buffered turn is not live, and one that ended is not either.
    t.get("/c7/live").await.assert_error(404, "no_live_turn");
    t.get("/c7/live?stream=true")
        .await
        .assert_error(404, "no_live_turn");
    t.post("/c7/stop", json!({}))
        .await
        .assert_error(404, "no_live_turn");
    for bad in ["after=-1", "after=x", "after=", "stream=maybe"] {
        let reply = t.get(&format!("/c7/live?{bad}")).await;
        reply.assert_error(400, "invalid_value");
    }
    assert_eq!(t.post("/c7/live", json!({})).await.status, 405);
    assert_eq!(t.get("/c7/stop").await.status, 405);
    // Nothing stored changed.
    assert_eq!(t.transcript("c7").await.as_array().unwrap().len(), 2);
}

async fn get_as(t: &TestApp, path: &str, who: &[(&str, &str)]) -> crate::support::Reply {
    t.call_with(
        lambda_http::http::Method::GET,
        path,
        lambda_http::Body::Empty,
        who,
    )
    .await
}

#[tokio::test]
async fn another_caller_cannot_see_follow_or_stop_a_live_turn() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1,bob:sk-bob-2")]).await;
    t.openai.script(slow(100));
    let alice = [("authorization", "Bearer sk-alice-1")];
    let bob = [("authorization", "Bearer sk-bob-2")];
    let response = t
        .open(t.request(
            "/shared-name/chat",
            json!({"content": QUESTION, "stream": true}),
            &alice,
        ))
        .await;
    assert_eq!(response.status(), 200);
    let mut reader = EventReader::new(response.into_body());
    deltas(&mut reader, 2).await;
    // Alice sees it (the setup did what it should) ...
    let mut seen = false;
    for _ in 0..100 {
        if get_as(&t, "/shared-name/live", &alice).await.status == 200 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "alice's turn is live");
    // ... Bob does not, under the same chat name.
    get_as(&t, "/shared-name/live", &bob)
        .await
        .assert_error(404, "no_live_turn");
    get_as(&t, "/shared-name/live?stream=true", &bob)
        .await
        .assert_error(404, "no_live_turn");
    assert_eq!(
        get_as(&t, "/shared-name/chat", &bob)
            .await
            .header("x-chat-live"),
        None
    );
    let stop = t
        .call_with(
            lambda_http::http::Method::POST,
            "/shared-name/stop",
            lambda_http::Body::from("{}"),
            &bob,
        )
        .await;
    stop.assert_error(404, "no_live_turn");
    let (_, done) = rest(&mut reader).await;
    assert_eq!(done.json().get("stopped"), None, "not stopped by Bob");
}

#[tokio::test]
async fn deleting_the_chat_ends_its_followers_and_leaves_no_record() {
    let t = TestApp::start().await;
    t.openai.script(slow(100));
    let mut first = start_turn(&t, "c8").await;
    deltas(&mut first, 1).await;
    live_id(&t, "c8").await;
    let mut follower = follow(t.app, &t, "c8", 0).await;
    let deleted = t
        .call(
            lambda_http::http::Method::DELETE,
            "/c8",
            lambda_http::Body::Empty,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let (_, end) = rest(&mut follower).await;
    assert_eq!(end.event.as_deref(), Some("error"), "{}", end.data);
    rest(&mut first).await;
    t.get("/c8/live").await.assert_error(404, "no_live_turn");
    let left: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|key| key.contains(":run:") || key.ends_with(":live"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_streamed_turn_still_waits_for_two_round_trips_while_it_is_recorded() {
    // Every chunk to and from Redis held HOP each way: a round trip the turn waits for
    // costs at least 2 HOP. Its recorder's writes (the turn kept, its deltas, its end) go
    // beside the turn's own, never before its `done`.
    const HOP: Duration = Duration::from_millis(250);
    let t = TestApp::over_relay(&[]).await;
    t.openai.script(slow(0));
    let mut warm_up = start_turn(&t, "c9").await;
    rest(&mut warm_up).await;
    t.live_turns_ended().await;
    t.relay().settle(HOP).await;
    t.relay().set_delay(HOP);
    let started = tokio::time::Instant::now();
    let mut reader = start_turn(&t, "c9").await;
    let (got, done) = rest(&mut reader).await;
    let took = started.elapsed();
    t.relay().set_delay(Duration::ZERO);
    // The setup did what it should: upstream answered, the turn was stored, and the relay
    // held the turn's two round trips.
    assert_eq!(done.event.as_deref(), Some("done"), "{}", done.data);
    assert!(!got.is_empty());
    assert_eq!(t.transcript("c9").await.as_array().unwrap().len(), 4);
    assert!(
        took >= 4 * HOP,
        "{took:?}: the relay did not hold the round trips"
    );
    // A third round trip would take 2 HOP more.
    assert!(
        took < 5 * HOP,
        "{took:?}: the turn waited for more than two round trips"
    );
    // The recorder wrote beside it all the same: the turn was kept live, and ended.
    t.live_turns_ended().await;
}

#[tokio::test]
async fn a_stop_before_any_text_stores_nothing_and_ends_the_stream_with_an_error() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        first_delay: Duration::from_millis(1500),
        ..StreamScript::default()
    });
    let mut first = start_turn(&t, "c10").await;
    live_id(&t, "c10").await;
    assert_eq!(t.post("/c10/stop", json!({})).await.status, 200);
    let (got, end) = rest(&mut first).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(end.event.as_deref(), Some("error"), "{}", end.data);
    assert_eq!(end.json()["error"]["code"], "response_cancelled");
    assert_eq!(t.transcript("c10").await, json!([]));
    // The upstream call was made, and ended before its reply came.
    assert_eq!(t.openai.chat_bodies().await.len(), 1);
}
