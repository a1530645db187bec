//! The API Gateway REST API (payload 1.0) events in `events/`, as the deployed API sends
//! them (with its stage), run through the handler in the order a session would send them.

use serde_json::{json, Value};

use crate::support::TestApp;

async fn run(t: &TestApp, name: &str) -> crate::support::Reply {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let request = lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    t.send(request).await
}

#[tokio::test]
async fn every_event_is_answered_as_its_route_promises() {
    let t = TestApp::start().await;

    let hello = run(&t, "get-root").await;
    assert_eq!((hello.status, hello.text.as_str()), (200, "Hello, World!"));

    assert_eq!(run(&t, "post-system").await.json(), json!({}));
    assert_eq!(
        run(&t, "get-system").await.json(),
        json!({"content": "You are a terse assistant."})
    );
    assert_eq!(run(&t, "post-chat-system").await.json(), json!({}));
    assert_eq!(
        run(&t, "get-chat-system").await.json(),
        json!({"content": "Answer like a pirate."})
    );

    let chat = run(&t, "post-chat").await;
    assert_eq!(chat.status, 200, "{}", chat.text);
    assert_eq!(
        chat.json()["content"],
        "reply to: What is the capital of France?"
    );

    // API Gateway base64-encodes some bodies; the handler reads them the same.
    let encoded = run(&t, "post-chat-base64").await;
    assert_eq!(encoded.json()["content"], "reply to: And of Spain?");

    let image = run(&t, "post-img").await;
    assert_eq!(
        image.json()["content"],
        "reply to: What is in this picture?"
    );

    let transcript = run(&t, "get-chat").await.json();
    let roles: Vec<&str> = transcript
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
    assert!(transcript[4]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    let moderation = run(&t, "post-mod").await.json();
    assert_eq!(moderation["results"][0]["flagged"], false);

    assert_eq!(run(&t, "post-clear").await.json(), json!({}));
    assert_eq!(run(&t, "get-chat").await.json(), json!([]));

    let sent = t.openai.chat_bodies().await;
    assert_eq!(sent.len(), 3);
    let first_messages: Vec<Value> = sent[0]["messages"].as_array().unwrap().clone();
    assert_eq!(first_messages[0]["content"], "You are a terse assistant.");
    assert_eq!(first_messages[1]["content"], "Answer like a pirate.");
}

#[tokio::test]
async fn there_is_a_rest_event_with_a_stage_for_every_route() {
    let dir = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let mut routes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let raw = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("stream-completion.json") {
            // Not an HTTP event: what the streaming integration sends after a stream.
            assert!(lambda_http::request::from_str(&raw).is_err());
            continue;
        }
        let event: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(event["requestContext"]["stage"], "prod", "{path:?}");
        assert!(event["httpMethod"].is_string(), "a REST event: {path:?}");
        let request = lambda_http::request::from_str(&raw).unwrap();
        let route = chat_proxy::routes::Route::parse(
            request.method(),
            chat_proxy::routes::request_path(&request),
        )
        .expect("every event is a valid route");
        routes.push(route.name().to_owned());
    }
    routes.sort();
    routes.dedup();
    assert_eq!(routes.len(), 10, "{routes:?}");
}

/// An event of `events/` (REST, stage `prod`) with its path replaced.
fn event_at(name: &str, path: &str) -> Value {
    let file = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    event["path"] = json!(path);
    event["requestContext"]["path"] = json!(format!("/prod{path}"));
    event
}

/// An HTTP API (payload 2.0) event, as `cargo lambda watch` and HTTP APIs send them.
fn http_api_event(method: &str, raw_path: &str, stage: &str, body: Option<&str>) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
            "requestId": "CAzP7gWyoAMEbVQ=",
            "routeKey": "ANY /{proxy+}",
            "stage": stage,
            "time": "25/Nov/2026:09:00:00 +0000",
            "timeEpoch": 1795597200000u64
        },
        "isBase64Encoded": false,
        "body": body
    })
}

async fn send_event(t: &TestApp, event: &Value) -> crate::support::Reply {
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    t.send(request).await
}

#[tokio::test]
async fn dot_segments_in_an_events_path_are_chat_ids_and_refused() {
    let t = TestApp::start().await;
    t.post("/system", json!({"content": "Everyone's base prompt."}))
        .await;
    let before = t.dump();
    for path in ["/../system", "/%2E%2E/system", "/./system", "/../chat"] {
        let mut event = event_at("post-system", path);
        event["body"] = json!(r#"{"content": "Hijacked."}"#);
        // lambda_http's own URI has lost the dot segment: routing must not use it.
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_ne!(
            request.uri().path(),
            path,
            "the setup shows the normalisation"
        );
        send_event(&t, &event)
            .await
            .assert_error(400, "invalid_chat_id");
    }
    let chat = send_event(&t, &event_at("get-chat", "/./chat")).await;
    chat.assert_error(400, "invalid_chat_id");
    assert_eq!(t.dump(), before, "the global prompt is untouched");
    assert_eq!(
        t.get("/system").await.json(),
        json!({"content": "Everyone's base prompt."})
    );
}

#[tokio::test]
async fn an_http_api_event_on_a_named_stage_is_routed_without_the_stage() {
    let t = TestApp::start().await;
    let body = Some(r#"{"content": "hi"}"#);
    let event = http_api_event("POST", "/prod/demo-chat/chat", "prod", body);
    let reply = send_event(&t, &event).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("demo-chat").await.as_array().unwrap().len(), 2);
    // On `$default` the path has no stage.
    let event = http_api_event("POST", "/demo-chat/chat", "$default", body);
    assert_eq!(send_event(&t, &event).await.status, 200);
    assert_eq!(t.transcript("demo-chat").await.as_array().unwrap().len(), 4);

    // A chat named like the stage is still that chat.
    let event = http_api_event("POST", "/prod/prod/chat", "prod", body);
    assert_eq!(send_event(&t, &event).await.status, 200);
    assert_eq!(t.transcript("prod").await.as_array().unwrap().len(), 2);
}

/// A REST API (payload 1.0) event as API Gateway sends it.
fn rest_event(
    method: &str,
    path: &str,
    stage: &str,
    context_path: &str,
    body: Option<&str>,
) -> Value {
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "stageVariables": null,
        "requestContext": {
            "resourceId": "abc",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": context_path,
            "stage": stage,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "accountId": "123456789012",
            "apiId": "abc123",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "203.0.113.9"}
        },
        "body": body,
        "isBase64Encoded": false
    })
}

#[tokio::test]
async fn rest_events_are_routed_whether_or_not_their_path_carries_the_stage() {
    let t = TestApp::start().await;
    let body = Some(r#"{"content": "hi"}"#);
    // The usual form: `path` without the stage, `requestContext.path` with it.
    let without = rest_event("POST", "/c1/chat", "prod", "/prod/c1/chat", body);
    let reply = send_event(&t, &without).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A chat named like the stage, in that form.
    let named = rest_event("POST", "/prod/chat", "prod", "/prod/prod/chat", body);
    assert_eq!(send_event(&t, &named).await.status, 200);
    // `path` carrying the stage as well.
    let with = rest_event("GET", "/prod/c1/chat", "prod", "/prod/c1/chat", None);
    let transcript = send_event(&t, &with).await;
    assert_eq!(transcript.status, 200, "{}", transcript.text);
    assert_eq!(transcript.json().as_array().unwrap().len(), 2);
    assert_eq!(t.transcript("prod").await.as_array().unwrap().len(), 2);
    // And dot segments are refused there too.
    let dots = rest_event("POST", "/../system", "prod", "/prod/../system", body);
    send_event(&t, &dots)
        .await
        .assert_error(400, "invalid_chat_id");
}

/// An event through the Lambda side as the runtime hands it over: the answer's status and
/// body, which must be an HTTP answer whatever the event holds.
async fn invoke(t: &TestApp, event: &Value) -> crate::support::Reply {
    use lambda_http::lambda_runtime::{Context, FunctionResponse, LambdaEvent};
    let payload = serde_json::value::RawValue::from_string(event.to_string()).unwrap();
    let answer =
        chat_proxy::lambda::invocation(t.app, LambdaEvent::new(payload, Context::default()))
            .await
            .unwrap();
    let FunctionResponse::StreamingResponse(response) = answer else {
        panic!("not an HTTP answer");
    };
    let mut body = response.stream;
    let mut bytes = Vec::new();
    while let Some(frame) = body.next().await {
        bytes.extend_from_slice(&frame);
    }
    crate::support::Reply {
        status: response.metadata_prelude.status_code.as_u16(),
        headers: response.metadata_prelude.headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[tokio::test]
async fn a_header_http_cannot_hold_is_a_400_naming_it_and_touches_nothing() {
    let t = TestApp::with_env(&[("CORS_ALLOW_ORIGINS", "https://app.example")]).await;
    let body = Some(r#"{"content": "hi"}"#);
    let cases = [
        ("x-note", json!("one\u{1}two"), "\"x-note\""),
        ("x(bad)", json!("fine"), "\"x(bad)\""),
    ];
    for (name, value, named) in cases {
        let mut event = rest_event("POST", "/c1/chat", "prod", "/prod/c1/chat", body);
        event["headers"][name] = value.clone();
        event["headers"]["origin"] = json!("https://app.example");
        event["multiValueHeaders"][name] = json!([value]);
        // As lambda_http reads it, the event is no HTTP request at all.
        assert!(lambda_http::request::from_str(&event.to_string()).is_err());
        let reply = invoke(&t, &event).await;
        reply.assert_error(400, "invalid_header");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(named), "{message}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://app.example"),
            "the answer gets its CORS headers like any other"
        );
    }
    assert!(t.openai.chat_bodies().await.is_empty());
    assert_eq!(t.transcript("c1").await, json!([]));
}

/// A REST event as API Gateway sends it behind a custom domain name: `path` and
/// `requestContext.path` alike, neither with the stage.
fn custom_domain_event(method: &str, path: &str, body: Option<&str>) -> Value {
    let mut event = rest_event(method, path, "prod", path, body);
    event["requestContext"]["domainName"] = json!("chat.example.com");
    event["headers"]["host"] = json!("chat.example.com");
    event
}

#[tokio::test]
async fn behind_a_custom_domain_a_chat_named_like_the_stage_is_that_chat() {
    let t = TestApp::start().await;
    t.post("/system", json!({"content": "The global prompt."}))
        .await;
    let set = custom_domain_event("POST", "/prod/system", Some(r#"{"content": "prod's own"}"#));
    assert_eq!(send_event(&t, &set).await.status, 200);
    assert_eq!(
        t.get("/system").await.json(),
        json!({"content": "The global prompt."}),
        "the global prompt is untouched"
    );
    assert_eq!(
        t.get("/prod/system").await.json(),
        json!({"content": "prod's own"})
    );
    let turn = custom_domain_event("POST", "/prod/chat", Some(r#"{"content": "hi"}"#));
    let reply = send_event(&t, &turn).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("prod").await.as_array().unwrap().len(), 2);
    // On the execute-api host the same event shape still has its stage stripped.
    let mut own = custom_domain_event("GET", "/prod/prod/chat", None);
    own["requestContext"]["domainName"] = json!("abc123.execute-api.us-east-1.amazonaws.com");
    let transcript = send_event(&t, &own).await;
    assert_eq!(transcript.json().as_array().unwrap().len(), 2);
}
