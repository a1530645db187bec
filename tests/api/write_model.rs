//! What happens when two writers meet (`store/mod.rs`, "The write model"), through real
//! overlapping requests on a real Redis: a slow upstream holds one turn while another
//! request writes, and the tests check what upstream was sent and what stayed stored.

use std::time::Duration;

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::openai::{item_text, tool_call_completion};
use crate::support::{Reply, TestApp};

/// How long the slow upstream holds its turn: long enough for the other request to run.
const HOLD: Duration = Duration::from_millis(700);

async fn respond(t: &TestApp, body: Value) -> Reply {
    t.call(Method::POST, "/v1/responses", Body::from(body.to_string()))
        .await
}

fn id_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// The texts of the input upstream was sent by the newest Responses request.
async fn last_input(t: &TestApp) -> Vec<String> {
    let body = t.openai.bodies("/v1/responses").await.pop().unwrap();
    body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(item_text)
        .collect()
}

/// The contents of a chat's transcript, in order.
async fn said(t: &TestApp, chat: &str) -> Vec<String> {
    t.transcript(chat)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn two_continuations_of_one_response_at_once_become_two_chains() {
    let t = TestApp::start().await;
    let first = id_of(&respond(&t, json!({"input": "first"})).await);
    // A continues the chain's newest response while upstream holds it; B continues the
    // same response meanwhile, and is answered first.
    t.openai.hold_next_response(HOLD).await;
    let slow = respond(&t, json!({"input": "A", "previous_response_id": first}));
    let fast = async {
        t.openai.wait_for("/v1/responses", 2).await;
        respond(&t, json!({"input": "B", "previous_response_id": first})).await
    };
    let (a, b) = tokio::join!(slow, fast);
    let (a, b) = (id_of(&a), id_of(&b));
    assert_ne!(a, b);

    // Each continues its own chain: neither holds the other's turn.
    id_of(&respond(&t, json!({"input": "after A", "previous_response_id": a})).await);
    assert_eq!(
        last_input(&t).await,
        ["first", "reply to: first", "A", "reply to: A", "after A"]
    );
    id_of(&respond(&t, json!({"input": "after B", "previous_response_id": b})).await);
    assert_eq!(
        last_input(&t).await,
        ["first", "reply to: first", "B", "reply to: B", "after B"]
    );
    // Both read back, each as its own response.
    for id in [&a, &b] {
        let stored = t.get(&format!("/v1/responses/{id}")).await;
        assert_eq!(stored.status, 200, "{}", stored.text);
        assert_eq!(stored.json()["id"], id.as_str());
    }
}

#[tokio::test]
async fn a_regenerate_never_drops_a_turn_stored_while_it_waited() {
    // Each redo, and how many messages the chat holds once it is stored.
    for (redo, after) in [
        (("/x/regenerate", json!({})), 4),
        (("/x/edit", json!({"index": 0, "content": "ONE"})), 2),
    ] {
        let t = TestApp::start().await;
        t.say("x", "one").await;
        t.openai.hold_next_chat(HOLD).await;
        let redone = t.post(redo.0, redo.1.clone());
        let meanwhile = async {
            t.openai.wait_for_chat_requests(2).await;
            t.say("x", "two").await;
            said(&t, "x").await
        };
        let (redone, seen) = tokio::join!(redone, meanwhile);
        assert_eq!(seen, ["one", "reply to: one", "two", "reply to: two"]);
        // The redo was answered (it was paid for), and said it could not be stored: the
        // chat it would have replaced had moved on.
        assert_eq!(redone.status, 200, "{}", redone.text);
        assert_eq!(redone.header("x-chat-stored"), Some("false"), "{}", redo.0);
        assert_eq!(
            said(&t, "x").await,
            ["one", "reply to: one", "two", "reply to: two"],
            "{}: the turn stored meanwhile stays",
            redo.0
        );
        // With nothing in between, the same redo is stored.
        let again = t.post(redo.0, redo.1.clone()).await;
        assert_eq!((again.status, again.header("x-chat-stored")), (200, None));
        assert_eq!(said(&t, "x").await.len(), after, "{}", redo.0);
    }
}

#[tokio::test]
async fn two_items_of_one_turn_deleted_at_once_are_both_gone() {
    let t = TestApp::over_relay(&[]).await;
    let made = t
        .post(
            "/v1/conversations",
            json!({"items": [
                {"type": "message", "role": "user", "content": "a"},
                {"type": "message", "role": "user", "content": "b"},
                {"type": "message", "role": "user", "content": "c"}]}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let conversation = made.json()["id"].as_str().unwrap().to_owned();
    let items = t
        .get(&format!("/v1/conversations/{conversation}/items?order=asc"))
        .await
        .json();
    let id = |i: usize| items["data"][i]["id"].as_str().unwrap().to_owned();
    let (a, b) = (id(0), id(1));
    // Every hop to Redis is slow: both deletions read the turn before either writes.
    t.relay().set_delay(Duration::from_millis(80));
    let (path_a, path_b) = (
        format!("/v1/conversations/{conversation}/items/{a}"),
        format!("/v1/conversations/{conversation}/items/{b}"),
    );
    let (first, second) = tokio::join!(
        t.call(Method::DELETE, &path_a, Body::Empty),
        t.call(Method::DELETE, &path_b, Body::Empty)
    );
    t.relay().set_delay(Duration::ZERO);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    let left = t
        .get(&format!("/v1/conversations/{conversation}/items?order=asc"))
        .await
        .json();
    let texts: Vec<String> = left["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(item_text)
        .collect();
    assert_eq!(texts, ["c"], "both deleted, the third kept");
}

#[tokio::test]
async fn a_chat_deleted_while_a_turn_waits_stays_deleted() {
    let t = TestApp::start().await;
    t.say("x", "one").await;
    t.openai.hold_next_chat(HOLD).await;
    let late = t.post("/x/chat", json!({"content": "two"}));
    let delete = async {
        t.openai.wait_for_chat_requests(2).await;
        t.call(Method::DELETE, "/x", Body::Empty).await
    };
    let (late, deleted) = tokio::join!(late, delete);
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    // Answered (paid for), not stored: the chat stays deleted, and is not listed.
    assert_eq!(late.status, 200, "{}", late.text);
    assert_eq!(late.json()["content"], "reply to: two");
    assert_eq!(late.header("x-chat-stored"), Some("false"));
    assert!(said(&t, "x").await.is_empty());
    assert_eq!(t.get("/chats").await.json()["chats"], json!([]));
    let kept: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|key| key.ends_with(":turns") || key.ends_with(":meta"))
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
    // A new turn after the deletion starts the chat anew.
    t.say("x", "three").await;
    assert_eq!(said(&t, "x").await, ["three", "reply to: three"]);
}

#[tokio::test]
async fn a_turn_from_before_a_clear_is_not_stored_after_it() {
    let t = TestApp::start().await;
    t.say("x", "one").await;
    t.openai.hold_next_chat(HOLD).await;
    let late = t.post("/x/chat", json!({"content": "two"}));
    let clear = async {
        t.openai.wait_for_chat_requests(2).await;
        t.post("/x/clear", json!({})).await
    };
    let (late, cleared) = tokio::join!(late, clear);
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    assert_eq!(late.header("x-chat-stored"), Some("false"), "{}", late.text);
    assert!(said(&t, "x").await.is_empty());
}

#[tokio::test]
async fn a_conversation_deleted_while_its_response_waits_stays_deleted() {
    let t = TestApp::start().await;
    let made = t.post("/v1/conversations", json!({})).await;
    let conversation = made.json()["id"].as_str().unwrap().to_owned();
    t.openai.hold_next_response(HOLD).await;
    let late = respond(&t, json!({"input": "hi", "conversation": conversation}));
    let delete = async {
        t.openai.wait_for("/v1/responses", 1).await;
        t.call(
            Method::DELETE,
            &format!("/v1/conversations/{conversation}"),
            Body::Empty,
        )
        .await
    };
    let (late, deleted) = tokio::join!(late, delete);
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let id = id_of(&late);
    assert_eq!(late.header("x-chat-stored"), Some("false"));
    t.get(&format!("/v1/conversations/{conversation}"))
        .await
        .assert_error(404, "conversation_not_found");
    t.get(&format!("/v1/responses/{id}"))
        .await
        .assert_error(404, "response_not_found");
}

#[tokio::test]
async fn two_results_for_one_tool_call_at_once_are_stored_once() {
    let t = TestApp::start().await;
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object"}}}]);
    let v1 = |body: Value| {
        t.call_with(
            Method::POST,
            "/v1/chat/completions",
            Body::from(body.to_string()),
            &[("x-chat-id", "x")],
        )
    };
    let answer = tool_call_completion("gpt-4o-mini", &[("weather", r#"{"city":"Oslo"}"#)], 9);
    t.openai
        .fail_chat(ResponseTemplate::new(200).set_body_json(answer), 1)
        .await;
    let call =
        v1(json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools})).await;
    assert_eq!(call.status, 200, "{}", call.text);
    let call_id = call.json()["choices"][0]["message"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result = |text: &str| {
        json!({"messages": [{"role": "tool", "tool_call_id": call_id, "content": text}],
               "tools": tools})
    };
    // The first result is held upstream; the second, sent meanwhile, answers the same call.
    t.openai.hold_next_chat(HOLD).await;
    let first = v1(result("sunny"));
    let second = async {
        t.openai.wait_for_chat_requests(2).await;
        v1(result("rainy")).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-chat-stored"), None);
    second.assert_error(409, "tool_call_in_progress");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        2,
        "the second result was never sent upstream"
    );
    let stored = said(&t, "x").await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[2], "sunny");
    // And once the first is stored, the chat goes on: a new question is asked with it.
    let next = v1(json!({"messages": [{"role": "user", "content": "thanks"}]})).await;
    assert_eq!(next.status, 200, "{}", next.text);
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
}

#[tokio::test]
async fn an_import_whose_turns_repeat_an_id_is_refused() {
    let t = TestApp::start().await;
    let turn = |question: &str| json!({"id": "0123456789abcdef0123456789abcdef", "user": question, "assistant": "a"});
    let before = t.dump();
    t.post(
        "/chats/import",
        json!({"into": "x", "turns": [turn("one"), turn("two")]}),
    )
    .await
    .assert_error(400, "invalid_value");
    assert_eq!(t.dump(), before, "nothing stored");
}

#[tokio::test]
async fn a_turn_that_follows_or_redoes_still_waits_for_two_round_trips() {
    use crate::turns::{assert_trips, round_trips};
    let t = TestApp::over_relay(&[]).await;
    t.say("x", "one").await;
    // A regenerate: its check against the chat it read rides its one write.
    let redo = t.post("/x/regenerate", json!({}));
    assert_trips(round_trips(&t, redo).await, 2, "a regenerate");
    // Tool results: the claim on the newest turn rides the turn's one read.
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object"}}}]);
    let answer = tool_call_completion("gpt-4o-mini", &[("weather", r#"{"city":"Oslo"}"#)], 9);
    t.openai
        .fail_chat(ResponseTemplate::new(200).set_body_json(answer), 1)
        .await;
    let v1 = |body: Value| {
        t.call_with(
            Method::POST,
            "/v1/chat/completions",
            Body::from(body.to_string()),
            &[("x-chat-id", "x")],
        )
    };
    let call =
        v1(json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools})).await;
    let call_id = call.json()["choices"][0]["message"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result = v1(
        json!({"messages": [{"role": "tool", "tool_call_id": call_id,
        "content": "sunny"}], "tools": tools}),
    );
    assert_trips(round_trips(&t, result).await, 2, "tool results");
    assert_eq!(said(&t, "x").await.len(), 6, "all of them stored");
}
