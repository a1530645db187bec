//! The built `bootstrap` binary, run as Lambda runs it, against a Runtime API stand-in.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::support::moto::MotoServer;
use crate::support::openai::{error_response, FakeOpenAi, API_KEY};
use crate::support::redis::RedisServer;
use crate::support::runtime_api::{Outcome, RuntimeApi};

fn event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Starts the binary with Lambda's environment plus `vars`; its logs go to a pipe.
fn start_function(runtime: &RuntimeApi, vars: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "chat-proxy")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/chat-proxy")
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/25/[$LATEST]0123456789abcdef",
        )
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn().expect("the bootstrap binary starts")
}

/// Stops the function and returns everything it logged.
async fn stop_function(mut child: Child) -> String {
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut logs).await;
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut logs).await;
    }
    logs
}

/// The status and body of an HTTP answer, which the function always streams.
fn http_answer(outcome: Outcome) -> (u16, Value) {
    match outcome {
        Outcome::Streamed(streamed) => {
            let text = streamed.text();
            (
                streamed.status(),
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Outcome::Response(response) => panic!("a buffered answer to an HTTP event: {response}"),
        Outcome::Error(error) => panic!("invocation error: {error}"),
    }
}

#[tokio::test]
async fn the_binary_serves_a_session_and_logs_json_without_secrets() {
    let redis = RedisServer::start();
    let openai = FakeOpenAi::start().await;
    let runtime = RuntimeApi::start().await;
    let base_url = openai.base_url();
    let redis_url = format!("redis://:{}@127.0.0.1:{}", "unused-password", redis.port());
    // The URL carries a password this server does not need: the proxy must not log it.
    redis.query(&["CONFIG", "SET", "requirepass", "unused-password"]);
    let function = start_function(
        &runtime,
        &[
            ("GPT_API_KEY", API_KEY),
            ("OPENAI_BASE_URL", base_url.as_str()),
            ("REDIS_URL", redis_url.as_str()),
        ],
    );

    assert_eq!(http_answer(runtime.invoke(&event("get-root")).await).0, 200);
    let (status, reply) = http_answer(runtime.invoke(&event("post-chat")).await);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "reply to: What is the capital of France?");
    let (_, transcript) = http_answer(runtime.invoke(&event("get-chat")).await);
    assert_eq!(transcript.as_array().unwrap().len(), 2);

    // A failing upstream call in the same session: its error is logged, the key is not.
    openai
        .always_chat(error_response(
            401,
            "invalid_request_error",
            &format!("Incorrect API key provided: {API_KEY}"),
        ))
        .await;
    let (status, _) = http_answer(runtime.invoke(&event("post-chat")).await);
    assert_eq!(status, 403, "the operator's key refused");

    let logs = stop_function(function).await;
    assert!(
        !logs.contains(API_KEY),
        "the API key leaked into the logs:\n{logs}"
    );
    assert!(
        !logs.contains("unused-password"),
        "the Redis password leaked:\n{logs}"
    );
    let request_lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect();
    assert_eq!(request_lines.len(), 4, "one JSON line per request:\n{logs}");
    let turn = &request_lines[1];
    assert_eq!(turn["route"], "send_chat");
    assert_eq!(turn["status"], 200);
    assert_eq!(turn["request_id"], "req-000002");
    assert_eq!(turn["caller"], "open");
    for timing in ["latency_ms", "upstream_ms", "redis_ms", "overhead_ms"] {
        assert!(
            turn[timing].as_f64().is_some_and(|ms| ms >= 0.0),
            "{timing} in {turn}"
        );
    }
    let (latency, upstream) = (
        turn["latency_ms"].as_f64().unwrap(),
        turn["upstream_ms"].as_f64().unwrap(),
    );
    assert!((turn["overhead_ms"].as_f64().unwrap() - (latency - upstream)).abs() < 0.01);
    assert_eq!(
        turn["total_tokens"],
        2 + crate::support::openai::COMPLETION_TOKENS
    );
    assert_eq!(turn["prompt_tokens"], 2);
    assert!(
        !logs.contains("What is the capital of France?"),
        "message text logged:\n{logs}"
    );
}

#[tokio::test]
async fn a_bad_configuration_fails_the_init_naming_every_problem() {
    let runtime = RuntimeApi::start().await;
    let function = start_function(
        &runtime,
        &[
            ("REDIS_URL", "http://admin:hunter2@example.com"),
            ("CHAT_TTL_SECONDS", "forever"),
        ],
    );
    let error = runtime
        .init_error(Duration::from_secs(10))
        .await
        .expect("the init error is reported to the Runtime API");
    let message = error.to_string();
    for problem in ["GPT_API_KEY", "REDIS_URL", "CHAT_TTL_SECONDS"] {
        assert!(
            message.contains(problem),
            "{problem} missing from {message}"
        );
    }
    assert!(!message.contains("hunter2"));
    let logs = stop_function(function).await;
    assert!(!logs.contains("hunter2"), "{logs}");
}

#[tokio::test]
async fn without_redis_the_binary_runs_on_memory_and_says_so_first() {
    let openai = FakeOpenAi::start().await;
    let runtime = RuntimeApi::start().await;
    let base_url = openai.base_url();
    let function = start_function(
        &runtime,
        &[
            ("GPT_API_KEY", API_KEY),
            ("OPENAI_BASE_URL", base_url.as_str()),
        ],
    );
    let (status, _) = http_answer(runtime.invoke(&event("post-chat")).await);
    assert_eq!(status, 200);
    let (_, transcript) = http_answer(runtime.invoke(&event("get-chat")).await);
    assert_eq!(
        transcript,
        json!([
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "reply to: What is the capital of France?"},
        ])
    );
    let logs = stop_function(function).await;
    // The first line says what answers and what keeps the chats, the next what that means.
    let mut lines = logs.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.contains(&format!(
            "upstream: {base_url}; chats kept in this process's memory"
        )),
        "first line: {first}"
    );
    let second = lines.next().unwrap_or_default();
    assert!(
        second.contains("NO REDIS CONFIGURED"),
        "second line: {second}"
    );
}

/// Lambda's AWS settings, pointed at the emulator.
fn aws_env(moto: &MotoServer) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_REGION", crate::support::moto::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
}

#[tokio::test]
async fn secrets_are_read_from_ssm_at_cold_start() {
    let moto = MotoServer::start();
    let redis = RedisServer::start();
    let openai = FakeOpenAi::start().await;
    let runtime = RuntimeApi::start().await;
    let key = "sk-from-ssm-5f3a9c";
    // As `aws ssm put-parameter --value file://key.txt` stores it: with a final newline.
    moto.put_parameter("/chat-proxy/openai-api-key", &format!("{key}\n"))
        .await;
    moto.put_parameter("/chat-proxy/redis-url", &redis.url())
        .await;

    let mut vars = aws_env(&moto);
    vars.push((
        "GPT_API_KEY_SSM_PARAMETER",
        "/chat-proxy/openai-api-key".to_owned(),
    ));
    vars.push((
        "REDIS_URL_SSM_PARAMETER",
        "/chat-proxy/redis-url".to_owned(),
    ));
    vars.push(("OPENAI_BASE_URL", openai.base_url()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let function = start_function(&runtime, &vars);

    let (status, reply) = http_answer(runtime.invoke(&event("post-chat")).await);
    assert_eq!(status, 200, "{reply}");
    let sent = &openai.requests().await[0];
    assert_eq!(
        sent.headers.get("authorization").unwrap(),
        format!("Bearer {key}").as_str()
    );
    assert_eq!(
        redis.query(&["LLEN", "chat-proxy:chat:{demo-chat}:turns"]),
        "1"
    );

    let logs = stop_function(function).await;
    assert!(!logs.contains(key), "{logs}");
}

#[tokio::test]
async fn a_key_that_cannot_be_a_header_fails_the_init_without_being_quoted() {
    let runtime = RuntimeApi::start().await;
    let function = start_function(&runtime, &[("GPT_API_KEY", "sk-half-one\rsk-half-two")]);
    let error = runtime
        .init_error(Duration::from_secs(10))
        .await
        .expect("the init error is reported");
    let message = error["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("GPT_API_KEY"), "{message}");
    assert!(!message.contains("sk-half"), "{message}");
    let logs = stop_function(function).await;
    assert!(!logs.contains("sk-half"), "{logs}");
}

#[tokio::test]
async fn a_missing_parameter_fails_the_init_naming_it() {
    let moto = MotoServer::start();
    let runtime = RuntimeApi::start().await;
    let mut vars = aws_env(&moto);
    vars.push((
        "GPT_API_KEY_SSM_PARAMETER",
        "/chat-proxy/not-there".to_owned(),
    ));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let function = start_function(&runtime, &vars);

    let error = runtime
        .init_error(Duration::from_secs(20))
        .await
        .expect("the init error is reported");
    let message = error["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("GPT_API_KEY (SSM parameter /chat-proxy/not-there)"),
        "{message}"
    );
    assert!(message.contains("ParameterNotFound"), "{message}");
    stop_function(function).await;
}

#[tokio::test]
async fn a_slow_upstream_is_answered_504_before_the_invocation_deadline() {
    let redis = RedisServer::start();
    let openai = FakeOpenAi::start().await;
    openai
        .always_chat(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(crate::support::openai::chat_completion("m", "too late", 1))
                .set_delay(Duration::from_secs(20)),
        )
        .await;
    let runtime = RuntimeApi::start().await;
    let (base_url, redis_url) = (openai.base_url(), redis.url());
    // OPENAI_TIMEOUT_SECONDS stays at its 290 s default: the invocation's deadline is sooner.
    let function = start_function(
        &runtime,
        &[
            ("GPT_API_KEY", API_KEY),
            ("OPENAI_BASE_URL", &base_url),
            ("REDIS_URL", &redis_url),
        ],
    );
    assert_eq!(
        http_answer(runtime.invoke(&event("get-root")).await).0,
        200,
        "warm"
    );

    let deadline = Duration::from_secs(5);
    let sent = std::time::Instant::now();
    let (status, body) = http_answer(
        runtime
            .invoke_with_deadline(&event("post-chat"), deadline)
            .await,
    );
    let answered_after = sent.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        answered_after < deadline,
        "answered after {answered_after:?}, past the deadline"
    );
    assert_eq!(redis.query(&["DBSIZE"]), "0", "nothing stored");
    stop_function(function).await;
}

fn with_header(mut event: Value, name: &str, value: &str) -> Value {
    event["headers"][name] = Value::String(value.to_owned());
    event
}

#[tokio::test]
async fn caller_keys_work_through_the_binary_and_never_reach_the_logs() {
    let redis = RedisServer::start();
    let openai = FakeOpenAi::start().await;
    let runtime = RuntimeApi::start().await;
    let (base_url, redis_url) = (openai.base_url(), redis.url());
    let secret = "sk-alice-secret-9f8e7d";
    let keys = format!("alice:{secret},bob:sk-bob-secret-1a2b3c");
    let function = start_function(
        &runtime,
        &[
            ("GPT_API_KEY", API_KEY),
            ("OPENAI_BASE_URL", &base_url),
            ("REDIS_URL", &redis_url),
            ("PROXY_API_KEYS", &keys),
        ],
    );

    let (status, _) = http_answer(runtime.invoke(&event("post-chat")).await);
    assert_eq!(status, 401, "no key");
    let wrong = with_header(
        event("post-chat"),
        "authorization",
        "Bearer sk-wrong-guess-77",
    );
    assert_eq!(http_answer(runtime.invoke(&wrong).await).0, 401);
    let alice = with_header(
        event("post-chat"),
        "authorization",
        &format!("Bearer {secret}"),
    );
    let (status, reply) = http_answer(runtime.invoke(&alice).await);
    assert_eq!(status, 200, "{reply}");
    openai
        .always_chat(error_response(500, "server_error", "boom"))
        .await;
    let (status, _) = http_answer(runtime.invoke(&alice).await);
    assert_eq!(status, 502);

    let logs = stop_function(function).await;
    assert!(!logs.contains("OPEN API"), "{logs}");
    for leak in [secret, "sk-bob-secret-1a2b3c", "sk-wrong-guess-77", API_KEY] {
        assert!(!logs.contains(leak), "{leak} leaked into the logs:\n{logs}");
    }
    let callers: Vec<String> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .map(|line| line["caller"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(callers, ["-", "-", "alice", "alice"]);
}

/// The function with a fake upstream and a Redis, as most streaming tests want it.
async fn streaming_function(
    extra: &[(&str, &str)],
) -> (RedisServer, FakeOpenAi, RuntimeApi, Child) {
    let redis = RedisServer::start();
    let openai = FakeOpenAi::start().await;
    let runtime = RuntimeApi::start().await;
    let (base_url, redis_url) = (openai.base_url(), redis.url());
    let mut vars = vec![
        ("GPT_API_KEY", API_KEY),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
    ];
    vars.extend_from_slice(extra);
    let function = start_function(&runtime, &vars);
    (redis, openai, runtime, function)
}

fn streamed(outcome: Outcome) -> crate::support::runtime_api::Streamed {
    match outcome {
        Outcome::Streamed(streamed) => streamed,
        other => panic!("not a streamed answer: {other:?}"),
    }
}

#[tokio::test]
async fn every_route_answers_through_the_streaming_framing_from_rest_events_on_a_stage() {
    let (_redis, _openai, runtime, function) = streaming_function(&[]).await;
    let session = [
        ("get-root", 200),
        ("post-system", 200),
        ("get-system", 200),
        ("post-chat-system", 200),
        ("get-chat-system", 200),
        ("post-chat", 200),
        ("post-chat-base64", 200),
        ("post-chat-stream", 200),
        ("post-img", 200),
        ("get-chat", 200),
        ("post-mod", 200),
        ("post-clear", 200),
    ];
    for (name, status) in session {
        let answer = streamed(runtime.invoke(&event(name)).await);
        assert_eq!(answer.status(), status, "{name}: {}", answer.text());
        let content_type = answer.prelude["headers"]["content-type"].as_str().unwrap();
        if name == "post-chat-stream" {
            assert_eq!(content_type, "text/event-stream");
            let events = crate::support::parse_events(&answer.text());
            assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
        } else if name == "get-root" {
            assert_eq!(answer.text(), "Hello, World!");
        } else {
            assert_eq!(content_type, "application/json", "{name}");
            let _: Value = serde_json::from_str(&answer.text()).unwrap();
        }
    }
    let transcript: Value =
        serde_json::from_str(&streamed(runtime.invoke(&event("get-chat")).await).text()).unwrap();
    assert_eq!(transcript, json!([]), "cleared at the end of the session");
    stop_function(function).await;
}

#[tokio::test]
async fn a_streamed_turn_reaches_lambda_in_pieces_long_before_it_ends() {
    let (redis, openai, runtime, function) = streaming_function(&[]).await;
    openai.script(crate::support::streaming::StreamScript {
        pause: Duration::from_millis(50),
        ..Default::default()
    });
    let answer = streamed(runtime.invoke(&event("post-chat-stream")).await);
    assert_eq!(answer.status(), 200);
    let first_delta = answer
        .pieces
        .iter()
        .find(|(_, piece)| String::from_utf8_lossy(piece).contains("event: delta"))
        .map(|(at, _)| *at)
        .expect("a delta");
    let end = answer.pieces.last().unwrap().0;
    // "reply to: Tell me about Paris, briefly." is 7 words, 50 ms apart.
    assert!(
        end - first_delta >= Duration::from_millis(250),
        "{first_delta:?} .. {end:?}"
    );
    assert_eq!(
        redis.query(&["LLEN", "chat-proxy:chat:{demo-chat}:turns"]),
        "1"
    );
    stop_function(function).await;
}

#[tokio::test]
async fn a_turn_whose_stream_was_dropped_is_stored_before_the_next_invocation() {
    let (redis, openai, runtime, function) = streaming_function(&[]).await;
    openai.script(crate::support::streaming::StreamScript {
        pause: Duration::from_millis(150),
        ..Default::default()
    });
    assert_eq!(
        streamed(runtime.invoke(&event("get-root")).await).status(),
        200
    );
    runtime.wait_for_polls(2).await;
    // The stream is dropped after its first bytes, as API Gateway drops a departed client's.
    runtime.cut_next_stream_after(1);
    let cut = streamed(runtime.invoke(&event("post-chat-stream")).await);
    assert_eq!(cut.status(), 200);
    assert!(!cut.text().contains("event: done"), "{}", cut.text());
    // The function asks for its next event only once the turn is stored.
    runtime.wait_for_polls(3).await;
    assert_eq!(
        redis.query(&["LLEN", "chat-proxy:chat:{demo-chat}:turns"]),
        "1"
    );
    let turn: Value =
        serde_json::from_str(&redis.query(&["LINDEX", "chat-proxy:chat:{demo-chat}:turns", "0"]))
            .unwrap();
    assert_eq!(turn["assistant"], "reply to: Tell me about Paris, briefly.");
    stop_function(function).await;
}

#[tokio::test]
async fn stream_completion_and_unknown_payloads_are_answered_never_failed() {
    let (_redis, _openai, runtime, function) = streaming_function(&[("RUST_LOG", "debug")]).await;
    for payload in [
        event("stream-completion"),
        json!({"something": "else"}),
        json!([1, 2]),
    ] {
        match runtime.invoke(&payload).await {
            Outcome::Response(answer) => assert_eq!(answer, json!({})),
            other => panic!("{payload}: {other:?}"),
        }
    }
    assert_eq!(
        streamed(runtime.invoke(&event("get-root")).await).status(),
        200
    );
    let logs = stop_function(function).await;
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        !lines.iter().any(|line| line["level"] == "ERROR"),
        "no ERROR line:\n{logs}"
    );
    let completion = lines
        .iter()
        .find(|line| line["message"] == "stream completion reported")
        .expect("the completion is logged");
    assert_eq!(completion["level"], "DEBUG");
    assert_eq!(completion["status"], "Success");
    let unknown = lines
        .iter()
        .filter(|line| line["level"] == "WARN")
        .filter(|line| {
            line["message"]
                .as_str()
                .unwrap_or("")
                .contains("not an HTTP event")
        })
        .count();
    assert_eq!(unknown, 2, "{logs}");
}

#[tokio::test]
async fn a_header_that_panics_lambda_http_is_a_json_500_and_the_function_lives_on() {
    let (_redis, _openai, runtime, function) = streaming_function(&[]).await;
    let mut bad = event("get-system");
    bad["headers"]["host"] = json!("h:99999");
    bad["multiValueHeaders"]["host"] = json!(["h:99999"]);
    let answer = streamed(runtime.invoke(&bad).await);
    assert_eq!(answer.status(), 500);
    let body: Value = serde_json::from_str(&answer.text()).unwrap();
    assert_eq!(body["error"]["code"], "internal_error");
    assert_eq!(
        streamed(runtime.invoke(&event("get-system")).await).status(),
        200
    );
    stop_function(function).await;
}
