//! Time to the first delta of a streamed turn, in process with real Redis: what the proxy
//! adds to the upstream's own time to its first chunk.
//!
//! The upstream stand-in answers a streamed request at once with its first content chunk
//! (and notes when it wrote it), then finishes the reply 5 ms later. For each turn:
//! - time to first delta: `handle()` called -> first `delta` event read from the body;
//! - the upstream's own time to first chunk, asked directly with a plain HTTP client;
//! - the relay delay: the upstream wrote its first chunk -> the proxy's first delta read.
//!
//! `cargo bench --bench stream` (or `make bench`). Needs redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/redis.rs"]
mod redis;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_proxy::config::RedisTarget;
use chat_proxy::store::RedisStore;
use chat_proxy::{handle, App, Config};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use lambda_http::Body;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const FIRST: &str = concat!(
    r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Paris"},"finish_reason":null}]}"#,
    "\n\n"
);
const REST: &str = concat!(
    r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" it is."},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
    "\n\n",
    "data: [DONE]\n\n"
);

type Written = Arc<Mutex<Option<Instant>>>;

/// A streaming upstream on loopback; notes when it wrote each first chunk.
async fn upstream(written: Written) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let written = written.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let written = written.clone();
                        async move {
                            let _ = request.into_body().collect().await;
                            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                            tokio::spawn(async move {
                                *written.lock().unwrap() = Some(Instant::now());
                                let _ = tx
                                    .send(Ok(Frame::data(Bytes::from_static(FIRST.as_bytes()))))
                                    .await;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                let _ = tx
                                    .send(Ok(Frame::data(Bytes::from_static(REST.as_bytes()))))
                                    .await;
                            });
                            let body =
                                StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(body)
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{address}/v1")
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure());
}

async fn measure() {
    chat_proxy::install_tls_provider();
    let redis = redis::RedisServer::start();
    let written: Written = Arc::default();
    let openai_url = upstream(written.clone()).await;
    let redis_url = redis.url();
    let config = Config::from_lookup(|name| match name {
        "GPT_API_KEY" => Some("sk-bench".to_owned()),
        "OPENAI_BASE_URL" => Some(openai_url.clone()),
        "REDIS_URL" => Some(redis_url.clone()),
        _ => None,
    })
    .unwrap();
    let store = Arc::new(
        RedisStore::connect(
            &RedisTarget::Url(redis.url().into()),
            config.store.clone(),
            config.redis_timeout,
            None,
        )
        .unwrap(),
    );
    assert!(store.wait_connected(Duration::from_secs(5)).await);
    let app = App::with_store(&config, store).unwrap();

    const WARM_UP: usize = 200;
    const TURNS: usize = 2000;
    let (mut ttfd, mut relay) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + TURNS {
        // A fresh chat each time keeps the history (and so the request) the same size.
        let request = lambda_http::http::Request::builder()
            .method("POST")
            .uri(format!("/bench-{i}/chat"))
            .header("accept", "text/event-stream")
            .body(Body::from(
                r#"{"content": "What is the capital of France?"}"#,
            ))
            .unwrap();
        let started = Instant::now();
        let response = handle(&app, request).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut text = String::new();
        while !text.contains("event: delta") {
            let frame = body.next().await.expect("a delta before the end");
            text.push_str(&String::from_utf8_lossy(&frame));
        }
        let first_delta = Instant::now();
        while let Some(frame) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&frame));
        }
        assert!(text.contains("event: done"), "{text}");
        app.settle().await;
        if i >= WARM_UP {
            let wrote = written.lock().unwrap().expect("upstream wrote a chunk");
            ttfd.push(first_delta - started);
            relay.push(first_delta - wrote);
        }
    }

    // The upstream's own time to first chunk, asked directly.
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let mut direct = Vec::new();
    for i in 0..WARM_UP + TURNS {
        let started = Instant::now();
        let mut response = http
            .post(format!("{openai_url}/chat/completions"))
            .header("content-type", "application/json")
            .body(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"What is the capital of France?"}]}"#)
            .send()
            .await
            .unwrap();
        let _first = response.chunk().await.unwrap().expect("a first chunk");
        let took = started.elapsed();
        while response.chunk().await.unwrap().is_some() {}
        if i >= WARM_UP {
            direct.push(took);
        }
    }

    let (ttfd50, ttfd99) = (percentile(&mut ttfd, 0.5), percentile(&mut ttfd, 0.99));
    let (direct50, direct99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    let (relay50, relay99) = (percentile(&mut relay, 0.5), percentile(&mut relay, 0.99));
    println!("streamed turn, {TURNS} turns after {WARM_UP} warm-up, real Redis on loopback (µs):");
    println!("                                         p50        p99");
    println!(
        "  time to first delta via the proxy  {:>8.1}   {:>8.1}",
        us(ttfd50),
        us(ttfd99)
    );
    println!(
        "  upstream's own time to first chunk {:>8.1}   {:>8.1}",
        us(direct50),
        us(direct99)
    );
    println!(
        "  added by the proxy                 {:>8.1}   {:>8.1}",
        us(ttfd50.saturating_sub(direct50)),
        us(ttfd99.saturating_sub(direct99))
    );
    println!(
        "  first chunk written -> first delta {:>8.1}   {:>8.1}",
        us(relay50),
        us(relay99)
    );
}
