//! `POST /v1/responses/compact` and `/v1/responses/input_tokens`: a stored chain (or a
//! conversation, for a count) and an input, sent upstream statelessly and whole. A
//! compaction is answered as upstream's `response.compaction`, its tokens counted, nothing
//! stored, and its `compaction` item continues a chain as the input of the next turn; a
//! count is answered as upstream's `response.input_tokens` and changes nothing.

use lambda_http::http::Method;
use serde_json::{json, Value};

use crate::support::openai::item_text;
use crate::support::{Reply, TestApp};

async fn post(t: &TestApp, path: &str, body: Value) -> Reply {
    t.call_with(
        Method::POST,
        path,
        lambda_http::Body::from(body.to_string()),
        &[],
    )
    .await
}

fn id_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// The chain `one`, `two` (each answered `reply to: ...`), and the newest response's id.
async fn chain(t: &TestApp) -> String {
    let one = id_of(&post(t, "/v1/responses", json!({"input": "one"})).await);
    let two = json!({"input": "two", "previous_response_id": one});
    id_of(&post(t, "/v1/responses", two).await)
}

fn keys_but_usage(t: &TestApp) -> Vec<(String, String)> {
    t.dump()
        .into_iter()
        .filter(|(key, _)| !key.contains(":usage:"))
        .collect()
}

#[tokio::test]
async fn a_stored_chain_is_compacted_upstream_whole_and_nothing_is_stored() {
    let t = TestApp::start().await;
    let two = chain(&t).await;
    let before = keys_but_usage(&t);
    let spent_before = t.get("/usage").await.json()["day"]["total_tokens"].clone();

    let reply = post(
        &t,
        "/v1/responses/compact",
        json!({"model": "gpt-4o-mini", "previous_response_id": two, "input": "and three",
            "instructions": "Be brief.", "prompt_cache_key": "k1"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Upstream was asked once, statelessly, with the whole chain then the new input.
    let sent = t.openai.bodies("/v1/responses/compact").await;
    assert_eq!(sent.len(), 1, "one compaction upstream");
    let sent = &sent[0];
    let input = sent["input"].as_array().unwrap();
    let texts: Vec<String> = input.iter().map(item_text).collect();
    assert_eq!(
        texts,
        ["one", "reply to: one", "two", "reply to: two", "and three"]
    );
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["instructions"], "Be brief.");
    assert_eq!(
        sent["prompt_cache_key"], "k1",
        "compaction's own parameters pass"
    );
    for absent in [
        "previous_response_id",
        "store",
        "stream",
        "include",
        "conversation",
    ] {
        assert!(sent.get(absent).is_none(), "{absent} sent upstream: {sent}");
    }

    // The answer is upstream's compaction as it came.
    let answer = reply.json();
    assert_eq!(answer["object"], "response.compaction");
    let output = answer["output"].as_array().unwrap();
    let kinds: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "message", "message", "compaction"]);
    assert_eq!(output[3]["encrypted_content"], "gAAAAcompacted:5");

    // Nothing stored; the tokens counted to the caller.
    assert_eq!(keys_but_usage(&t), before, "no chat key changed");
    let spent_after = t.get("/usage").await.json()["day"]["total_tokens"].clone();
    assert_eq!(
        spent_after.as_u64().unwrap(),
        spent_before.as_u64().unwrap() + 5 + 7,
        "the compaction's 5 input and 7 output tokens are counted"
    );
}

#[tokio::test]
async fn a_compaction_item_continues_a_chain_as_the_next_turns_input() {
    let t = TestApp::start().await;
    let two = chain(&t).await;
    let compacted = post(
        &t,
        "/v1/responses/compact",
        json!({"model": "gpt-4o-mini", "previous_response_id": two}),
    )
    .await;
    assert_eq!(compacted.status, 200, "{}", compacted.text);
    let mut input = compacted.json()["output"].as_array().unwrap().clone();
    assert_eq!(
        input.last().unwrap()["encrypted_content"],
        "gAAAAcompacted:4"
    );
    input.push(json!({"role": "user", "content": "three"}));

    // The caller starts again from the compacted window, as Codex and the Agents SDK do.
    let next = post(&t, "/v1/responses", json!({"input": input})).await;
    let next_id = id_of(&next);
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    let sent_input = sent["input"].as_array().unwrap();
    assert_eq!(
        sent_input.len(),
        4,
        "two user messages, the compaction, three"
    );
    assert_eq!(sent_input[2]["type"], "compaction");
    assert_eq!(sent_input[2]["encrypted_content"], "gAAAAcompacted:4");

    // Kept exactly with its turn, and sent again by the turn after it as it was sent (the
    // user messages compaction kept, the item, what followed), with nothing before it.
    let after = json!({"input": "four", "previous_response_id": next_id});
    id_of(&post(&t, "/v1/responses", after).await);
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    let kept = sent["input"].as_array().unwrap();
    assert_eq!(kept[..4], sent_input[..], "the compacted window, exactly");
    let texts: Vec<String> = kept[4..].iter().map(item_text).collect();
    assert_eq!(texts, ["reply to: three", "four"]);
}

#[tokio::test]
async fn what_compaction_does_not_take_is_refused_and_nothing_reaches_upstream() {
    let t = TestApp::start().await;
    let two = chain(&t).await;
    let before = keys_but_usage(&t);
    for (body, status, code, param) in [
        (
            json!({"previous_response_id": two, "stream": true}),
            400,
            "unknown_parameter",
            "stream",
        ),
        (
            json!({"input": "x", "store": false}),
            400,
            "unknown_parameter",
            "store",
        ),
        (
            json!({"input": "x", "conversation": "trip"}),
            400,
            "unknown_parameter",
            "conversation",
        ),
        (
            json!({"model": "gpt-4o-mini"}),
            400,
            "invalid_value",
            "input",
        ),
        (json!({"input": ""}), 400, "invalid_value", "input"),
        (
            json!({"input": [{"type": "nonsense"}]}),
            400,
            "invalid_value",
            "input",
        ),
        (
            json!({"previous_response_id": "resp_0123456789abcdef0123456789abcdef_~0123456789abcdef0123456789abcdef"}),
            404,
            "previous_response_not_found",
            "previous_response_id",
        ),
    ] {
        let reply = post(&t, "/v1/responses/compact", body.clone()).await;
        reply.assert_error(status, code);
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
    }
    assert!(t.openai.bodies("/v1/responses/compact").await.is_empty());
    assert_eq!(keys_but_usage(&t), before, "nothing stored");
    // Only POST: a GET is not a response's id.
    let get = t.get("/v1/responses/compact").await;
    assert_eq!(get.status, 405, "{}", get.text);
}

#[tokio::test]
async fn another_callers_chain_is_not_found() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-a1,bob:sk-b2")]).await;
    let as_alice = [("authorization", "Bearer sk-a1")];
    let as_bob = [("authorization", "Bearer sk-b2")];
    let body = json!({"input": "secret plans"}).to_string();
    let made = t
        .call_with(Method::POST, "/v1/responses", body.into(), &as_alice)
        .await;
    let id = id_of(&made);
    let compact = json!({"previous_response_id": id}).to_string();
    t.call_with(
        Method::POST,
        "/v1/responses/compact",
        compact.into(),
        &as_bob,
    )
    .await
    .assert_error(404, "previous_response_not_found");
    assert!(t.openai.bodies("/v1/responses/compact").await.is_empty());
}

#[tokio::test]
async fn a_count_is_of_what_the_next_turn_would_send_and_changes_nothing() {
    let t = TestApp::start().await;
    let two = chain(&t).await;
    let before = keys_but_usage(&t);
    let usage_before = t.get("/usage").await.json();

    let reply = post(
        &t,
        "/v1/responses/input_tokens",
        json!({"model": "gpt-4o-mini", "previous_response_id": two, "input": "three",
            "instructions": "Be brief.", "tools": []}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"object": "response.input_tokens", "input_tokens": 5 + 1})
    );
    let sent = t.openai.bodies("/v1/responses/input_tokens").await;
    assert_eq!(sent.len(), 1);
    let texts: Vec<String> = sent[0]["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(item_text)
        .collect();
    assert_eq!(
        texts,
        ["one", "reply to: one", "two", "reply to: two", "three"]
    );
    assert_eq!(sent[0]["tools"], json!([]), "a count's own parameters pass");
    for absent in [
        "previous_response_id",
        "store",
        "include",
        "prompt_cache_key",
        "stream",
    ] {
        assert!(
            sent[0].get(absent).is_none(),
            "{absent} sent upstream: {}",
            sent[0]
        );
    }
    // Nothing kept, nothing counted.
    assert_eq!(keys_but_usage(&t), before);
    assert_eq!(t.get("/usage").await.json(), usage_before);
}

#[tokio::test]
async fn a_conversation_is_counted_with_its_prompts_and_its_items() {
    let t = TestApp::start().await;
    t.post("/trip/system", json!({"content": "Answer like a pirate."}))
        .await;
    let turn = t.post("/trip/chat", json!({"content": "Lisbon?"})).await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    let reply = post(
        &t,
        "/v1/responses/input_tokens",
        json!({"conversation": "trip", "input": "And Porto?"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = t
        .openai
        .bodies("/v1/responses/input_tokens")
        .await
        .pop()
        .unwrap();
    let texts: Vec<String> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(item_text)
        .collect();
    // The prompts as system messages, the chat's turn, then the new input.
    assert_eq!(texts.len(), 5, "{texts:?}");
    assert_eq!(texts[1], "Answer like a pirate.");
    assert_eq!(texts[2..], ["Lisbon?", "reply to: Lisbon?", "And Porto?"]);
    assert!(sent.get("conversation").is_none());
    assert_eq!(reply.json()["input_tokens"], 5);

    for (body, status, code) in [
        (
            json!({"conversation": "nowhere", "input": "x"}),
            404,
            "conversation_not_found",
        ),
        (
            json!({"input": "x", "stream": true}),
            400,
            "unknown_parameter",
        ),
        (
            json!({"input": "x", "store": true}),
            400,
            "unknown_parameter",
        ),
        (json!({}), 400, "invalid_value"),
    ] {
        post(&t, "/v1/responses/input_tokens", body)
            .await
            .assert_error(status, code);
    }
    assert_eq!(t.openai.bodies("/v1/responses/input_tokens").await.len(), 1);
}

/// `context_management` that compacts an input of `threshold` items or more (the fake
/// counts a token an item).
fn compacting(threshold: u64) -> Value {
    json!([{"type": "compaction", "compact_threshold": threshold}])
}

async fn sent_input(t: &TestApp) -> Vec<Value> {
    let body = t.openai.bodies("/v1/responses").await.pop().unwrap();
    body["input"].as_array().unwrap().clone()
}

#[tokio::test]
async fn after_a_compaction_item_a_chain_sends_only_what_follows_it() {
    let t = TestApp::start().await;
    let one = id_of(
        &post(
            &t,
            "/v1/responses",
            json!({"input": "one", "context_management": compacting(3)}),
        )
        .await,
    );
    let second = post(
        &t,
        "/v1/responses",
        json!({"input": "two", "previous_response_id": one, "context_management": compacting(3)}),
    )
    .await;
    let two = id_of(&second);
    // Upstream got the whole chain (three items) and compacted it; the item is passed on,
    // as it came, and kept with the turn.
    assert_eq!(
        t.openai.bodies("/v1/responses").await[1]["context_management"],
        compacting(3)
    );
    let output = second.json()["output"].clone();
    assert_eq!(output[0]["type"], "compaction");
    assert_eq!(output[0]["encrypted_content"], "gAAAAcompacted:3");
    assert_eq!(
        t.get(&format!("/v1/responses/{two}")).await.json()["output"],
        output
    );

    // The next turn sends the compaction item and what follows it, not the turns before.
    let three = id_of(
        &post(
            &t,
            "/v1/responses",
            json!({"input": "three", "previous_response_id": two}),
        )
        .await,
    );
    let input = sent_input(&t).await;
    assert_eq!(input.len(), 3, "{input:?}");
    assert_eq!(input[0], output[0], "the compaction item, exactly");
    assert_eq!(item_text(&input[1]), "reply to: two");
    assert_eq!(item_text(&input[2]), "three");

    // And so does the one after (no new compaction: the same item still leads).
    id_of(
        &post(
            &t,
            "/v1/responses",
            json!({"input": "four", "previous_response_id": three}),
        )
        .await,
    );
    let texts: Vec<String> = sent_input(&t).await.iter().map(item_text).collect();
    assert_eq!(
        texts[1..],
        ["reply to: two", "three", "reply to: three", "four"]
    );

    // What was stored is whole: each response's input items are its own.
    let items = t
        .get(&format!("/v1/responses/{two}/input_items"))
        .await
        .json();
    assert_eq!(items["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_compacted_conversation_still_shows_its_whole_history_and_the_chat_door_sends_it() {
    let t = TestApp::start().await;
    let made = post(&t, "/v1/conversations", json!({})).await;
    assert_eq!(made.status, 200, "{}", made.text);
    let conversation = made.json()["id"].as_str().unwrap().to_owned();
    for text in ["one", "two", "three"] {
        let body = json!({"input": text, "conversation": conversation,
            "context_management": compacting(5)});
        id_of(&post(&t, "/v1/responses", body).await);
    }
    // The second turn sent 4 items (the global prompt, one, its reply, two): no compaction;
    // the third sent 6, and its output starts with a compaction item.
    let last = t.openai.bodies("/v1/responses").await;
    assert_eq!(last[1]["input"].as_array().unwrap().len(), 4);
    assert_eq!(last[2]["input"].as_array().unwrap().len(), 6);
    id_of(
        &post(
            &t,
            "/v1/responses",
            json!({"input": "four", "conversation": conversation}),
        )
        .await,
    );
    let input = sent_input(&t).await;
    let texts: Vec<String> = input.iter().map(item_text).collect();
    // The conversation's prompt first, then the compaction item and what follows it.
    assert_eq!(input[1]["type"], "compaction", "{input:?}");
    assert_eq!(texts[0], "You are a helpful assistant.");
    assert_eq!(texts[2..], ["reply to: three", "four"]);

    // Listed whole: every question and answer.
    let chat = t.get(&format!("/{conversation}/chat")).await.json();
    assert_eq!(chat.as_array().unwrap().len(), 8, "{chat}");
    // The chat door cannot send a compaction item: it sends the whole history.
    let turn = t
        .post(&format!("/{conversation}/chat"), json!({"content": "five"}))
        .await;
    assert_eq!(turn.status, 200, "{}", turn.text);
    let messages = t.openai.chat_bodies().await.pop().unwrap()["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 1 + 8 + 1, "{messages}");
}

#[tokio::test]
async fn a_compaction_in_a_tool_results_turn_leads_the_next_and_nothing_is_claimed() {
    let t = TestApp::start().await;
    t.openai
        .fail_responses(
            wiremock::ResponseTemplate::new(200).set_body_json(
                crate::support::openai::function_call_response("gpt-4o-mini", "lookup", "{}"),
            ),
            1,
        )
        .await;
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    let asked = post(
        &t,
        "/v1/responses",
        json!({"input": "look it up", "tools": tools}),
    )
    .await;
    let asked_id = id_of(&asked);
    let result = json!([{"type": "function_call_output", "call_id": "call_0abc", "output": "42"}]);
    // A count and a compaction of the results, before the turn that sends them: neither
    // claims the call's turn, so the turn itself goes on in place.
    for path in ["/v1/responses/input_tokens", "/v1/responses/compact"] {
        let body = json!({"previous_response_id": asked_id, "input": result, "tools": tools});
        let body = if path.ends_with("compact") {
            json!({"previous_response_id": asked_id, "input": result})
        } else {
            body
        };
        let reply = post(&t, path, body).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    // The results' turn is compacted upstream (three items: past the threshold).
    let answered = post(
        &t,
        "/v1/responses",
        json!({"previous_response_id": asked_id, "input": result, "tools": tools,
            "context_management": compacting(3)}),
    )
    .await;
    let answered_id = id_of(&answered);
    assert_eq!(answered.json()["output"][0]["type"], "compaction");
    assert_eq!(
        answered_id[38..],
        asked_id[38..],
        "continued in place: nothing held the chain's newest turn"
    );
    // The next turn starts at that compaction item: not skipped as a turn that answers a
    // call, and the result before it not sent without its call.
    id_of(
        &post(
            &t,
            "/v1/responses",
            json!({"previous_response_id": answered_id, "input": "thanks"}),
        )
        .await,
    );
    let input = sent_input(&t).await;
    assert_eq!(input[0], answered.json()["output"][0], "{input:?}");
    let texts: Vec<String> = input[1..].iter().map(item_text).collect();
    assert_eq!(texts, ["reply to: 42", "thanks"]);
}
