//! OpenAI failing in each way it can: the right status, bounded retries, nothing stored.

use std::time::Duration;

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::openai::{chat_completion, error_response, rate_limited};
use crate::support::TestApp;

/// A chat with one stored turn, the state every fault test starts from.
async fn with_one_turn() -> TestApp {
    let t = TestApp::start().await;
    t.say("c1", "kept").await;
    t
}

async fn assert_nothing_stored(t: &TestApp) {
    assert_eq!(
        t.transcript("c1").await,
        json!([
            {"role": "user", "content": "kept"},
            {"role": "assistant", "content": "reply to: kept"},
        ])
    );
}

async fn chat_calls(t: &TestApp) -> usize {
    t.openai.chat_bodies().await.len()
}

#[tokio::test]
async fn server_errors_are_retried_then_answered_502_storing_nothing() {
    let t = with_one_turn().await;
    t.openai
        .always_chat(error_response(
            500,
            "server_error",
            "The server had an error.",
        ))
        .await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    reply.assert_error(502, "upstream_error");
    assert_eq!(chat_calls(&t).await, 1 + 3, "one try and two retries");
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn a_passing_server_error_is_retried_and_the_turn_stored_once() {
    let t = with_one_turn().await;
    t.openai
        .fail_chat(error_response(503, "server_error", "overloaded"), 1)
        .await;
    let reply = t.post("/c1/chat", json!({"content": "again"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn rate_limit_that_does_not_fit_is_passed_on_with_retry_after() {
    let t = with_one_turn().await;
    t.openai.always_chat(rate_limited(60)).await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
    assert_eq!(
        chat_calls(&t).await,
        2,
        "a 60 s wait does not fit a 10 s budget"
    );
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn rate_limit_that_fits_is_waited_out() {
    let t = with_one_turn().await;
    t.openai.fail_chat(rate_limited(1), 1).await;
    let reply = t.post("/c1/chat", json!({"content": "patience"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["content"], "reply to: patience");
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn exhausted_quota_is_not_retried() {
    let t = with_one_turn().await;
    let quota = ResponseTemplate::new(429).set_body_json(json!({"error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"
    }}));
    t.openai.always_chat(quota).await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(chat_calls(&t).await, 2);
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn a_request_upstream_rejects_is_a_400_and_not_retried() {
    let t = with_one_turn().await;
    t.openai
        .always_chat(error_response(
            400,
            "invalid_request_error",
            "Timeout while downloading https://example.com/x.png.",
        ))
        .await;
    let reply = t
        .post(
            "/c1/img",
            json!({"content": "what?", "url": "https://example.com/x.png"}),
        )
        .await;
    reply.assert_error(400, "upstream_rejected");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Timeout while downloading"));
    assert_eq!(chat_calls(&t).await, 2);
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_within_the_timeout() {
    let t = TestApp::with_env(&[("OPENAI_TIMEOUT_SECONDS", "1")]).await;
    t.say("c1", "kept").await;
    t.openai
        .always_chat(
            ResponseTemplate::new(200)
                .set_body_json(chat_completion("m", "too late", 1))
                .set_delay(Duration::from_secs(5)),
        )
        .await;
    // The bound is the test's hang guard, not a performance check.
    let reply = tokio::time::timeout(
        Duration::from_secs(4),
        t.post("/c1/chat", json!({"content": "lost?"})),
    )
    .await
    .expect("answered before the upstream did");
    reply.assert_error(504, "upstream_timeout");
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn unreadable_answers_are_502() {
    let answers = [
        ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"id": "x", "choices": []})),
        ResponseTemplate::new(200).set_body_json(
            json!({"choices": [{"message": {"role": "assistant", "content": null}}]}),
        ),
    ];
    for answer in answers {
        let t = with_one_turn().await;
        t.openai.always_chat(answer).await;
        let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
        reply.assert_error(502, "upstream_error");
        assert_nothing_stored(&t).await;
    }
}

#[tokio::test]
async fn a_refusal_is_the_reply() {
    let t = TestApp::start().await;
    t.openai
        .always_chat(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "refusal": "I can't help with that."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
        })))
        .await;
    let reply = t
        .post("/c1/chat", json!({"content": "something bad"}))
        .await;
    assert_eq!(
        reply.json(),
        json!({"content": "I can't help with that.", "role": "assistant",
               "tokens": {"completion_tokens": 6, "prompt_tokens": 9, "total_tokens": 15}})
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let redis = crate::support::redis::RedisServer::start();
    let closed = crate::support::redis::free_port();
    let config = crate::support::config_for(
        &redis.url(),
        &format!("http://127.0.0.1:{closed}/v1"),
        &[("OPENAI_TIMEOUT_SECONDS", "3")],
    );
    let app = chat_proxy::App::build(&config).unwrap();
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/c1/chat")
        .body(lambda_http::Body::from(r#"{"content": "anyone?"}"#))
        .unwrap();
    let response = chat_proxy::handle(&app, request).await;
    assert_eq!(response.status(), 502);
    assert_eq!(redis.query(&["DBSIZE"]), "0");
}

#[tokio::test]
async fn moderation_failures_are_502() {
    let t = TestApp::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/v1/moderations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "x"})))
        .with_priority(1)
        .mount(&t.openai.server)
        .await;
    let reply = t.post("/mod", json!({"content": "hello"})).await;
    reply.assert_error(502, "upstream_error");
}
