//! Property test over the whole request path: any method, path, headers and body get an
//! answer (never a panic), every failure is a JSON error, and a refused request changes
//! nothing stored. `make fuzz` runs the same parsing under libFuzzer for longer.

use lambda_http::http::{Method, Request};
use lambda_http::Body;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::support::TestApp;

fn methods() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
        Just(Method::PATCH),
        Just(Method::HEAD),
    ]
}

/// Known routes with odd chat ids, and plain odd paths (`//`, `%2F`, `..`, unicode, long).
fn paths() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        "[A-Za-z0-9._:@-]{1,130}",
        "[^/?#]{0,40}",
        Just("..".to_owned()),
        Just("%2F".to_owned()),
        Just("%00".to_owned()),
        Just("a".repeat(4000)),
    ];
    let action = prop_oneof![
        Just("chat"),
        Just("img"),
        Just("system"),
        Just("clear"),
        Just("mod"),
        Just("chat/"),
        Just(""),
    ];
    prop_oneof![
        (id.clone(), action).prop_map(|(id, action)| format!("/{id}/{action}")),
        "/[ -~]{0,60}",
        "(/[a-z%.]{0,6}){0,5}",
        Just("/".to_owned()),
        Just("/system".to_owned()),
        Just("/mod".to_owned()),
    ]
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just("null".to_owned()),
        Just("\"\"".to_owned()),
        "\"[ -~]{0,30}\"",
        "-?[0-9]{1,5}",
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("true".to_owned()),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            json_value.clone(),
            proptest::option::of(("[a-z_]{1,8}", json_value))
        )
            .prop_map(|(content, extra)| {
                let extra = extra
                    .map(|(k, v)| format!(", \"{k}\": {v}"))
                    .unwrap_or_default();
                format!("{{\"content\": {content}{extra}}}").into_bytes()
            }),
        (1usize..40).prop_map(|depth| format!(
            "{}{}",
            "[".repeat(depth * 100),
            "]".repeat(depth * 100)
        )
        .into_bytes()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("authorization".to_owned()),
                Just("x-api-key".to_owned()),
                Just("origin".to_owned()),
                Just("content-type".to_owned()),
            ],
            "[ -~]{0,40}",
        ),
        0..3,
    )
}

#[test]
fn any_request_gets_an_answer_and_refusals_change_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let t = runtime.block_on(TestApp::with_env(&[
        ("PROXY_API_KEYS", "alice:sk-alice-1"),
        ("CORS_ALLOW_ORIGINS", "https://app.example.com"),
        ("MAX_BODY_BYTES", "2048"),
    ]));
    // Seed one chat so there is something a bad request could damage.
    runtime.block_on(async {
        let seed = Request::builder()
            .method("POST")
            .uri("/seed/chat")
            .header("authorization", "Bearer sk-alice-1")
            .body(Body::from(r#"{"content": "kept"}"#))
            .unwrap();
        assert_eq!(t.send(seed).await.status, 200);
    });

    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    // Most cases carry the right key, so that what comes after authentication is exercised.
    let strategy = (
        methods(),
        paths(),
        proptest::bool::weighted(0.8),
        headers(),
        bodies(),
    );
    runner
        .run(&strategy, |(method, path, authenticated, headers, body)| {
            let mut builder = Request::builder().method(method).uri(path.as_str());
            if authenticated {
                builder = builder.header("authorization", "Bearer sk-alice-1");
            }
            for (name, value) in &headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            // Some generated paths or header values are not valid HTTP at all; API Gateway
            // would never deliver them, so there is nothing to answer.
            let Ok(request) = builder.body(Body::from(body)) else {
                return Ok(());
            };
            let before = t.dump();
            let is_head = request.method() == lambda_http::http::Method::HEAD;
            let reply = runtime.block_on(t.send(request));
            if is_head {
                // HEAD is answered as GET without a body, whatever the status.
                prop_assert!(reply.text.is_empty(), "{reply:?}");
                prop_assert_eq!(t.dump(), before, "a HEAD request changed what is stored");
                return Ok(());
            }
            prop_assert!(
                reply.status < 500 || reply.status == 502 || reply.status == 504,
                "{reply:?}"
            );
            if reply.status >= 400 {
                let json: Value = serde_json::from_str(&reply.text)
                    .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", reply.text)))?;
                prop_assert!(json["error"]["code"].is_string(), "{}", reply.text);
                prop_assert_eq!(reply.header("content-type"), Some("application/json"));
                prop_assert_eq!(t.dump(), before, "a refused request changed what is stored");
            }
            Ok(())
        })
        .unwrap();
}
