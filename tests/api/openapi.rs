//! The contract, `openapi.json`, and the router kept in step: every operation it documents
//! is routed (under its operationId, the route's name), and every route the router knows
//! is documented.

use std::collections::BTreeSet;

use chat_proxy::routes::Route;
use lambda_http::http::Method;
use serde_json::Value;

use crate::support::TestApp;

fn document() -> Value {
    serde_json::from_str(include_str!("../../openapi.json")).unwrap()
}

/// Every documented operation: (method, path template, operationId).
fn operations(doc: &Value) -> Vec<(Method, String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Besides operations, a path item holds `parameters` shared by them.
            let methods = [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ];
            if !methods.contains(&method.as_str()) {
                continue;
            }
            let method: Method = method.to_uppercase().parse().unwrap();
            let id = operation["operationId"].as_str().unwrap().to_owned();
            found.push((method, path.clone(), id));
        }
    }
    found
}

/// A read-only link's token, as the router knows one.
const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[test]
fn every_documented_operation_is_routed_under_its_operation_id() {
    let doc = document();
    let operations = operations(&doc);
    assert!(operations.len() >= 19, "{}", operations.len());
    for (method, template, id) in &operations {
        let path = template
            .replace("{chat_id}", "c1")
            .replace("{response_id}", "resp_x")
            .replace("{conversation_id}", "conv_x")
            .replace("{item_id}", "msg_x")
            .replace("{token}", TOKEN);
        let route = Route::parse(method, &path)
            .unwrap_or_else(|e| panic!("{method} {template} is documented but not routed: {e}"));
        assert_eq!(route.name(), id, "{method} {template}");
    }
    let ids: BTreeSet<&String> = operations.iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), operations.len(), "operationIds are unique");
}

#[test]
fn every_route_the_router_knows_is_documented() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, _, id)| (method.to_string(), id))
        .collect();
    // Every path of up to three segments over the words the router knows, and a chat id.
    let words = [
        "c1",
        "system",
        "mod",
        "chat",
        "img",
        "clear",
        "usage",
        "v1",
        "completions",
        "models",
        "responses",
        "input_items",
        "compact",
        "input_tokens",
        "conversations",
        "items",
        "playground",
        "app.js",
        "style.css",
        "icon.svg",
        "openapi.json",
        "chats",
        "import",
        "title",
        "fork",
        "export",
        "regenerate",
        "edit",
        "share",
        "shares",
        "shared",
        TOKEN,
    ];
    let mut paths = vec!["/".to_owned()];
    for a in words {
        paths.push(format!("/{a}"));
        for b in words {
            paths.push(format!("/{a}/{b}"));
            for c in words {
                paths.push(format!("/{a}/{b}/{c}"));
            }
        }
    }
    let mut routed = 0;
    for path in &paths {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            if let Ok(route) = Route::parse(&method, path) {
                routed += 1;
                let operation = (method.to_string(), route.name().to_owned());
                assert!(
                    documented.contains(&operation),
                    "{method} {path} is routed ({}) but not documented",
                    route.name()
                );
            }
        }
    }
    assert!(routed > 100, "the sweep found {routed} routed requests");
}

#[tokio::test]
async fn the_document_is_served_as_json_without_a_key() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", "alice:sk-a1"), ("PLAYGROUND", "false")]).await;
    let reply = t.get("/openapi.json").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), document());
    assert!(reply.header("etag").is_some());
    let head = t
        .call(Method::HEAD, "/openapi.json", lambda_http::Body::Empty)
        .await;
    assert_eq!((head.status, head.text.as_str()), (200, ""));
}
