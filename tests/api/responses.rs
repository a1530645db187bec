//! OpenAI's Responses API kept in the proxy: chains of `previous_response_id`, branches,
//! conversations (the seed's chats), tool calls and reasoning items kept exactly, streamed
//! events under the proxy's ids, and the stored responses' routes. Upstream is asked with
//! `store: false` and the whole input every time; the tests check what it was sent.

use lambda_http::http::Method;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::openai::function_call_response;
use crate::support::streaming::{Fault, StreamScript};
use crate::support::{Reply, TestApp};

async fn respond(t: &TestApp, body: Value) -> Reply {
    respond_as(t, body, &[]).await
}

async fn respond_as(t: &TestApp, body: Value, headers: &[(&str, &str)]) -> Reply {
    t.call_with(
        Method::POST,
        "/v1/responses",
        lambda_http::Body::from(body.to_string()),
        headers,
    )
    .await
}

/// A response's id, after checking the call was answered.
fn id_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// The input upstream was sent by the newest Responses request.
async fn last_input(t: &TestApp) -> Vec<Value> {
    let body = t
        .openai
        .bodies("/v1/responses")
        .await
        .pop()
        .expect("upstream was asked");
    assert_eq!(body["store"], false, "OpenAI is asked to keep nothing");
    assert!(body.get("previous_response_id").is_none() && body.get("conversation").is_none());
    body["input"].as_array().unwrap().clone()
}

fn texts(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(crate::support::openai::item_text)
        .collect()
}

#[tokio::test]
async fn a_chain_of_responses_sends_upstream_the_whole_history_each_turn() {
    let t = TestApp::start().await;
    let first = respond(&t, json!({"model": "gpt-4o-mini", "input": "one"})).await;
    let answer = first.json();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["store"], true);
    assert_eq!(answer["previous_response_id"], Value::Null);
    assert_eq!(answer["output"][0]["content"][0]["text"], "reply to: one");
    let one = id_of(&first);
    assert!(one.starts_with("resp_"), "{one}");
    assert_eq!(
        last_input(&t).await,
        [json!({"role": "user", "content": "one"})]
    );

    let two = id_of(&respond(&t, json!({"input": "two", "previous_response_id": one})).await);
    let three_reply = respond(
        &t,
        json!({"input": [{"role": "user", "content": "three"}],
        "previous_response_id": two}),
    )
    .await;
    assert_eq!(three_reply.json()["previous_response_id"], two.as_str());
    let input = last_input(&t).await;
    assert_eq!(
        texts(&input),
        ["one", "reply to: one", "two", "reply to: two", "three"],
        "the whole chain, in order"
    );
    // Upstream's own output items come back exactly, with their ids.
    assert_eq!(input[1], answer["output"][0]);
    // Stored before it was answered: it reads back as answered.
    let stored = t.get(&format!("/v1/responses/{one}")).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.json(), answer);
}

#[tokio::test]
async fn naming_an_earlier_response_branches_and_leaves_the_chain_untouched() {
    let t = TestApp::start().await;
    let one = id_of(&respond(&t, json!({"input": "one"})).await);
    let two = id_of(&respond(&t, json!({"input": "two", "previous_response_id": one})).await);
    let branch = id_of(&respond(&t, json!({"input": "other", "previous_response_id": one})).await);
    assert_eq!(
        texts(&last_input(&t).await),
        ["one", "reply to: one", "other"]
    );
    // The branch goes on by itself, and so does the chain.
    respond(
        &t,
        json!({"input": "branch again", "previous_response_id": branch}),
    )
    .await;
    assert_eq!(
        texts(&last_input(&t).await),
        [
            "one",
            "reply to: one",
            "other",
            "reply to: other",
            "branch again"
        ]
    );
    respond(&t, json!({"input": "three", "previous_response_id": two})).await;
    assert_eq!(
        texts(&last_input(&t).await),
        ["one", "reply to: one", "two", "reply to: two", "three"]
    );
}

#[tokio::test]
async fn store_false_keeps_nothing_and_still_continues_a_chain() {
    let t = TestApp::start().await;
    let one = id_of(&respond(&t, json!({"input": "one"})).await);
    let before = t.dump();
    let loose = respond(
        &t,
        json!({"input": "aside", "store": false, "previous_response_id": one}),
    )
    .await;
    let loose_id = id_of(&loose);
    assert_eq!(loose.json()["store"], false);
    assert_eq!(
        texts(&last_input(&t).await),
        ["one", "reply to: one", "aside"]
    );
    let after: Vec<_> = t
        .dump()
        .into_iter()
        .filter(|(k, _)| !k.contains(":usage:"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !k.contains(":usage:"))
        .collect();
    assert_eq!(after, before, "no chat key changed");
    t.get(&format!("/v1/responses/{loose_id}"))
        .await
        .assert_error(404, "response_not_found");
}

#[tokio::test]
async fn a_conversation_is_a_chat_with_its_prompts_and_the_seed_sees_its_turns() {
    let t = TestApp::start().await;
    t.post("/trip/system", json!({"content": "Plan trips."}))
        .await;
    t.say("trip", "Lisbon?").await;
    let reply = respond(
        &t,
        json!({"input": "three days", "conversation": "trip",
        "instructions": "Answer in French."}),
    )
    .await;
    assert_eq!(reply.json()["conversation"], json!({"id": "trip"}));
    assert_eq!(reply.json()["instructions"], "Answer in French.");
    let input = last_input(&t).await;
    assert_eq!(
        input[..3],
        [
            json!({"role": "system", "content": "You are a helpful assistant."}),
            json!({"role": "system", "content": "Plan trips."}),
            json!({"role": "system", "content": "Answer in French."}),
        ]
    );
    assert_eq!(
        texts(&input[3..]),
        ["Lisbon?", "reply to: Lisbon?", "three days"]
    );
    let transcript = t.transcript("trip").await;
    assert_eq!(
        transcript[2],
        json!({"role": "user", "content": "three days"})
    );
    assert_eq!(
        transcript[3],
        json!({"role": "assistant", "content": "reply to: three days"})
    );
    // The seed's next turn has the response in its history, and instructions stay behind.
    t.say("trip", "and food?").await;
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "You are a helpful assistant.",
            "Plan trips.",
            "Lisbon?",
            "reply to: Lisbon?",
            "three days",
            "reply to: three days",
            "and food?"
        ]
    );
}

#[tokio::test]
async fn what_names_nothing_is_a_404_and_bad_input_a_400_and_nothing_is_stored() {
    let t = TestApp::start().await;
    let one = id_of(&respond(&t, json!({"input": "one"})).await);
    let before = t.dump();
    let asked = t.openai.bodies("/v1/responses").await.len();
    respond(&t, json!({"input": "x", "conversation": "nowhere"}))
        .await
        .assert_error(404, "conversation_not_found");
    respond(
        &t,
        json!({"input": "x", "previous_response_id": "resp_nope"}),
    )
    .await
    .assert_error(404, "previous_response_not_found");
    let unknown_turn = format!("resp_{}{}", "f".repeat(32), &one[37..]);
    respond(
        &t,
        json!({"input": "x", "previous_response_id": unknown_turn}),
    )
    .await
    .assert_error(404, "previous_response_not_found");
    let both = respond(
        &t,
        json!({"input": "x", "previous_response_id": one, "conversation": "trip"}),
    )
    .await;
    both.assert_error(400, "invalid_request");
    assert_eq!(both.json()["error"]["param"], "conversation");
    let orphan = respond(
        &t,
        json!({"previous_response_id": one,
        "input": [{"type": "function_call_output", "call_id": "call_nobody", "output": "x"}]}),
    )
    .await;
    orphan.assert_error(400, "invalid_function_call_output");
    assert_eq!(orphan.json()["error"]["param"], "input");
    for bad in [
        json!({}),
        json!({"input": []}),
        json!({"input": [1]}),
        json!({"input": "x", "store": "no"}),
    ] {
        respond(&t, bad.clone())
            .await
            .assert_error(400, "invalid_value");
    }
    respond(&t, json!({"input": "x", "model": "gpt-secret"}))
        .await
        .assert_error(400, "model_not_allowed");
    assert_eq!(t.dump(), before, "nothing stored");
    assert_eq!(
        t.openai.bodies("/v1/responses").await.len(),
        asked,
        "nothing asked"
    );
}

#[tokio::test]
async fn a_function_tool_loop_keeps_every_item_in_order() {
    let t = TestApp::start().await;
    t.openai
        .fail_responses(
            ResponseTemplate::new(200).set_body_json(function_call_response(
                "gpt-4o-mini",
                "get_weather",
                r#"{"city":"Oslo"}"#,
            )),
            1,
        )
        .await;
    let tools = json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let asked = respond(&t, json!({"input": "weather in Oslo?", "tools": tools})).await;
    let call = asked.json()["output"][0].clone();
    assert_eq!(call["type"], "function_call");
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    assert_eq!(sent["tools"], tools, "tools passed on");
    let answered = respond(&t, json!({"previous_response_id": id_of(&asked), "tools": tools,
        "input": [{"type": "function_call_output", "call_id": "call_0abc", "output": "{\"temp\": 21}"}]})).await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    let input = last_input(&t).await;
    assert_eq!(input[1], call, "the call as upstream made it");
    assert_eq!(
        input[2],
        json!({"type": "function_call_output", "call_id": "call_0abc", "output": "{\"temp\": 21}"})
    );
    // Both are kept in a chain of their own (a chat no seed route names).
    let id = id_of(&answered);
    assert!(id[38..].starts_with('~'), "{id}");
    assert_eq!(t.get(&format!("/v1/responses/{id}")).await.status, 200);
}

#[tokio::test]
async fn reasoning_items_are_kept_and_sent_back_but_shown_only_when_asked() {
    let t = TestApp::with_env(&[("ALLOWED_MODELS", "*")]).await;
    let first = respond(
        &t,
        json!({"model": "o4-mini", "input": "think", "reasoning": {"effort": "low"}}),
    )
    .await;
    let sent = t.openai.bodies("/v1/responses").await.pop().unwrap();
    assert_eq!(sent["include"], json!(["reasoning.encrypted_content"]));
    let reasoning = &first.json()["output"][0];
    assert_eq!(reasoning["type"], "reasoning");
    assert!(
        reasoning.get("encrypted_content").is_none(),
        "not asked for: {reasoning}"
    );
    respond(
        &t,
        json!({"model": "o4-mini", "input": "more", "previous_response_id": id_of(&first)}),
    )
    .await;
    let input = last_input(&t).await;
    assert_eq!(input[1]["type"], "reasoning");
    assert!(
        input[1]["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("gAAAA"),
        "sent back whole"
    );
    let shown = respond(
        &t,
        json!({"model": "o4-mini", "input": "show",
        "include": ["reasoning.encrypted_content"]}),
    )
    .await;
    assert!(shown.json()["output"][0]["encrypted_content"].is_string());
    // A model that does not reason is not asked for it.
    respond(&t, json!({"model": "gpt-4o-mini", "input": "plain"})).await;
    let plain = t.openai.bodies("/v1/responses").await.pop().unwrap();
    assert!(plain.get("include").is_none(), "{plain}");
}

#[tokio::test]
async fn input_items_are_listed_and_paged_and_a_deleted_response_is_gone() {
    let t = TestApp::start().await;
    let id = id_of(
        &respond(
            &t,
            json!({"input": [
        {"role": "user", "content": "a"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "b"}]},
        {"role": "user", "content": "c", "id": "msg_mine"}]}),
        )
        .await,
    );
    let page = t
        .get(&format!("/v1/responses/{id}/input_items?limit=2&order=asc"))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let page = page.json();
    assert_eq!(page["object"], "list");
    assert_eq!(texts(page["data"].as_array().unwrap()), ["a", "b"]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], page["data"][0]["id"]);
    let after = page["last_id"].as_str().unwrap();
    let rest = t
        .get(&format!(
            "/v1/responses/{id}/input_items?order=asc&after={after}"
        ))
        .await
        .json();
    assert_eq!(rest["data"][0]["id"], "msg_mine");
    assert_eq!(rest["has_more"], false);
    let newest_first = t
        .get(&format!("/v1/responses/{id}/input_items"))
        .await
        .json();
    assert_eq!(
        texts(newest_first["data"].as_array().unwrap()),
        ["c", "b", "a"]
    );
    t.get(&format!("/v1/responses/{id}/input_items?limit=0"))
        .await
        .assert_error(400, "invalid_value");

    let deleted = t
        .call(
            Method::DELETE,
            &format!("/v1/responses/{id}"),
            lambda_http::Body::Empty,
        )
        .await;
    assert_eq!(
        deleted.json(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    t.get(&format!("/v1/responses/{id}"))
        .await
        .assert_error(404, "response_not_found");
    t.call(
        Method::DELETE,
        &format!("/v1/responses/{id}"),
        lambda_http::Body::Empty,
    )
    .await
    .assert_error(404, "response_not_found");
    respond(&t, json!({"input": "x", "previous_response_id": id}))
        .await
        .assert_error(404, "previous_response_not_found");
}

#[tokio::test]
async fn a_streamed_response_passes_events_on_under_the_proxys_id_and_is_kept() {
    let t = TestApp::start().await;
    let streamed = respond(&t, json!({"input": "tell me more", "stream": true})).await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    let events = streamed.events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert!(
        kinds
            .iter()
            .filter(|k| **k == "response.output_text.delta")
            .count()
            >= 3
    );
    let created = events[0].json();
    let completed = events.last().unwrap().json();
    let id = completed["response"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["response"]["id"],
        id.as_str(),
        "one id from the first event"
    );
    assert!(id.starts_with("resp_") && id.contains('~'), "{id}");
    // Kept by the time the stream ended: continued at once.
    respond(&t, json!({"input": "go on", "previous_response_id": id})).await;
    assert_eq!(
        texts(&last_input(&t).await),
        ["tell me more", "reply to: tell me more", "go on"]
    );
}

#[tokio::test]
async fn a_stream_cut_before_completion_stores_nothing_and_ends_with_an_error_event() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        fault: Fault::CutAfter(2),
        ..Default::default()
    });
    let before = t.dump();
    let cut = respond(
        &t,
        json!({"input": "one two three four five", "stream": true}),
    )
    .await;
    let events = cut.events();
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("error"), "{}", cut.text);
    assert_eq!(last.json()["type"], "error");
    let after: Vec<_> = t
        .dump()
        .into_iter()
        .filter(|(k, _)| !k.contains(":usage:"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !k.contains(":usage:"))
        .collect();
    assert_eq!(after, before, "nothing stored");
}

#[tokio::test]
async fn callers_never_reach_each_others_responses() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1,bob:sk-bob-2")]).await;
    let alice = [("authorization", "Bearer sk-alice-1")];
    let bob = [("authorization", "Bearer sk-bob-2")];
    let id = id_of(&respond_as(&t, json!({"input": "secret"}), &alice).await);
    let path = format!("/v1/responses/{id}");
    let get = |who: &'static [(&'static str, &'static str)]| {
        t.call_with(Method::GET, &path, lambda_http::Body::Empty, who)
    };
    assert_eq!(
        get(&[("authorization", "Bearer sk-alice-1")]).await.status,
        200
    );
    get(&[("authorization", "Bearer sk-bob-2")])
        .await
        .assert_error(404, "response_not_found");
    respond_as(&t, json!({"input": "x", "previous_response_id": id}), &bob)
        .await
        .assert_error(404, "previous_response_not_found");
}

#[tokio::test]
async fn a_response_continuing_a_chain_costs_two_round_trips_on_the_wire() {
    let t = TestApp::over_relay(&[]).await;
    let first = id_of(&respond(&t, json!({"input": "start"})).await);
    let mut id = first.clone();
    for i in 0..5 {
        id = id_of(
            &respond(
                &t,
                json!({"input": format!("turn {i}"), "previous_response_id": id}),
            )
            .await,
        );
    }
    let turn = respond(&t, json!({"input": "measured", "previous_response_id": id}));
    crate::turns::assert_trips(
        crate::turns::round_trips(&t, turn).await,
        2,
        "a chained response",
    );
    // A branch writes the history it copies in the same one write.
    let branch = respond(
        &t,
        json!({"input": "branch", "previous_response_id": first}),
    );
    crate::turns::assert_trips(crate::turns::round_trips(&t, branch).await, 2, "a branch");
    assert_eq!(
        texts(&last_input(&t).await),
        ["start", "reply to: start", "branch"]
    );
    // An item of the chain continued, referenced, is found in the turn's own read.
    let said = t.get(&format!("/v1/responses/{id}")).await.json()["output"][0]["id"].clone();
    let referenced = respond(
        &t,
        json!({"input": [reference(&said), user("again")], "previous_response_id": id}),
    );
    let trips = crate::turns::round_trips(&t, referenced).await;
    crate::turns::assert_trips(trips, 2, "a chained response referencing its chain's item");
    // The whole history by reference, with no previous response (the Vercel AI SDK's
    // way): where the items are is read beside the turn's read, then their chain, one
    // round trip more.
    let whole = respond(
        &t,
        json!({"input": [user("start"), reference(&said), user("once more")]}),
    );
    let trips = crate::turns::round_trips(&t, whole).await;
    crate::turns::assert_trips(trips, 3, "a new chain referencing another chain's item");
    assert_eq!(last_input(&t).await[1]["id"], said);
}

/// A user message as the Vercel AI SDK sends it.
fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"type": "input_text", "text": text}]})
}

fn reference(id: &Value) -> Value {
    json!({"type": "item_reference", "id": id})
}

#[tokio::test]
async fn an_item_reference_is_sent_upstream_and_kept_as_the_item_it_names() {
    // The Vercel AI SDK's default: the whole history again, earlier outputs by reference,
    // no previous_response_id. OpenAI, asked with store: false, knows no item by its id
    // (the fake refuses a reference as it does).
    let t = TestApp::start().await;
    let first = respond(&t, json!({"input": [user("one")]})).await;
    let said = first.json()["output"][0].clone();
    assert_eq!(said["type"], "message", "{}", first.text);
    let second = respond(
        &t,
        json!({"input": [user("one"), reference(&said["id"]), user("two")]}),
    )
    .await;
    let second = id_of(&second);
    let sent = last_input(&t).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[1], said,
        "the reference went upstream as the whole item"
    );
    // Kept whole: the response's input items, and what a chain from it sends.
    let listed = t
        .get(&format!("/v1/responses/{second}/input_items?order=asc"))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json()["data"][1], said);
    let third = respond(
        &t,
        json!({"input": "three", "previous_response_id": second}),
    )
    .await;
    assert_eq!(third.status, 200, "{}", third.text);
    let sent = last_input(&t).await;
    assert!(sent.iter().all(|item| item["type"] != "item_reference"));
    assert_eq!(
        texts(&sent),
        ["one", "reply to: one", "two", "reply to: two", "three"]
    );
    // A reference to an item of the chain continued is found in the turn's own read, and
    // so is one made by a conversation (the id the proxy gave it when listed).
    let third_said = third.json()["output"][0].clone();
    let fourth = respond(
        &t,
        json!({"input": [reference(&third_said["id"]), user("four")],
            "previous_response_id": third.json()["id"]}),
    )
    .await;
    assert_eq!(fourth.status, 200, "{}", fourth.text);
    let sent = last_input(&t).await;
    assert_eq!(sent[sent.len() - 2], third_said);
}

#[tokio::test]
async fn a_reference_to_an_item_the_caller_has_not_is_a_404_and_nothing_is_asked_or_kept() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1,bob:sk-bob-2")]).await;
    let alice = [("authorization", "Bearer sk-alice-1")];
    let bob = [("authorization", "Bearer sk-bob-2")];
    let first = respond_as(&t, json!({"input": "secret"}), &alice).await;
    let said = first.json()["output"][0]["id"].clone();
    let asked = t.openai.bodies("/v1/responses").await.len();
    let before = t.dump();
    for (who, id) in [(&bob, said.clone()), (&alice, json!("msg_unknown"))] {
        for stream in [false, true] {
            let body = json!({"input": [reference(&id), user("more")], "stream": stream});
            let reply = respond_as(&t, body, who).await;
            reply.assert_error(404, "item_not_found");
            let error = reply.json()["error"].clone();
            assert_eq!(error["param"], "input");
            assert!(error["message"]
                .as_str()
                .unwrap()
                .contains(id.as_str().unwrap()));
        }
    }
    respond_as(&t, json!({"input": [{"type": "item_reference"}]}), &alice)
        .await
        .assert_error(400, "invalid_value");
    assert_eq!(t.openai.bodies("/v1/responses").await.len(), asked);
    assert_eq!(t.dump(), before, "nothing was stored");
    // Alice's own reference is found.
    let own = respond_as(
        &t,
        json!({"input": [reference(&said), user("more")]}),
        &alice,
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.text);
}

#[tokio::test]
async fn a_response_answered_by_one_instance_is_continued_by_another_at_once() {
    let t = TestApp::start().await;
    let other = t.another_instance();
    for stream in [false, true] {
        let reply = respond(&t, json!({"input": "one", "stream": stream})).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let first = if stream {
            let completed = reply.events().last().unwrap().json();
            completed["response"]["id"].as_str().unwrap().to_owned()
        } else {
            id_of(&reply)
        };
        let next = crate::support::send_to(
            other,
            t.request(
                "/v1/responses",
                json!({"input": "two", "previous_response_id": first}),
                &[],
            ),
        )
        .await;
        assert_eq!(next.status, 200, "{}", next.text);
        assert_eq!(
            texts(&last_input(&t).await),
            ["one", "reply to: one", "two"]
        );
    }
}

#[tokio::test]
async fn chains_branches_and_conversations_work_on_a_redis_cluster() {
    let t = TestApp::over_cluster(&[]).await;
    let one = id_of(&respond(&t, json!({"input": "one"})).await);
    let two = id_of(&respond(&t, json!({"input": "two", "previous_response_id": one})).await);
    respond(&t, json!({"input": "three", "previous_response_id": two})).await;
    assert_eq!(
        texts(&last_input(&t).await),
        ["one", "reply to: one", "two", "reply to: two", "three"]
    );
    // A branch is written to a new chain's slot, with the history it copies.
    let branch = id_of(&respond(&t, json!({"input": "other", "previous_response_id": one})).await);
    respond(
        &t,
        json!({"input": "again", "previous_response_id": branch}),
    )
    .await;
    assert_eq!(
        texts(&last_input(&t).await),
        ["one", "reply to: one", "other", "reply to: other", "again"]
    );
    t.say("trip", "seed").await;
    let reply = respond(&t, json!({"input": "more", "conversation": "trip"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("trip").await.as_array().unwrap().len(), 4);
    // Where an item is, recorded in the caller's slot, and the chain it names, in its own.
    let said = t.get(&format!("/v1/responses/{one}")).await.json()["output"][0].clone();
    let whole = respond(
        &t,
        json!({"input": [user("one"), reference(&said["id"]), user("b")]}),
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    assert_eq!(last_input(&t).await[1], said);
}
