//! The function as Lambda runs it, behind an HTTP front of its own, for load runs
//! (`scripts/load.sh`): the built `bootstrap` binary polls a Runtime API stand-in on
//! loopback, and every HTTP request to the front becomes an API Gateway REST event, its
//! streamed answer the HTTP response.
//!
//! `cargo lambda watch` does the same but answers its clients with the response head and
//! the body in two writes on a socket with Nagle's algorithm on, so every request on a
//! kept-alive connection waits for the client's delayed ACK (~40 ms: BENCHMARKS.md); this
//! front sets TCP_NODELAY and writes each answer whole, so a load run measures the function.
//!
//! `cargo run --release --example runtime_front -- <port> <bootstrap>`; the function's
//! settings (GPT_API_KEY, OPENAI_BASE_URL, REDIS_URL, ...) come from the environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/runtime_api.rs"]
mod runtime_api;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use runtime_api::{Outcome, RuntimeApi};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A REST API (payload 1.0) event for a request, on stage `prod` as API Gateway sends it.
async fn event_of(request: Request<Incoming>) -> Value {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut headers = Map::new();
    let mut multi = Map::new();
    for (name, value) in &parts.headers {
        let value = Value::String(value.to_str().unwrap_or_default().to_owned());
        headers.insert(name.to_string(), value.clone());
        multi.insert(name.to_string(), Value::Array(vec![value]));
    }
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": parts.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "stageVariables": null,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": parts.method.as_str(),
            "path": format!("/prod{path}"),
            "stage": "prod",
            "requestId": format!("load-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            "identity": {"sourceIp": "127.0.0.1"},
            "domainName": "localhost",
        },
        "body": String::from_utf8_lossy(&body),
        "isBase64Encoded": false
    })
}

async fn answer(runtime: Arc<RuntimeApi>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let event = event_of(request).await;
    match runtime.invoke(&event).await {
        Outcome::Streamed(streamed) => {
            let mut response = Response::builder().status(streamed.status());
            if let Some(headers) = streamed.prelude["headers"].as_object() {
                for (name, value) in headers {
                    if let Some(value) = value.as_str() {
                        response = response.header(name, value);
                    }
                }
            }
            response
                .body(Full::new(Bytes::from(streamed.body)))
                .unwrap()
        }
        other => Response::builder()
            .status(502)
            .body(Full::new(Bytes::from(format!("{other:?}"))))
            .unwrap(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(19000);
    let bootstrap = args.next().expect("the bootstrap binary to run");
    let runtime = Arc::new(RuntimeApi::start().await);
    let mut function = tokio::process::Command::new(bootstrap)
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "chat-proxy")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .kill_on_drop(true)
        .spawn()
        .expect("the function starts");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    println!("the function at http://127.0.0.1:{port}");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let runtime = runtime.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let runtime = runtime.clone();
                        async move { Ok::<_, Infallible>(answer(runtime, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = function.wait() => panic!("the function exited"),
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}
