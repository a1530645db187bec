//! OpenAI's Conversations API over the proxy's chats: made, read, given metadata and
//! deleted; its items (every turn's, from every door) listed, paged, added and deleted;
//! and its turns made with `/v1/responses`.

use lambda_http::http::Method;
use serde_json::{json, Value};

use crate::support::{Reply, TestApp};

async fn call(t: &TestApp, method: Method, path: &str, body: Option<Value>) -> Reply {
    let body = body.map_or(lambda_http::Body::Empty, |b| {
        lambda_http::Body::from(b.to_string())
    });
    t.call_with(method, path, body, &[]).await
}

fn texts(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| match &item["content"] {
            Value::Array(parts) => parts[0]["text"].as_str().unwrap_or_default().to_owned(),
            _ => item["output"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn a_conversation_is_made_with_items_and_metadata_and_its_responses_follow_them() {
    let t = TestApp::start().await;
    let made = call(
        &t,
        Method::POST,
        "/v1/conversations",
        Some(json!({
        "metadata": {"topic": "lisbon"},
        "items": [{"type": "message", "role": "user", "content": "We go in May."}]})),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let made = made.json();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conv_"), "{id}");
    assert_eq!(made["object"], "conversation");
    assert_eq!(made["metadata"], json!({"topic": "lisbon"}));
    assert!(made["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        call(&t, Method::GET, &format!("/v1/conversations/{id}"), None)
            .await
            .json(),
        made
    );

    let reply = call(
        &t,
        Method::POST,
        "/v1/responses",
        Some(json!({"input": "Three days?", "conversation": id})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    let input: Vec<String> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(crate::support::openai::item_text)
        .collect();
    assert_eq!(
        input,
        [
            "You are a helpful assistant.",
            "We go in May.",
            "Three days?"
        ],
        "the conversation's items, no reply to the items added alone"
    );

    let items = call(
        &t,
        Method::GET,
        &format!("/v1/conversations/{id}/items?order=asc"),
        None,
    )
    .await;
    assert_eq!(items.status, 200, "{}", items.text);
    let items = items.json();
    assert_eq!(
        texts(&items),
        ["We go in May.", "Three days?", "reply to: Three days?"]
    );
    assert_eq!(items["has_more"], false);
    // The seed's transcript is the same conversation.
    let transcript = t.transcript(&id).await;
    assert_eq!(transcript.as_array().unwrap().len(), 3, "{transcript}");
}

#[tokio::test]
async fn items_are_added_paged_read_and_deleted_and_ids_do_not_move() {
    let t = TestApp::start().await;
    t.say("trip", "one").await;
    let path = "/v1/conversations/trip/items";
    let added = call(
        &t,
        Method::POST,
        path,
        Some(json!({"items": [
        {"role": "user", "content": "two"}, {"role": "user", "content": "three"}]})),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.text);
    assert_eq!(texts(&added.json()), ["two", "three"]);
    let all = call(&t, Method::GET, &format!("{path}?order=asc"), None)
        .await
        .json();
    assert_eq!(texts(&all), ["one", "reply to: one", "two", "three"]);
    let ids: Vec<String> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let page = call(
        &t,
        Method::GET,
        &format!("{path}?order=asc&limit=2&after={}", ids[0]),
        None,
    )
    .await
    .json();
    assert_eq!(texts(&page), ["reply to: one", "two"]);
    assert_eq!(page["has_more"], true);
    let one = call(&t, Method::GET, &format!("{path}/{}", ids[2]), None).await;
    assert_eq!(one.json()["id"], ids[2].as_str());

    let deleted = call(&t, Method::DELETE, &format!("{path}/{}", ids[0]), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json()["object"], "conversation");
    let left = call(&t, Method::GET, &format!("{path}?order=asc"), None)
        .await
        .json();
    let left_ids: Vec<&str> = left["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(left_ids, [&ids[1], &ids[2], &ids[3]], "the other ids stay");
    call(&t, Method::GET, &format!("{path}/{}", ids[0]), None)
        .await
        .assert_error(404, "item_not_found");
    // The next turn sends what is left.
    t.say("trip", "four").await;
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        contents,
        [
            "You are a helpful assistant.",
            "reply to: one",
            "two",
            "three",
            "four"
        ]
    );
}

#[tokio::test]
async fn metadata_is_updated_and_a_deleted_conversation_is_gone_with_its_chat() {
    let t = TestApp::start().await;
    t.post("/trip/system", json!({"content": "Plan trips."}))
        .await;
    t.say("trip", "one").await;
    let updated = call(
        &t,
        Method::POST,
        "/v1/conversations/trip",
        Some(json!({"metadata": {"k": "v"}})),
    )
    .await;
    assert_eq!(updated.json()["metadata"], json!({"k": "v"}));
    let deleted = call(&t, Method::DELETE, "/v1/conversations/trip", None).await;
    assert_eq!(
        deleted.json(),
        json!({"id": "trip", "object": "conversation.deleted", "deleted": true})
    );
    assert!(
        t.keys().iter().all(|k| !k.contains("{trip}:turns")
            && !k.contains("{trip}:system")
            && !k.contains("{trip}:meta")),
        "{:?}",
        t.keys()
    );
    call(&t, Method::GET, "/v1/conversations/trip", None)
        .await
        .assert_error(404, "conversation_not_found");
    assert_eq!(t.transcript("trip").await, json!([]));
}

#[tokio::test]
async fn unknown_conversations_and_bad_bodies_are_refused_and_nothing_is_stored() {
    let t = TestApp::start().await;
    t.say("trip", "one").await;
    let before = t.dump();
    for (method, path) in [
        (Method::GET, "/v1/conversations/nowhere"),
        (Method::DELETE, "/v1/conversations/nowhere"),
        (Method::GET, "/v1/conversations/nowhere/items"),
        (Method::GET, "/v1/conversations/bad%20id"),
    ] {
        call(&t, method, path, None)
            .await
            .assert_error(404, "conversation_not_found");
    }
    call(
        &t,
        Method::POST,
        "/v1/conversations/nowhere/items",
        Some(json!({"items": [{"role": "user", "content": "x"}]})),
    )
    .await
    .assert_error(404, "conversation_not_found");
    for body in [json!({"items": []}), json!({"items": [3]}), json!({})] {
        call(&t, Method::POST, "/v1/conversations/trip/items", Some(body))
            .await
            .assert_error(400, "invalid_value");
    }
    call(
        &t,
        Method::POST,
        "/v1/conversations",
        Some(json!({"metadata": {"k": 1}})),
    )
    .await
    .assert_error(400, "invalid_value");
    call(&t, Method::POST, "/v1/conversations/trip", Some(json!({})))
        .await
        .assert_error(400, "invalid_value");
    call(
        &t,
        Method::DELETE,
        "/v1/conversations/trip/items/msg_nope",
        None,
    )
    .await
    .assert_error(404, "item_not_found");
    assert_eq!(t.dump(), before, "nothing stored");
}

#[tokio::test]
async fn callers_never_reach_each_others_conversations() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1,bob:sk-bob-2")]).await;
    let as_ = |key: &'static str| [("authorization", key)];
    let made = t
        .call_with(
            Method::POST,
            "/v1/conversations",
            lambda_http::Body::Empty,
            &as_("Bearer sk-alice-1"),
        )
        .await;
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{id}");
    let alice = t
        .call_with(
            Method::GET,
            &path,
            lambda_http::Body::Empty,
            &as_("Bearer sk-alice-1"),
        )
        .await;
    assert_eq!(alice.status, 200, "{}", alice.text);
    t.call_with(
        Method::GET,
        &path,
        lambda_http::Body::Empty,
        &as_("Bearer sk-bob-2"),
    )
    .await
    .assert_error(404, "conversation_not_found");
}

#[tokio::test]
async fn unknown_fields_are_refused_as_at_openai() {
    let t = TestApp::start().await;
    t.say("trip", "one").await;
    let before = t.dump();
    for (path, body) in [
        ("/v1/conversations", json!({"x": 1})),
        ("/v1/conversations/trip", json!({"metadata": {}, "x": 1})),
        (
            "/v1/conversations/trip/items",
            json!({"items": [{"role": "user", "content": "x"}], "x": 1}),
        ),
    ] {
        call(&t, Method::POST, path, Some(body))
            .await
            .assert_error(400, "unknown_parameter");
    }
    assert_eq!(t.dump(), before, "nothing stored");
}

#[tokio::test]
async fn items_are_checked_and_their_references_filled_in_before_anything_is_stored() {
    let t = TestApp::start().await;
    let stored = t
        .post("/v1/responses", json!({"input": "remember this"}))
        .await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    let answer = stored.json()["output"][0].clone();
    let existing = t.post("/v1/conversations", json!({})).await.json()["id"].clone();
    let existing = existing.as_str().unwrap().to_owned();
    let asked = t.openai.requests().await.len();
    let before = t.dump();
    for (items, code) in [
        (json!([{"type": "surprise", "text": "x"}]), "invalid_value"),
        (json!([{"type": "message"}]), "invalid_value"),
        (json!([{"role": "user", "content": 3}]), "invalid_value"),
        (
            json!([{"role": "user", "content": [{"type": "input_txt", "text": "x"}]}]),
            "invalid_value",
        ),
        (
            json!([{"type": "function_call_output", "call_id": "nobody", "output": "x"}]),
            "invalid_function_call_output",
        ),
        (
            json!([{"type": "item_reference", "id": "msg_unknown"}]),
            "item_not_found",
        ),
    ] {
        let made = t.post("/v1/conversations", json!({"items": items})).await;
        let status = if code == "item_not_found" { 404 } else { 400 };
        made.assert_error(status, code);
        assert_eq!(made.json()["error"]["param"], "items", "{items}");
        let added = t
            .post(
                &format!("/v1/conversations/{existing}/items"),
                json!({"items": items}),
            )
            .await;
        added.assert_error(status, code);
    }
    assert_eq!(t.dump(), before, "nothing stored");
    assert_eq!(
        t.openai.requests().await.len(),
        asked,
        "nothing sent upstream"
    );

    // A reference to a stored item is kept as the whole item, and a later turn sends it so.
    let made = t
        .post(
            "/v1/conversations",
            json!({"items": [{"type": "item_reference", "id": answer["id"]},
                             {"role": "user", "content": "and now?"}]}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let items = t
        .get(&format!("/v1/conversations/{id}/items?order=asc"))
        .await
        .json();
    assert_eq!(items["data"][0]["type"], "message");
    assert_eq!(items["data"][0]["content"], answer["content"]);
    let next = t
        .post(
            "/v1/responses",
            json!({"input": "go on", "conversation": id}),
        )
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    assert!(
        sent["input"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["type"] != "item_reference"),
        "{sent}"
    );
    assert!(
        sent["input"].as_array().unwrap().contains(&answer),
        "{sent}"
    );
}

#[tokio::test]
async fn a_responses_input_upstream_would_refuse_is_refused_here() {
    let t = TestApp::start().await;
    for input in [
        json!([{"type": "surprise"}]),
        json!([{"type": "message", "content": "no role"}]),
        json!([{"role": "user", "content": [{"type": "input_text"}]}]),
    ] {
        let reply = t.post("/v1/responses", json!({"input": input})).await;
        reply.assert_error(400, "invalid_value");
        assert_eq!(reply.json()["error"]["param"], "input");
    }
    assert!(t.openai.requests().await.is_empty());
}
