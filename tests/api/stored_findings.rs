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
async fn a_cleared_chat_is_still_a_conversation_and_is_listed_as_it_reads() {
    let t = TestApp::start().await;
    // A chat of the seed routes is a conversation too; cleared, it keeps its usage and
    // title, and is listed.
    t.say("x", "hello").await;
    assert_eq!(t.post_raw("/x/clear", "").await.status, 200);
    let listed = t.get("/v1/conversations").await.json();
    assert_eq!(listed["data"][0]["id"], "x");
    let read = t.get("/v1/conversations/x").await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json()["id"], "x");
    let items = t.get("/v1/conversations/x/items").await;
    assert_eq!(items.status, 200, "{}", items.text);
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

#[tokio::test]
async fn a_chat_near_its_size_cap_exports_and_imports_back_with_its_usage() {
    let t = TestApp::start().await;
    // Six turns of about 100 KiB each (a 50 KiB question, the echo's 50 KiB answer): about
    // 600 KiB kept, within MAX_CHAT_BYTES (1 MiB), as is each request within MAX_BODY_BYTES.
    for n in 0..6 {
        t.say("big", &format!("{n}{}", "hello ".repeat(50 * 1024 / 6)))
            .await;
    }
    let exported = t.get("/big/export").await;
    assert_eq!(exported.status, 200);
    assert!(
        exported.text.len() > 600 * 1024,
        "{} bytes",
        exported.text.len()
    );
    let mut document = exported.json();
    document["into"] = json!("copy");
    let imported = t.post("/chats/import", document.clone()).await;
    assert_eq!(
        imported.status,
        200,
        "{}",
        &imported.text[..200.min(imported.text.len())]
    );
    let again = t.get("/copy/export").await.json();
    assert_eq!(again["turns"], document["turns"]);
    assert_eq!(again["usage"], document["usage"]);
    assert_eq!(again["usage"]["turns"], 6);
}

#[tokio::test]
async fn a_stored_reasoning_output_resent_as_input_gets_its_encrypted_content_back() {
    let t = TestApp::with_env(&[("ALLOWED_MODELS", "*")]).await;
    let first = t
        .post(
            "/v1/responses",
            json!({"model": "o4-mini", "input": "think"}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let output = first.json()["output"].as_array().unwrap().clone();
    assert_eq!(output[0]["type"], "reasoning");
    assert!(
        output[0].get("encrypted_content").is_none(),
        "not asked for: hidden"
    );
    // OpenAI's pattern for `store: true`: the next request resends input and output.
    let mut input = vec![json!({"role": "user", "content": "think"})];
    input.extend(output.iter().cloned());
    input.push(json!({"role": "user", "content": "and more"}));
    let next = t
        .post("/v1/responses", json!({"model": "o4-mini", "input": input}))
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    let reasoning = &sent["input"][1];
    assert_eq!(reasoning["id"], output[0]["id"]);
    assert!(
        reasoning["encrypted_content"]
            .as_str()
            .is_some_and(|content| content.starts_with("gAAAA")),
        "{reasoning}"
    );
}

#[tokio::test]
async fn every_message_a_conversations_items_hold_reaches_the_chat_door() {
    let t = TestApp::start().await;
    let id = conversation(
        &t,
        json!({"items": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "bonjour"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"}]}),
    )
    .await;
    let reply = t
        .call_with(
            Method::POST,
            "/v1/chat/completions",
            Body::from(json!({"messages": [{"role": "user", "content": "next"}]}).to_string()),
            &[("x-chat-id", &id)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    let said: Vec<(String, Value)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].clone()))
        .collect();
    let roles: Vec<&str> = said.iter().map(|(role, _)| role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "system",
            "developer",
            "user",
            "assistant",
            "assistant",
            "tool",
            "user"
        ]
    );
    assert_eq!(said[1].1, "Answer in French.");
    assert_eq!(said[3].1, "bonjour");
    assert_eq!(sent["messages"][4]["tool_calls"][0]["id"], "c1");
    assert_eq!(said[5].1, "done");
}

#[tokio::test]
async fn a_conversation_written_between_two_pages_does_not_repeat_the_first() {
    let t = TestApp::start().await;
    for chat in ["a", "b", "c"] {
        t.say(chat, "hello").await;
        // Apart by a millisecond at least: the list is by when each was made.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let first = t.get("/v1/conversations?limit=2").await.json();
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["c", "b"]);
    assert_eq!(first["has_more"], true);
    // The page's last conversation gets a turn before the next page is read.
    t.say("b", "again").await;
    let after = first["last_id"].as_str().unwrap();
    let second = t
        .get(&format!("/v1/conversations?limit=2&after={after}"))
        .await
        .json();
    assert_eq!(ids(&second), ["a"]);
    assert_eq!(second["has_more"], false);
}

#[tokio::test]
async fn chats_listed_before_the_list_by_birth_existed_are_listed_by_it() {
    let t = TestApp::start().await;
    for chat in ["old", "older"] {
        t.say(chat, "hello").await;
    }
    // As a version before the list by birth left them: only the list by last write.
    t.redis.query(&["DEL", "chat-proxy:usage:{open}:made"]);
    t.redis
        .query(&["HSET", "chat-proxy:chat:{older}:meta", "born", "1700000000"]);
    let listed = t.get("/v1/conversations").await.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["old", "older"]);
    let after = t.get("/v1/conversations?after=old").await.json();
    assert_eq!(after["data"][0]["id"], "older");
}
