//! Background responses (`background: true`), end to end: the built binary, two instances
//! polling the Runtime API stand-in, which also serves Lambda's Invoke API, so the run a
//! request hands over really is another invocation, on whichever instance takes it; real
//! Redis, the fake OpenAI streaming over time. One room for the harness and its cases:
//! every case drives the same instances through the same few calls.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support::openai::{FakeOpenAi, API_KEY};
use crate::support::redis::RedisServer;
use crate::support::runtime_api::{Outcome, RuntimeApi};
use crate::support::streaming::StreamScript;

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:chat-proxy";

struct Lambda {
    redis: RedisServer,
    openai: FakeOpenAi,
    runtime: RuntimeApi,
    instances: Vec<Child>,
    extra: Vec<(String, String)>,
}

impl Lambda {
    async fn start(instances: usize, extra: &[(&str, &str)]) -> Lambda {
        let mut lambda = Lambda {
            redis: RedisServer::start(),
            openai: FakeOpenAi::start().await,
            runtime: RuntimeApi::start().await,
            instances: Vec::new(),
            extra: extra
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        };
        for _ in 0..instances {
            lambda.add_instance().await;
        }
        lambda
    }

    /// Starts one more instance of the function, and waits until it polls for work.
    async fn add_instance(&mut self) {
        let polls_before = self.instances.len() as u64;
        let mut command = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", self.runtime.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", "chat-proxy")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            )
            .env(
                "AWS_ENDPOINT_URL_LAMBDA",
                format!("http://{}", self.runtime.address()),
            )
            .env("GPT_API_KEY", API_KEY)
            .env("OPENAI_BASE_URL", self.openai.base_url())
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.redis.port()),
            )
            .env("LOG_FORMAT", "json")
            .envs(self.extra.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            // SHOW_LOGS=1 shows what the instances log.
            .stdout(logs())
            .stderr(logs())
            .kill_on_drop(true);
        self.instances
            .push(command.spawn().expect("the bootstrap binary starts"));
        self.runtime.wait_for_polls(polls_before + 1).await;
    }

    /// Sends an HTTP request as API Gateway does; answers its status and JSON body.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, &[]).await
    }

    async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut all = json!({"content-type": "application/json",
            "host": "abc123.execute-api.us-east-1.amazonaws.com"});
        for (name, value) in headers {
            all[*name] = json!(value);
        }
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let query = query.map(|query| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(name, value)| (name.to_owned(), json!(value)))
                .collect::<serde_json::Map<_, _>>()
        });
        let event = json!({
            "resource": "/{proxy+}", "path": path, "httpMethod": method,
            "headers": all, "multiValueHeaders": {},
            "queryStringParameters": query, "multiValueQueryStringParameters": null,
            "pathParameters": {"proxy": path.trim_start_matches('/')}, "stageVariables": null,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method,
                "path": format!("/prod{path}"), "stage": "prod", "requestId": "r",
                "accountId": "123456789012", "apiId": "abc123",
                "identity": {"sourceIp": "203.0.113.9"}},
            "body": body.map(|body| body.to_string()), "isBase64Encoded": false
        });
        match self.runtime.invoke(&event).await {
            Outcome::Streamed(streamed) => {
                let text = streamed.text();
                (
                    streamed.status(),
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            other => panic!("an HTTP event answered {other:?}"),
        }
    }

    /// Creates a background response; answers it as queued.
    async fn create(&self, body: Value) -> Value {
        let (status, queued) = self.call("POST", "/v1/responses", Some(body)).await;
        assert_eq!(status, 200, "{queued}");
        queued
    }

    /// Reads the response until `done` holds of it (within 15 s); answers every status it
    /// went through, and the last read.
    async fn poll_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> (Vec<String>, Value) {
        let started = std::time::Instant::now();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let (status, response) = self.call("GET", &format!("/v1/responses/{id}"), None).await;
            assert_eq!(status, 200, "{response}");
            let now = response["status"].as_str().unwrap().to_owned();
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            if done(&response) {
                return (seen, response);
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the response never got there: {seen:?} {response}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

fn logs() -> Stdio {
    match std::env::var_os("SHOW_LOGS") {
        Some(_) => Stdio::inherit(),
        None => Stdio::null(),
    }
}

/// Every key in Redis, with its value where it is a string, sorted.
fn all_keys(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis
        .query(&["KEYS", "*"])
        .lines()
        .map(|key| match redis.query(&["TYPE", key]).as_str() {
            "string" => format!("{key}={}", redis.query(&["GET", key])),
            kind => format!("{key}:{kind}"),
        })
        .collect();
    keys.sort();
    keys
}

fn slowly() -> StreamScript {
    StreamScript {
        pause: Duration::from_millis(60),
        ..StreamScript::default()
    }
}

#[tokio::test]
async fn a_background_response_is_answered_queued_and_made_by_another_invocation() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.openai.script(slowly());

    let queued = lambda
        .create(
            json!({"model": "gpt-4o-mini", "input": "tell me about the sea", "background": true}),
        )
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["background"], true);
    assert_eq!(queued["object"], "response");
    assert_eq!(queued["output"], json!([]));
    let id = queued["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");

    // Handed over as Lambda's asynchronous invocation of this same function, signed, and
    // naming the run only (nothing of what was asked).
    let invoked = lambda.runtime.invoked();
    assert_eq!(invoked.len(), 1, "{invoked:?}");
    assert_eq!(invoked[0].invocation_type, "Event");
    assert_eq!(invoked[0].function, ARN);
    assert!(invoked[0].signed);
    let payload = String::from_utf8_lossy(&invoked[0].payload).into_owned();
    assert!(!payload.contains("sea"), "{payload}");

    let (seen, done) = lambda.poll_until(&id, |r| r["status"] == "completed").await;
    assert!(seen.contains(&"in_progress".to_owned()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("completed"));
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["background"], true);
    assert_eq!(output_text(&done), "reply to: tell me about the sea");
    assert_eq!(
        lambda
            .runtime
            .wait_for_async(1, Duration::from_secs(10))
            .await,
        1
    );

    // Upstream was asked once, streamed, keeping nothing.
    let asked = lambda.openai.bodies("/v1/responses").await;
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["stream"], true);
    assert_eq!(asked[0]["store"], false);
    assert!(asked[0].get("background").is_none(), "{}", asked[0]);

    // It is a response like any other: continued from, its answer sent again.
    let (status, next) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "and the sky?", "previous_response_id": id})),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    let asked = lambda.openai.bodies("/v1/responses").await;
    let sent = asked[1]["input"].to_string();
    assert!(
        sent.contains("tell me about the sea") && sent.contains("reply to: tell me about the sea"),
        "{sent}"
    );
    let (status, items) = lambda
        .call("GET", &format!("/v1/responses/{id}/input_items"), None)
        .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"].as_array().unwrap().len(), 1);

    // Deleted, it is gone: its run's record does not bring it back.
    let (status, _) = lambda
        .call("DELETE", &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = lambda
        .call("GET", &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_run_that_upstream_fails_mid_stream_ends_failed_and_keeps_no_turn() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.openai.script(StreamScript {
        fault: crate::support::streaming::Fault::FailAfter(2),
        ..slowly()
    });
    let queued = lambda
        .create(json!({"model": "gpt-4o-mini", "input": "one two three four", "background": true}))
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    let (seen, failed) = lambda
        .poll_until(&id, |r| {
            !matches!(r["status"].as_str(), Some("queued" | "in_progress"))
        })
        .await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("failed"),
        "{seen:?}: {failed}"
    );
    assert_eq!(failed["id"], id.as_str());
    assert!(failed["error"].is_object(), "{failed}");
    let (status, _) = lambda
        .call("GET", &format!("/v1/responses/{id}/input_items"), None)
        .await;
    assert_eq!(status, 404, "no turn was kept");
}

#[tokio::test]
async fn a_running_response_cancelled_on_another_instance_keeps_what_it_had_streamed() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.openai.script(StreamScript {
        pause: Duration::from_millis(150),
        ..StreamScript::default()
    });
    let words = "one two three four five six seven eight nine ten eleven twelve";
    let queued = lambda
        .create(json!({"model": "gpt-4o-mini", "input": words, "background": true}))
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    lambda.openai.wait_for("/v1/responses", 1).await;
    lambda
        .poll_until(&id, |r| r["status"] == "in_progress")
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let (status, cancelled) = lambda
        .call("POST", &format!("/v1/responses/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], id.as_str());
    let kept = output_text(&cancelled);
    let whole = format!("reply to: {words}");
    assert!(
        !kept.is_empty() && whole.starts_with(&kept) && kept.len() < whole.len(),
        "{kept}"
    );

    // Cancelled again, or read: the same response.
    let (status, again) = lambda
        .call("POST", &format!("/v1/responses/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, cancelled);
    let (_, read) = lambda
        .call("GET", &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(read, cancelled);

    // It stopped: upstream was asked once, and no turn was kept for it.
    assert_eq!(
        lambda
            .runtime
            .wait_for_async(1, Duration::from_secs(10))
            .await,
        1
    );
    assert_eq!(lambda.openai.bodies("/v1/responses").await.len(), 1);
    let (status, _) = lambda
        .call("GET", &format!("/v1/responses/{id}/input_items"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_queued_response_cancelled_never_runs_and_frees_the_chain_it_continued() {
    let lambda = Lambda::start(2, &[]).await;
    let (status, first) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "first"})),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();

    lambda.runtime.hold_events();
    let queued = lambda
        .create(
            json!({"model": "gpt-4o-mini", "input": "second", "background": true,
            "previous_response_id": first_id}),
        )
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    // It continues the chain in place: its id names the same chain.
    assert_eq!(id.rsplit('_').next(), first_id.rsplit('_').next());

    let (status, cancelled) = lambda
        .call("POST", &format!("/v1/responses/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["output"], json!([]));

    lambda.runtime.release_events();
    assert_eq!(
        lambda
            .runtime
            .wait_for_async(1, Duration::from_secs(10))
            .await,
        1
    );
    assert_eq!(
        lambda.openai.bodies("/v1/responses").await.len(),
        1,
        "the run never asked"
    );

    // The chain's newest response is free again: continued in place, not branched.
    let (status, next) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(
                json!({"model": "gpt-4o-mini", "input": "third", "previous_response_id": first_id}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(
        next["id"].as_str().unwrap().rsplit('_').next(),
        first_id.rsplit('_').next()
    );
}

#[tokio::test]
async fn a_run_whose_invocation_dies_reads_failed_once_its_deadline_passes() {
    let mut lambda = Lambda::start(2, &[]).await;
    lambda.runtime.set_invoke_deadline(Duration::from_secs(5));
    lambda.openai.script(StreamScript {
        first_delay: Duration::from_secs(60),
        ..StreamScript::default()
    });
    let queued = lambda
        .create(json!({"model": "gpt-4o-mini", "input": "think hard", "background": true}))
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    lambda.openai.wait_for("/v1/responses", 1).await;
    let (_, running) = lambda
        .call("GET", &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(running["status"], "in_progress", "{running}");

    // Every instance dies, the one running it among them; a new one serves the reads.
    for mut dead in lambda.instances.drain(..) {
        dead.kill().await.unwrap();
    }
    lambda.add_instance().await;
    let (seen, failed) = lambda
        .poll_until(&id, |r| r["status"] != "in_progress")
        .await;
    assert_eq!(seen.last().map(String::as_str), Some("failed"), "{seen:?}");
    assert_eq!(failed["error"]["code"], "server_error", "{failed}");
    let why = failed["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("invocation"),
        "read failed, not ended by the run: {why}"
    );
    // And stays so: a cancellation cannot revive it.
    let (status, refused) = lambda
        .call("POST", &format!("/v1/responses/{id}/cancel"), None)
        .await;
    assert_eq!(status, 400, "{refused}");
}

#[tokio::test]
async fn a_run_lambda_will_not_take_is_refused_and_leaves_the_chain_free() {
    let lambda = Lambda::start(1, &[]).await;
    let (_, first) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "first"})),
        )
        .await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    lambda.runtime.refuse_invokes(Some(429));
    let (status, refused) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(
                json!({"model": "gpt-4o-mini", "input": "second", "background": true,
                "previous_response_id": first_id}),
            ),
        )
        .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "background_unavailable");
    assert!(!lambda.runtime.invoked().is_empty(), "Lambda was asked");

    lambda.runtime.refuse_invokes(None);
    let (status, next) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(
                json!({"model": "gpt-4o-mini", "input": "third", "previous_response_id": first_id}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(
        next["id"].as_str().unwrap().rsplit('_').next(),
        first_id.rsplit('_').next(),
        "continued in place: the refused run's claim was freed"
    );
    assert_eq!(lambda.openai.bodies("/v1/responses").await.len(), 2);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_answered_the_same_run() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.runtime.hold_events();
    let body = json!({"model": "gpt-4o-mini", "input": "once", "background": true});
    let key = [("idempotency-key", "run-once-1")];
    let (status, first) = lambda
        .call_as("POST", "/v1/responses", Some(body.clone()), &key)
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = lambda
        .call_as("POST", "/v1/responses", Some(body), &key)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    assert_eq!(lambda.runtime.invoked().len(), 1, "handed over once");
    lambda.runtime.release_events();
    let id = first["id"].as_str().unwrap();
    lambda.poll_until(id, |r| r["status"] == "completed").await;
    assert_eq!(lambda.openai.bodies("/v1/responses").await.len(), 1);
}

#[tokio::test]
async fn another_callers_background_response_is_not_found() {
    let keys = "alice:sk-alice-0123456789abcdef,bob:sk-bob-0123456789abcdef";
    let lambda = Lambda::start(2, &[("PROXY_API_KEYS", keys)]).await;
    lambda.runtime.hold_events();
    let alice = [("authorization", "Bearer sk-alice-0123456789abcdef")];
    let bob = [("authorization", "Bearer sk-bob-0123456789abcdef")];
    let (status, queued) = lambda
        .call_as(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "mine", "background": true})),
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{queued}");
    let id = queued["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/v1/responses/{id}")),
        ("POST", format!("/v1/responses/{id}/cancel")),
        ("GET", format!("/v1/responses/{id}?stream=true")),
    ] {
        let (status, answer) = lambda.call_as(method, &path, None, &bob).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    let (status, mine) = lambda
        .call_as("GET", &format!("/v1/responses/{id}"), None, &alice)
        .await;
    assert_eq!((status, mine["status"].as_str()), (200, Some("queued")));
}

#[tokio::test]
async fn background_requests_that_cannot_run_are_refused_and_keep_nothing() {
    let lambda = Lambda::start(1, &[]).await;
    let (_, plain) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "plain"})),
        )
        .await;
    let plain_id = plain["id"].as_str().unwrap();
    let keys_before = all_keys(&lambda.redis);
    let cases = [
        (
            json!({"model": "gpt-4o-mini", "input": "x", "background": true, "store": false}),
            400,
            "background",
        ),
        (
            json!({"model": "gpt-4o-mini", "input": "x", "background": "yes"}),
            400,
            "background",
        ),
        (
            json!({"model": "gpt-4o-mini", "input": "x", "background": true,
                "previous_response_id": format!("resp_{}_~{}", "0".repeat(32), "1".repeat(32))}),
            404,
            "previous_response_id",
        ),
    ];
    for (body, status, param) in cases {
        let (got, answer) = lambda
            .call("POST", "/v1/responses", Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
    // Cancelling what is not a background run.
    let (status, answer) = lambda
        .call("POST", &format!("/v1/responses/{plain_id}/cancel"), None)
        .await;
    assert_eq!(status, 400, "{answer}");
    let unknown = format!("resp_{}_~{}", "a".repeat(32), "b".repeat(32));
    let (status, _) = lambda
        .call("POST", &format!("/v1/responses/{unknown}/cancel"), None)
        .await;
    assert_eq!(status, 404);
    assert!(
        lambda.runtime.invoked().is_empty(),
        "nothing was handed over"
    );
    assert_eq!(all_keys(&lambda.redis), keys_before, "nothing was kept");
}

#[tokio::test]
async fn without_redis_a_background_response_is_refused_for_no_instance_could_make_it() {
    let lambda = Lambda::start(1, &[("REDIS_URL", "")]).await;
    let (status, refused) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "x", "background": true})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["param"], "background");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("REDIS_URL"));
    assert!(lambda.runtime.invoked().is_empty());
    // The same request in the foreground is answered.
    let (status, _) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "x"})),
        )
        .await;
    assert_eq!(status, 200);
}

/// The events of an event stream's text, as JSON (comments left out).
fn events_of(text: &str) -> Vec<Value> {
    crate::support::parse_events(text)
        .into_iter()
        .filter(|event| !event.is_comment())
        .map(|event| event.json())
        .collect()
}

fn sequence_numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["sequence_number"].as_u64().expect("numbered"))
        .collect()
}

#[tokio::test]
async fn a_streamed_background_response_left_midway_is_resumed_from_its_last_event() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.openai.script(slowly());
    let words = "one two three four five six seven eight nine ten";
    // The client leaves after the first few events.
    lambda.runtime.cut_next_stream_after(900);
    let event = json!({
        "resource": "/{proxy+}", "path": "/v1/responses", "httpMethod": "POST",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {}, "queryStringParameters": null,
        "multiValueQueryStringParameters": null, "pathParameters": {"proxy": "v1/responses"},
        "stageVariables": null,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "POST",
            "path": "/prod/v1/responses", "stage": "prod", "requestId": "r",
            "identity": {"sourceIp": "203.0.113.9"}},
        "body": json!({"model": "gpt-4o-mini", "input": words, "background": true, "stream": true}).to_string(),
        "isBase64Encoded": false
    });
    let first = match lambda.runtime.invoke(&event).await {
        Outcome::Streamed(streamed) => {
            assert_eq!(streamed.status(), 200);
            assert_eq!(
                streamed.prelude["headers"]["content-type"], "text/event-stream",
                "{}",
                streamed.prelude
            );
            // The events whole before the cut; the one it cut into is left out.
            let text = streamed.text();
            events_of(text.rsplit_once("\n\n").map_or("", |(whole, _)| whole))
        }
        other => panic!("{other:?}"),
    };
    assert!(first.len() >= 2, "{first:?}");
    assert!(
        first
            .iter()
            .all(|event| event["type"] != "response.completed"),
        "the client left before the end: {first:?}"
    );
    assert_eq!(first[0]["type"], "response.created");
    let id = first[0]["response"]["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("resp_"),
        "the proxy's id in every event: {id}"
    );
    let last = *sequence_numbers(&first).last().unwrap();

    // Back, from another connection (and whichever instance), after its last event.
    let (status, rest) = lambda
        .call(
            "GET",
            &format!("/v1/responses/{id}?stream=true&starting_after={last}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let rest = events_of(rest.as_str().expect("an event stream"));
    assert!(!rest.is_empty());
    let mut all = first.clone();
    all.extend(rest.clone());
    let numbers = sequence_numbers(&all);
    assert_eq!(
        numbers,
        (0..numbers.len() as u64).collect::<Vec<_>>(),
        "each event once, in order"
    );
    let end = all.last().unwrap();
    assert_eq!(end["type"], "response.completed", "{end}");
    assert_eq!(end["response"]["id"], id.as_str());

    // The same events and the same response as a client that never left.
    let (_, whole) = lambda
        .call("GET", &format!("/v1/responses/{id}?stream=true"), None)
        .await;
    assert_eq!(events_of(whole.as_str().unwrap()), all);
    let (_, read) = lambda
        .call("GET", &format!("/v1/responses/{id}"), None)
        .await;
    assert_eq!(output_text(&read), format!("reply to: {words}"));
    assert_eq!(output_text(&end["response"]), output_text(&read));
    assert_eq!(
        lambda.openai.bodies("/v1/responses").await.len(),
        1,
        "asked once"
    );
}

#[tokio::test]
async fn resuming_what_cannot_be_resumed_is_refused_clearly() {
    let lambda = Lambda::start(1, &[]).await;
    let (_, plain) = lambda
        .call(
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "plain"})),
        )
        .await;
    let plain_id = plain["id"].as_str().unwrap();
    let (status, answer) = lambda
        .call(
            "GET",
            &format!("/v1/responses/{plain_id}?stream=true"),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("stream")),
        "{answer}"
    );
    lambda.runtime.hold_events();
    let queued = lambda
        .create(json!({"model": "gpt-4o-mini", "input": "later", "background": true}))
        .await;
    let id = queued["id"].as_str().unwrap();
    let (status, answer) = lambda
        .call(
            "GET",
            &format!("/v1/responses/{id}?stream=true&starting_after=x"),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("starting_after")),
        "{answer}"
    );
    let (status, answer) = lambda
        .call("GET", &format!("/v1/responses/{id}?stream=maybe"), None)
        .await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("stream")),
        "{answer}"
    );
    let unknown = format!("resp_{}_~{}", "a".repeat(32), "b".repeat(32));
    let (status, _) = lambda
        .call("GET", &format!("/v1/responses/{unknown}?stream=true"), None)
        .await;
    assert_eq!(status, 404);
    // A position past every event's: nothing more to send, and the stream ends with the run.
    lambda.runtime.release_events();
    lambda.poll_until(id, |r| r["status"] == "completed").await;
    let (status, nothing) = lambda
        .call(
            "GET",
            &format!("/v1/responses/{id}?stream=true&starting_after=99999999999999999999999"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(events_of(nothing.as_str().unwrap()), Vec::<Value>::new());
}

#[tokio::test]
async fn a_run_whose_model_is_still_thinking_is_cancelled_within_moments() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.openai.script(StreamScript {
        first_delay: Duration::from_secs(8),
        ..StreamScript::default()
    });
    let queued = lambda
        .create(json!({"model": "gpt-4o-mini", "input": "think", "background": true}))
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    lambda.openai.wait_for("/v1/responses", 1).await;
    let asked = std::time::Instant::now();
    let (status, cancelled) = lambda
        .call("POST", &format!("/v1/responses/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["output"], json!([]));
    // Long before upstream's first word: the run asks whether to stop while it waits.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn a_run_delivered_twice_is_made_once() {
    let lambda = Lambda::start(2, &[]).await;
    lambda.openai.script(slowly());
    let queued = lambda
        .create(json!({"model": "gpt-4o-mini", "input": "only once please", "background": true}))
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    lambda.openai.wait_for("/v1/responses", 1).await;
    // Lambda delivers the same event again (its delivery is at least once), while the
    // first delivery runs: the other instance takes it.
    let payload = lambda.runtime.invoked()[0].payload.clone();
    let again = reqwest::Client::new()
        .post(format!(
            "http://{}/2015-03-31/functions/chat-proxy/invocations",
            lambda.runtime.address()
        ))
        .header("x-amz-invocation-type", "Event")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(
        lambda
            .runtime
            .wait_for_async(2, Duration::from_secs(15))
            .await,
        2
    );
    let (_, done) = lambda.poll_until(&id, |r| r["status"] == "completed").await;
    assert_eq!(output_text(&done), "reply to: only once please");
    assert_eq!(
        lambda.openai.bodies("/v1/responses").await.len(),
        1,
        "asked once"
    );
}

#[tokio::test]
async fn deleting_a_conversation_deletes_its_runs_and_what_they_recorded() {
    let lambda = Lambda::start(2, &[]).await;
    let (status, conversation) = lambda
        .call("POST", "/v1/conversations", Some(json!({})))
        .await;
    assert_eq!(status, 200, "{conversation}");
    let trip = conversation["id"].as_str().unwrap().to_owned();
    let queued = lambda
        .create(
            json!({"model": "gpt-4o-mini", "input": "plan it", "background": true,
            "conversation": trip}),
        )
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    lambda.poll_until(&id, |r| r["status"] == "completed").await;
    let runs = || {
        all_keys(&lambda.redis)
            .into_iter()
            .filter(|key| key.contains(":run"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        runs().len(),
        3,
        "the run, its events and the chat's list of runs: {:?}",
        runs()
    );
    let path = format!("/v1/conversations/{trip}");
    let (status, _) = lambda.call("DELETE", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(runs(), Vec::<String>::new());
    let (status, _) = lambda
        .call("GET", &format!("/v1/responses/{id}?stream=true"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_background_response_in_a_temporary_chat_is_kept_no_longer_than_the_chat() {
    let lambda = Lambda::start(1, &[("TEMPORARY_CHAT_SECONDS", "120")]).await;
    let (status, made) = lambda.call("POST", "/chats/temporary", None).await;
    assert_eq!(status, 200, "{made}");
    let chat = made["id"].as_str().unwrap().to_owned();
    // A chat with a turn is a conversation the Responses API continues.
    let (status, first) = lambda
        .call(
            "POST",
            &format!("/{chat}/chat"),
            Some(json!({"content": "hello"})),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let queued = lambda
        .create(
            json!({"model": "gpt-4o-mini", "input": "off the record", "background": true,
            "conversation": chat}),
        )
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    let (_, done) = lambda.poll_until(&id, |r| r["status"] == "completed").await;
    assert_eq!(output_text(&done), "reply to: off the record");
    // Its run's record, and every other key of the chat, lives no longer than the chat.
    let keys: Vec<String> = lambda
        .redis
        .query(&["KEYS", "*"])
        .lines()
        .filter(|key| key.contains(&chat))
        .map(str::to_owned)
        .collect();
    assert!(keys.iter().any(|key| key.contains(":run:")), "{keys:?}");
    assert!(keys.iter().any(|key| key.ends_with(":turns")), "{keys:?}");
    for key in &keys {
        let ttl: i64 = lambda.redis.query(&["TTL", key]).trim().parse().unwrap();
        assert!((1..=120).contains(&ttl), "{key} lives {ttl} s");
    }
    // Never listed.
    let (_, page) = lambda.call("GET", "/chats", None).await;
    assert_eq!(page["chats"], json!([]), "{page}");
}
