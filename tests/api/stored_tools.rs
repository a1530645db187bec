//! A stored chat as agents and frameworks use it through `/v1/chat/completions` with
//! `X-Chat-Id`: tools and their results kept in order, a leading system message taken as
//! the chat's prompt, a whole resent history of which only the new part is kept, and
//! `GET /v1/models/{id}`.

use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::openai::tool_call_completion;
use crate::support::TestApp;

const WEATHER: &str = "call_0abcDEF";

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

async fn complete(t: &TestApp, chat: &str, body: Value) -> crate::support::Reply {
    t.call_with(
        lambda_http::http::Method::POST,
        "/v1/chat/completions",
        lambda_http::Body::from(body.to_string()),
        &[("x-chat-id", chat)],
    )
    .await
}

/// Upstream answers the next turn with a call of `get_weather`.
async fn next_answer_calls_the_tool(t: &TestApp) -> Value {
    let answer = tool_call_completion("gpt-4o-mini", &[("get_weather", r#"{"city":"Oslo"}"#)], 9);
    t.openai
        .fail_chat(ResponseTemplate::new(200).set_body_json(answer.clone()), 1)
        .await;
    answer
}

#[tokio::test]
async fn a_tool_call_and_its_result_are_kept_in_order_and_sent_back() {
    let t = TestApp::start().await;
    let answer = next_answer_calls_the_tool(&t).await;
    let asked = json!({"messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": tools(), "tool_choice": "auto", "parallel_tool_calls": false});
    let first = complete(&t, "agent", asked).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json(), answer, "upstream's answer, as sent");
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(sent["tools"], tools(), "tools passed on");
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["parallel_tool_calls"], false);

    let result = json!({"messages": [{"role": "tool", "tool_call_id": WEATHER, "content": "sunny, 21 C"}],
        "tools": tools()});
    let second = complete(&t, "agent", result).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"];
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": call},
            {"role": "tool", "tool_call_id": WEATHER, "content": "sunny, 21 C"}
        ]),
        "the call and its result, in order"
    );
    // The seed's transcript shows them as text.
    let transcript = t.transcript("agent").await;
    assert_eq!(
        transcript,
        json!([
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "[tool call get_weather({\"city\":\"Oslo\"})]"},
            {"role": "tool", "content": "sunny, 21 C", "tool_call_id": WEATHER},
            {"role": "assistant", "content": "reply to: Weather in Oslo?"}
        ])
    );
}

#[tokio::test]
async fn a_streamed_tool_call_is_kept_whole() {
    let t = TestApp::start().await;
    next_answer_calls_the_tool(&t).await;
    let asked = json!({"messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": tools(), "stream": true});
    let streamed = complete(&t, "agent", asked).await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    let events = streamed.events();
    assert!(
        events.iter().any(|e| e.data.contains("tool_calls")),
        "the deltas were streamed: {}",
        streamed.text
    );
    complete(
        &t,
        "agent",
        json!({"messages": [{"role": "tool", "tool_call_id": WEATHER, "content": "sunny"}]}),
    )
    .await;
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"][2],
        json!({"role": "assistant", "tool_calls": [{"id": WEATHER, "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
        "the call put back together from its deltas"
    );
}

#[tokio::test]
async fn a_tool_result_that_answers_no_call_is_refused_and_nothing_is_stored() {
    let t = TestApp::start().await;
    next_answer_calls_the_tool(&t).await;
    complete(
        &t,
        "agent",
        json!({"messages": [{"role": "user", "content": "Weather?"}]}),
    )
    .await;
    let before = t.dump();
    let asked_upstream = t.openai.chat_bodies().await.len();
    for body in [
        json!({"messages": [{"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]}),
        json!({"messages": [{"role": "tool", "content": "x"}]}),
        json!({"messages": [{"role": "tool", "tool_call_id": WEATHER, "content": 3}]}),
        json!({"messages": [{"role": "tool", "tool_call_id": WEATHER, "content": "x", "name": "n"}]}),
    ] {
        complete(&t, "agent", body.clone())
            .await
            .assert_error(400, "invalid_messages");
    }
    let named = complete(
        &t,
        "agent",
        json!({"messages": [{"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]}),
    )
    .await;
    assert!(named.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("call_unknown"));
    assert_eq!(t.dump(), before, "nothing stored");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        asked_upstream,
        "nothing asked"
    );
    // On a chat whose last reply made no call, a tool result is refused as well.
    t.say("plain", "hi").await;
    complete(
        &t,
        "plain",
        json!({"messages": [{"role": "tool", "tool_call_id": WEATHER, "content": "x"}]}),
    )
    .await
    .assert_error(400, "invalid_messages");
}

#[tokio::test]
async fn a_leading_system_message_is_the_chats_prompt_stored_with_the_turn() {
    let t = TestApp::start().await;
    let turn = |system: &str, text: &str| json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]});
    assert_eq!(
        complete(&t, "fw", turn("Be terse.", "one")).await.status,
        200
    );
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"][1],
        json!({"role": "system", "content": "Be terse."})
    );
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);
    assert_eq!(t.get("/fw/system").await.json()["content"], "Be terse.");

    // The same prompt again: the prefix is unchanged, so upstream's cache holds.
    complete(&t, "fw", turn("Be terse.", "two")).await;
    let again = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        again["messages"],
        json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "reply to: one"},
            {"role": "user", "content": "two"}
        ])
    );

    // A different one replaces it, for this turn and the next.
    complete(
        &t,
        "fw",
        json!({"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "three"}]}),
    )
    .await;
    let changed = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        changed["messages"][1],
        json!({"role": "system", "content": "Be kind."})
    );
    assert_eq!(t.get("/fw/system").await.json()["content"], "Be kind.");
    t.say("fw", "from the seed").await;
    let seed = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(seed["messages"][1]["content"], "Be kind.");
}

#[tokio::test]
async fn a_resent_history_keeps_only_what_is_new() {
    let t = TestApp::start().await;
    let system = json!({"role": "system", "content": "You help."});
    complete(
        &t,
        "mem",
        json!({"messages": [system, {"role": "user", "content": "one"}]}),
    )
    .await;
    let whole = json!({"messages": [
        system,
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "reply to: one"},
        {"role": "user", "content": "two"}
    ]});
    let second = complete(&t, "mem", whole).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "reply to: one"},
            {"role": "user", "content": "two"}
        ]),
        "no message twice"
    );
    assert_eq!(t.transcript("mem").await.as_array().unwrap().len(), 4);
    // A caller that resends only its newest messages agrees with the chat too.
    let newest = json!({"messages": [
        {"role": "assistant", "content": "reply to: two"},
        {"role": "user", "content": "three"}
    ]});
    assert_eq!(complete(&t, "mem", newest).await.status, 200);
    assert_eq!(t.transcript("mem").await.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn a_resent_history_that_differs_is_a_409_naming_where_and_nothing_is_stored() {
    let t = TestApp::start().await;
    t.say("mem", "one").await;
    let before = t.dump();
    let asked_upstream = t.openai.chat_bodies().await.len();
    let differs = json!({"messages": [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "a reply the chat never gave"},
        {"role": "user", "content": "two"}
    ]});
    let conflict = complete(&t, "mem", differs).await;
    conflict.assert_error(409, "history_conflict");
    assert!(
        conflict.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("messages[2]"),
        "{}",
        conflict.text
    );
    assert_eq!(t.dump(), before, "nothing stored, the prompt untouched");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        asked_upstream,
        "nothing asked"
    );
    // A request that ends with the assistant has nothing new to ask.
    complete(
        &t,
        "mem",
        json!({"messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "reply to: one"}]}),
    )
    .await
    .assert_error(400, "invalid_messages");
    // A system message after the conversation began is not a prompt.
    complete(
        &t,
        "mem",
        json!({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]}),
    )
    .await
    .assert_error(400, "invalid_messages");
}

#[tokio::test]
async fn a_model_is_retrieved_when_callers_may_name_it() {
    let t = TestApp::with_env(&[("VISION_MODEL", "gpt-4o")]).await;
    let model = t.get("/v1/models/gpt-4o").await;
    assert_eq!(model.status, 200, "{}", model.text);
    assert_eq!(model.json()["id"], "gpt-4o");
    assert_eq!(model.json()["object"], "model");
    t.get("/v1/models/gpt-5-secret")
        .await
        .assert_error(404, "model_not_found");
    assert!(
        t.openai.requests().await.is_empty(),
        "upstream was not asked"
    );

    let any = TestApp::with_env(&[("ALLOWED_MODELS", "*")]).await;
    let model = any.get("/v1/models/gpt-4o-mini").await;
    assert_eq!(model.status, 200, "{}", model.text);
    assert_eq!(
        model.json(),
        crate::support::openai::model_list()["data"][0]
    );
    any.get("/v1/models/gpt-unknown")
        .await
        .assert_error(404, "model_not_found");
    any.get("/v1/models/bad%20id")
        .await
        .assert_error(404, "model_not_found");
}

#[tokio::test]
async fn a_history_the_caps_cut_never_starts_with_a_tool_result() {
    // Two messages a turn over a cap of three: each turn drops the one before.
    let t = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "3")]).await;
    next_answer_calls_the_tool(&t).await;
    complete(
        &t,
        "cut",
        json!({"messages": [{"role": "user", "content": "Weather?"}]}),
    )
    .await;
    let result =
        json!({"messages": [{"role": "tool", "tool_call_id": WEATHER, "content": "sunny"}]});
    assert_eq!(complete(&t, "cut", result).await.status, 200);
    let kept = t.transcript("cut").await;
    assert_eq!(
        kept[0]["role"], "tool",
        "the call's turn was dropped: {kept}"
    );

    let next = complete(
        &t,
        "cut",
        json!({"messages": [{"role": "user", "content": "next"}]}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "next"}
        ]),
        "no tool result without its call"
    );
}
