//! OpenAI's own API (`/v1/chat/completions`, `/v1/models`), driven by an OpenAI SDK:
//! async-openai, pointed at the handler behind a real HTTP server.

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::support::openai::API_KEY;
use crate::support::streaming::StreamScript;
use crate::support::TestApp;

async fn client(t: &TestApp, key: &str, chat: Option<&str>) -> Client<OpenAIConfig> {
    chat_proxy::install_tls_provider();
    let mut config = OpenAIConfig::new()
        .with_api_base(format!("{}/v1", t.http_url().await))
        .with_api_key(key);
    if let Some(chat) = chat {
        config = config.with_header("X-Chat-Id", chat).unwrap();
    }
    Client::with_config(config)
}

fn user(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

fn request(messages: Vec<ChatCompletionRequestMessage>) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .messages(messages)
        .build()
        .unwrap()
}

/// The status and error code of an SDK error.
fn api_error(error: OpenAIError) -> (u16, Option<String>) {
    match error {
        OpenAIError::ApiError(response) => (response.status_code.as_u16(), response.api_error.code),
        other => panic!("not an API error: {other:?}"),
    }
}

#[tokio::test]
async fn a_stateless_call_goes_upstream_as_sent_with_the_proxys_key() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1")]).await;
    let openai = client(&t, "sk-alice-1", None).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a poet."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "A haiku, please."}
        ],
        "temperature": 0.3,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "n": 2,
        "user": "u-1"
    });
    let answer: Value = openai.chat().create_byot(body.clone()).await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "reply to: A haiku, please."
    );

    let sent = t.openai.chat_bodies().await;
    assert_eq!(sent, vec![body], "the body as sent");
    let request = &t.openai.requests().await[0];
    assert_eq!(
        request.headers.get("authorization").unwrap(),
        format!("Bearer {API_KEY}").as_str()
    );
    assert!(
        t.keys().iter().all(|k| !k.contains(":chat:")),
        "nothing stored: {:?}",
        t.keys()
    );
}

#[tokio::test]
async fn a_call_with_a_chat_id_is_a_turn_of_that_chat() {
    let t = TestApp::start().await;
    t.post("/system", json!({"content": "Global."})).await;
    t.post("/c1/system", json!({"content": "Chat rules."}))
        .await;
    t.say("c1", "from the seed").await;
    let openai = client(&t, "unused", Some("c1")).await;

    let answer = openai
        .chat()
        .create(request(vec![user("from the SDK")]))
        .await
        .unwrap();
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("reply to: from the SDK")
    );
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "Global."},
            {"role": "system", "content": "Chat rules."},
            {"role": "user", "content": "from the seed"},
            {"role": "assistant", "content": "reply to: from the seed"},
            {"role": "user", "content": "from the SDK"}
        ])
    );
    // It is one chat: the SDK's turn shows in the seed's transcript, and the next seed turn
    // sends it as history.
    let transcript = t.transcript("c1").await;
    assert_eq!(
        transcript[2],
        json!({"role": "user", "content": "from the SDK"})
    );
    assert_eq!(
        transcript[3],
        json!({"role": "assistant", "content": "reply to: from the SDK"})
    );
    t.say("c1", "seed again").await;
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(sent["messages"][4]["content"], "from the SDK");
}

#[tokio::test]
async fn several_user_messages_with_images_are_one_turn() {
    let t = TestApp::start().await;
    let openai = client(&t, "unused", Some("pics")).await;
    let body = json!({
        "messages": [
            {"role": "user", "content": "Two pictures follow."},
            {"role": "user", "content": [
                {"type": "text", "text": "Which is bigger?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}
            ]}
        ],
        "max_completion_tokens": 50
    });
    let answer: Value = openai.chat().create_byot(body).await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "reply to: Which is bigger?"
    );
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["model"], "gpt-4o-mini",
        "CHAT_MODEL when none is named"
    );
    assert_eq!(sent["max_completion_tokens"], 50, "parameters pass through");
    assert_eq!(
        sent["messages"][2]["content"][1]["image_url"]["detail"],
        "low"
    );
    let transcript = t.transcript("pics").await;
    assert_eq!(
        transcript,
        json!([
            {"role": "user", "content": "Two pictures follow."},
            {"role": "user", "content": "Which is bigger?", "url": "https://example.com/a.png",
             "urls": ["https://example.com/a.png", "https://example.com/b.png"]},
            {"role": "assistant", "content": "reply to: Which is bigger?"}
        ])
    );
    assert_eq!(
        t.redis.query(&["LLEN", "chat-proxy:chat:{pics}:turns"]),
        "1",
        "one turn"
    );
    // The next turn sends both messages back, images and detail included.
    openai
        .chat()
        .create(request(vec![user("And now?")]))
        .await
        .unwrap();
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(sent["messages"][1]["content"], "Two pictures follow.");
    assert_eq!(
        sent["messages"][2]["content"][2]["image_url"]["url"],
        "https://example.com/b.png"
    );
}

#[tokio::test]
async fn a_streamed_turn_passes_chunks_on_and_is_stored() {
    let t = TestApp::start().await;
    t.openai.script(StreamScript {
        pause: std::time::Duration::from_millis(10),
        ..StreamScript::default()
    });
    let openai = client(&t, "unused", Some("s1")).await;
    let mut streamed = CreateChatCompletionRequestArgs::default();
    // async-openai built with `byot` leaves `stream` as the request says.
    streamed
        .model("gpt-4o-mini")
        .messages(vec![user("stream this please")])
        .stream(true);
    let mut stream = openai
        .chat()
        .create_stream(streamed.build().unwrap())
        .await
        .unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        chunks += 1;
        assert!(chunk.usage.is_none(), "no usage chunk unless asked");
        if let Some(delta) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            text.push_str(&delta);
        }
    }
    assert_eq!(text, "reply to: stream this please");
    assert!(chunks >= 5, "{chunks} chunks");
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true}),
        "always asked upstream"
    );
    t.app.settle().await;
    assert_eq!(
        t.transcript("s1").await[1]["content"],
        "reply to: stream this please"
    );
}

#[tokio::test]
async fn the_usage_chunk_is_passed_on_when_the_caller_asks() {
    let t = TestApp::start().await;
    let openai = client(&t, "unused", None).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "count me"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let mut stream = openai
        .chat()
        .create_stream_byot::<_, Value>(body)
        .await
        .unwrap();
    let mut last = Value::Null;
    while let Some(chunk) = stream.next().await {
        last = chunk.unwrap();
    }
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn what_a_chat_cannot_keep_is_refused_with_a_clear_400() {
    let t = TestApp::start().await;
    t.say("c1", "kept").await;
    let before = t.dump();
    let openai = client(&t, "unused", Some("c1")).await;
    let cases = [
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "invalid_messages",
        ),
        (
            json!({"messages": [{"role": "developer", "content": "x"}]}),
            "invalid_messages",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "x"}]}),
            "invalid_messages",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x", "tool_call_id": "t"}]}),
            "invalid_messages",
        ),
        (json!({"messages": []}), "invalid_messages"),
        (
            json!({"messages": [{"role": "user", "content": ""}]}),
            "invalid_messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "name": "bob"}]}),
            "invalid_messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "invalid_messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
            "invalid_url",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "unsupported_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "functions": []}),
            "unsupported_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "invalid_stream",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "function_call": "auto"}),
            "unsupported_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": "usage"}),
            "invalid_stream_options",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "model": 4}),
            "invalid_model",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "model": "gpt-5-secret"}),
            "model_not_allowed",
        ),
    ];
    for (body, code) in cases {
        let error = openai
            .chat()
            .create_byot::<_, Value>(body.clone())
            .await
            .unwrap_err();
        assert_eq!(api_error(error), (400, Some(code.to_owned())), "{body}");
    }
    assert_eq!(t.dump(), before, "nothing stored");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        1,
        "nothing sent upstream"
    );
}

#[tokio::test]
async fn a_stateless_call_without_messages_upstream_could_read_is_refused_before_upstream() {
    let t = TestApp::start().await;
    let openai = client(&t, "unused", None).await;
    // Found by schemathesis: numbers as messages went upstream.
    for body in [
        json!({}),
        json!({"messages": []}),
        json!({"messages": "hi"}),
        json!({"messages": [5.8e268, -1.1e95]}),
        json!({"messages": [{"role": "user", "content": "x"}, "x"]}),
        json!({"messages": [{"content": "no role"}]}),
        json!({"messages": [{"role": 7, "content": "x"}]}),
    ] {
        let error = openai
            .chat()
            .create_byot::<_, Value>(body.clone())
            .await
            .unwrap_err();
        assert_eq!(
            api_error(error),
            (400, Some("invalid_messages".to_owned())),
            "{body}"
        );
    }
    // The same client's valid call does reach upstream, so the refusals above were ours.
    let answer: Value = openai
        .chat()
        .create_byot(json!({"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]}))
        .await
        .unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        1,
        "only the valid call went upstream"
    );
}

#[tokio::test]
async fn a_bad_chat_id_header_is_refused() {
    let t = TestApp::start().await;
    for id in ["..", "a b", "{x}", &"x".repeat(129)] {
        let openai = client(&t, "unused", Some(id)).await;
        let error = openai
            .chat()
            .create(request(vec![user("x")]))
            .await
            .unwrap_err();
        assert_eq!(
            api_error(error),
            (400, Some("invalid_chat_id".to_owned())),
            "{id}"
        );
    }
}

#[tokio::test]
async fn keys_isolate_callers_as_on_the_seed_routes() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-alice-1,bob:sk-bob-2")]).await;
    let nobody = client(&t, "sk-wrong", Some("c1")).await;
    let error = nobody
        .chat()
        .create(request(vec![user("x")]))
        .await
        .unwrap_err();
    assert_eq!(api_error(error), (401, Some("invalid_api_key".to_owned())));

    let alice = client(&t, "sk-alice-1", Some("c1")).await;
    alice
        .chat()
        .create(request(vec![user("alice's secret")]))
        .await
        .unwrap();
    let bob = client(&t, "sk-bob-2", Some("c1")).await;
    bob.chat()
        .create(request(vec![user("hello")]))
        .await
        .unwrap();
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert!(!sent.to_string().contains("alice's secret"), "{sent}");
}

#[tokio::test]
async fn upstream_failures_keep_their_statuses() {
    let t = TestApp::start().await;
    t.openai
        .always_chat(crate::support::openai::rate_limited(60))
        .await;
    // A plain client: an SDK would wait out the 60 s Retry-After itself.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", t.http_url().await))
        .header("x-chat-id", "c1")
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["retry-after"], "60");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn models_are_the_allowed_ones_or_upstreams() {
    let t = TestApp::with_env(&[("VISION_MODEL", "gpt-4o")]).await;
    let openai = client(&t, "unused", None).await;
    let list: Value = openai.models().list_byot().await.unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o"]);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["object"], "model");
    assert!(
        t.openai.requests().await.is_empty(),
        "upstream was not asked"
    );

    let any = TestApp::with_env(&[("ALLOWED_MODELS", "*")]).await;
    let openai = client(&any, "unused", None).await;
    let list: Value = openai.models().list_byot().await.unwrap();
    assert_eq!(
        list,
        crate::support::openai::model_list(),
        "upstream's list as sent"
    );
}

#[tokio::test]
async fn a_chat_written_by_the_first_version_is_history_for_the_sdk() {
    let t = TestApp::start().await;
    // As the version on main before ids wrote them.
    for (user, assistant) in [("old one", "old reply one"), ("old two", "old reply two")] {
        let turn = json!({"user": user, "assistant": assistant}).to_string();
        t.redis
            .query(&["RPUSH", "chat-proxy:chat:{legacy}:turns", &turn]);
    }
    let image_turn =
        json!({"user": "a picture", "url": "https://example.com/p.png", "assistant": "a cat"})
            .to_string();
    t.redis
        .query(&["RPUSH", "chat-proxy:chat:{legacy}:turns", &image_turn]);
    let openai = client(&t, "unused", Some("legacy")).await;
    openai
        .chat()
        .create(request(vec![user("new")]))
        .await
        .unwrap();
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1 + 6 + 1);
    assert_eq!(messages[1]["content"], "old one");
    assert_eq!(
        messages[5]["content"][1]["image_url"]["url"],
        "https://example.com/p.png"
    );
    assert_eq!(t.transcript("legacy").await.as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn a_stateless_answer_of_tool_calls_is_upstreams_200_and_is_counted() {
    let t = TestApp::with_env(&[("TOKEN_LIMIT_PER_DAY", "30")]).await;
    let answer = crate::support::openai::tool_call_completion(
        "gpt-4o-mini",
        &[("get_weather", r#"{"city":"Oslo"}"#)],
        12,
    );
    t.openai
        .always_chat(wiremock::ResponseTemplate::new(200).set_body_json(answer.clone()))
        .await;
    let openai = client(&t, "unused", None).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    });
    let got: Value = openai.chat().create_byot(body.clone()).await.unwrap();
    assert_eq!(got, answer, "upstream's answer, as sent");
    assert_eq!(
        t.openai.chat_bodies().await.len(),
        1,
        "asked once, not retried"
    );
    // Counted: 12 + 5 tokens of the day's 30, so the next call is allowed and then the limit
    // is met.
    let usage = t.get("/usage").await.json();
    assert_eq!(usage["day"]["total_tokens"], 17, "{usage}");
    let _: Value = openai.chat().create_byot(body.clone()).await.unwrap();
    // Past the limit (asked without the SDK, which would wait out the 429 until midnight).
    let limited = t
        .call_with(
            lambda_http::http::Method::POST,
            "/v1/chat/completions",
            lambda_http::Body::from(body.to_string()),
            &[],
        )
        .await;
    limited.assert_error(429, "token_limit_exceeded");
}
