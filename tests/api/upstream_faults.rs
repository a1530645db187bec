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
               "tokens": {"completion_tokens": 6, "prompt_tokens": 9, "total_tokens": 15, "cached_tokens": 0}})
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

/// Matches chat requests that send at least one image part.
struct SendsImages;

impl wiremock::Match for SendsImages {
    fn matches(&self, request: &wiremock::Request) -> bool {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        body["messages"].as_array().is_some_and(|messages| {
            messages.iter().any(|m| {
                m["content"]
                    .as_array()
                    .is_some_and(|parts| parts.iter().any(|p| p["type"] == "image_url"))
            })
        })
    }
}

async fn refuse_images(t: &TestApp, response: ResponseTemplate) {
    wiremock::Mock::given(wiremock::matchers::path("/v1/chat/completions"))
        .and(SendsImages)
        .respond_with(response)
        .with_priority(1)
        .mount(&t.openai.server)
        .await;
}

#[tokio::test]
async fn an_expired_image_in_the_history_does_not_kill_the_chat() {
    let t = TestApp::start().await;
    let url = "https://bucket.s3.amazonaws.com/cat.png?X-Amz-Expires=60";
    let first = t
        .post("/c1/img", json!({"content": "What is this?", "url": url}))
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    // The presigned link has expired: upstream refuses any request that sends it.
    refuse_images(
        &t,
        error_response(
            400,
            "invalid_request_error",
            &format!("Error while downloading {url}."),
        ),
    )
    .await;
    let reply = t
        .post("/c1/chat", json!({"content": "And its colour?"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["content"], "reply to: And its colour?");

    let sent = t.openai.chat_bodies().await;
    assert_eq!(sent.len(), 3, "the image turn, the refused try, the retry");
    assert_eq!(
        sent[2]["messages"][1],
        json!({"role": "user", "content": format!("What is this?\n[image: {url}]")})
    );
    // The history keeps the image; the transcript shows it as before.
    let transcript = t.transcript("c1").await;
    assert_eq!(transcript[0]["url"], url);
    assert_eq!(transcript.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_chat_model_without_vision_gets_the_historys_images_as_text() {
    let t = TestApp::start().await;
    t.post(
        "/c1/img",
        json!({"content": "What is this?", "url": "https://example.com/cat.png"}),
    )
    .await;
    refuse_images(
        &t,
        ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "Invalid content type. image_url is only supported by certain models.",
            "type": "invalid_request_error",
            "param": "messages.[1].content.[1].type",
            "code": null
        }})),
    )
    .await;
    let reply = t.post("/c1/chat", json!({"content": "Thanks!"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn a_refused_image_of_the_new_message_is_the_callers_400_without_a_retry() {
    let t = TestApp::start().await;
    t.post(
        "/c1/img",
        json!({"content": "first", "url": "https://example.com/old.png"}),
    )
    .await;
    let new = "https://example.com/broken.png";
    refuse_images(
        &t,
        error_response(
            400,
            "invalid_request_error",
            &format!("Timeout while downloading {new}."),
        ),
    )
    .await;
    let reply = t
        .post("/c1/img", json!({"content": "and this?", "url": new}))
        .await;
    reply.assert_error(400, "upstream_rejected");
    assert_eq!(t.openai.chat_bodies().await.len(), 2, "no retry");
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_huge_retry_after_is_clamped_and_passed_on_without_a_panic() {
    let t = with_one_turn().await;
    t.openai
        .always_chat(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "10000000000000000000")
                .set_body_json(json!({"error": {"message": "slow down", "type": "requests",
                    "param": null, "code": "rate_limit_exceeded"}})),
        )
        .await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.header("retry-after"), Some("3600"));
    assert_nothing_stored(&t).await;
}

#[tokio::test]
async fn a_retry_after_given_as_a_date_is_waited_out() {
    let t = with_one_turn().await;
    let soon = std::time::SystemTime::now() + Duration::from_secs(1);
    t.openai
        .fail_chat(
            ResponseTemplate::new(429)
                .insert_header("retry-after", httpdate::fmt_http_date(soon).as_str())
                .set_body_json(json!({"error": {"message": "slow down", "type": "requests",
                    "param": null, "code": "rate_limit_exceeded"}})),
            1,
        )
        .await;
    let reply = t.post("/c1/chat", json!({"content": "patience"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(chat_calls(&t).await, 3, "the seed, the 429, the retry");
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_with_backoff_then_passed_on() {
    let t = with_one_turn().await;
    t.openai
        .fail_chat(
            crate::support::openai::rate_limited_without_retry_after(),
            1,
        )
        .await;
    let reply = t.post("/c1/chat", json!({"content": "patience"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    t.openai
        .always_chat(crate::support::openai::rate_limited_without_retry_after())
        .await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.header("retry-after"), None);
    // Two turns: the first retried once, the second tried and retried twice.
    assert_eq!(chat_calls(&t).await, 1 + 2 + 3);
}

#[tokio::test]
async fn openais_real_401_is_the_operators_403_that_never_quotes_the_key() {
    let t = with_one_turn().await;
    t.openai
        .always_chat(crate::support::openai::invalid_api_key())
        .await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    // Not a 401: the caller's own key was fine, and SDKs read a 401 as "your key is wrong".
    reply.assert_error(403, "upstream_auth_failed");
    assert_eq!(reply.json()["error"]["type"], "permission_error");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("operator"), "{message}");
    assert!(!reply.text.contains(crate::support::openai::API_KEY));
    // Not even the part of the key OpenAI's message quotes.
    assert!(!reply.text.contains("Incorrect API key"), "{}", reply.text);
    assert_eq!(chat_calls(&t).await, 2, "a 401 is not retried");
    assert_nothing_stored(&t).await;
}

/// An upstream that answers its first request on a keep-alive connection, then resets that
/// connection when the next request arrives on it, as a server does with a connection that
/// sat idle too long; every later connection is answered normally.
async fn resetting_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            connection += 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut served = 0;
                loop {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 65536];
                    // Read one whole request: headers, then Content-Length bytes of body.
                    let complete = loop {
                        let Ok(n) = socket.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break true;
                            }
                        }
                    };
                    if !complete {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    if connection == 1 && served == 1 {
                        // RST instead of an answer.
                        let std = socket.into_std().unwrap();
                        let socket2 = socket2::Socket::from(std);
                        let _ = socket2.set_linger(Some(Duration::ZERO));
                        return;
                    }
                    let body = crate::support::openai::chat_completion("m", "fresh", 1).to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    served += 1;
                }
            });
        }
    });
    (format!("http://{address}/v1"), requests)
}

#[tokio::test]
async fn a_pooled_connection_reset_by_upstream_is_retried_on_a_new_one() {
    let redis = crate::support::redis::RedisServer::start();
    let (base_url, requests) = resetting_upstream().await;
    let config = crate::support::config_for(&redis.url(), &base_url, &[]);
    let app = chat_proxy::App::build(&config).unwrap();
    let turn = |content: &str| {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/c1/chat")
            .body(lambda_http::Body::from(
                json!({"content": content}).to_string(),
            ))
            .unwrap()
    };
    assert_eq!(chat_proxy::handle(&app, turn("first")).await.status(), 200);
    let second = chat_proxy::handle(&app, turn("second")).await;
    assert_eq!(second.status(), 200, "{:?}", second.body());
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "first, the one reset, its retry"
    );
    assert_eq!(redis.query(&["LLEN", "chat-proxy:chat:{c1}:turns"]), "2");
}

#[tokio::test]
async fn upstreams_own_4xx_reach_the_caller_with_their_status_and_code_unretried() {
    let cases = [
        (
            404,
            "model_not_found",
            "The model `gpt-9` does not exist or you do not have access to it.",
            "model",
        ),
        (
            409,
            "conflict",
            "The request conflicts with another one in flight.",
            "",
        ),
        (
            413,
            "request_too_large",
            "The request is larger than the model takes.",
            "",
        ),
        (
            422,
            "unprocessable",
            "The request could not be processed.",
            "messages",
        ),
    ];
    for (status, code, message, param) in cases {
        let t = TestApp::with_env(&[("ALLOWED_MODELS", "*")]).await;
        t.say("c1", "kept").await;
        let param = (!param.is_empty()).then_some(param);
        t.openai
            .always_chat(ResponseTemplate::new(status).set_body_json(json!({"error": {
                "message": message, "type": "invalid_request_error", "param": param, "code": code
            }})))
            .await;
        let reply = t
            .call_with(
                lambda_http::http::Method::POST,
                "/v1/chat/completions",
                lambda_http::Body::from(
                    json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                ),
                &[],
            )
            .await;
        reply.assert_error(status, code);
        let error = &reply.json()["error"];
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{error}"
        );
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], json!(param), "{status}");
        assert_eq!(chat_calls(&t).await, 2, "a {status} is not retried");
        // The same for a turn of a stored chat, which stores nothing.
        let turn = t.post("/c1/chat", json!({"content": "hi"})).await;
        turn.assert_error(status, code);
        assert_nothing_stored(&t).await;
    }
}

#[tokio::test]
async fn a_403_is_the_operators_and_names_no_organization_or_project() {
    let t = with_one_turn().await;
    t.openai
        .always_chat(ResponseTemplate::new(403).set_body_json(json!({"error": {
            "message": "Project `proj_Ab12Cd34` does not have access to model `gpt-4o-mini` in organization org-Zz9Yy8.",
            "type": "invalid_request_error", "param": null, "code": "model_not_found"
        }})))
        .await;
    let reply = t.post("/c1/chat", json!({"content": "lost?"})).await;
    reply.assert_error(403, "model_not_found");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("does not have access to model"),
        "{message}"
    );
    assert!(
        !message.contains("Ab12Cd34") && !message.contains("Zz9Yy8"),
        "{message}"
    );
    assert_eq!(chat_calls(&t).await, 2, "a 403 is not retried");
    assert_nothing_stored(&t).await;
}
