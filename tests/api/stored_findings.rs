//! What a chat holds reads back whole and as what it is: every turn of a conversation read
//! however few messages each holds, a cleared conversation still a conversation, and ids
//! that name no response answered as such.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::openai::item_text;
use crate::support::TestApp;

async fn conversation(t: &TestApp, body: Value) -> String {
    let made = t.post("/v1/conversations", body).await;
    assert_eq!(made.status, 200, "{}", made.text);
    made.json()["id"].as_str().unwrap().to_owned()
}

fn texts(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(item_text)
        .collect()
}

#[tokio::test]
async fn items_added_one_by_one_are_all_read_listed_exported_and_sent() {
    let t = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "6")]).await;
    let id = conversation(&t, json!({})).await;
    for n in 1..=6 {
        let added = t
            .post(
                &format!("/v1/conversations/{id}/items"),
                json!({"items": [{"type": "message", "role": "user", "content": n.to_string()}]}),
            )
            .await;
        assert_eq!(added.status, 200, "{}", added.text);
    }
    // Six turns of one message each: six messages, all of them kept and read.
    let listed = t
        .get(&format!("/v1/conversations/{id}/items?order=asc"))
        .await
        .json();
    assert_eq!(texts(&listed), ["1", "2", "3", "4", "5", "6"]);
    let exported = t.get(&format!("/{id}/export")).await.json();
    assert_eq!(exported["turns"].as_array().unwrap().len(), 6);
    assert_eq!(t.transcript(&id).await.as_array().unwrap().len(), 6);
    let asked = t
        .post("/v1/responses", json!({"input": "7", "conversation": id}))
        .await;
    assert_eq!(asked.status, 200, "{}", asked.text);
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    let sent: Vec<String> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["role"] != "system")
        .map(item_text)
        .collect();
    assert_eq!(sent, ["1", "2", "3", "4", "5", "6", "7"]);
}

#[tokio::test]
async fn a_cleared_conversation_is_still_one_and_is_listed_as_it_reads() {
    let t = TestApp::start().await;
    let id = conversation(
        &t,
        json!({"items": [{"type": "message", "role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(t.post_raw(&format!("/{id}/clear"), "").await.status, 200);
    let listed = t.get("/v1/conversations").await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let read = t.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json()["id"], id.as_str());
    let items = t.get(&format!("/v1/conversations/{id}/items")).await;
    assert_eq!(items.json()["data"], json!([]));
}

#[tokio::test]
async fn ids_that_name_no_response_are_not_found_to_read_or_delete() {
    let t = TestApp::start().await;
    // A turn of items added by hand: a conversation's turn, but no response.
    let id = conversation(
        &t,
        json!({"items": [{"type": "message", "role": "user", "content": "hi"}]}),
    )
    .await;
    let items = t.get(&format!("/v1/conversations/{id}/items")).await.json();
    let item = items["data"][0]["id"].as_str().unwrap().to_owned();
    let turn = &item["msg_".len().."msg_".len() + 32];
    let items_turn = format!("resp_{turn}_{id}");
    // A seed turn: a turn of the chat, but no response either.
    t.say("seed", "hello").await;
    let seed_turn = t.get("/seed/export").await.json()["turns"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seed_turn = format!("resp_{seed_turn}_seed");
    let before = t.dump();
    for id in [&items_turn, &seed_turn] {
        t.get(&format!("/v1/responses/{id}"))
            .await
            .assert_error(404, "response_not_found");
        t.get(&format!("/v1/responses/{id}/input_items"))
            .await
            .assert_error(404, "response_not_found");
        t.call(Method::DELETE, &format!("/v1/responses/{id}"), Body::Empty)
            .await
            .assert_error(404, "response_not_found");
    }
    assert_eq!(t.dump(), before, "nothing was deleted");
    assert_eq!(t.transcript("seed").await.as_array().unwrap().len(), 2);
}
