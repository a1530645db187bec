//! Time to the first delta of a streamed turn, in process with real Redis: what the proxy
//! adds to the upstream's own time to its first chunk, for a seed turn (`POST /<id>/chat`,
//! upstream's Chat Completions chunks) and a Responses turn (`POST /v1/responses` with
//! `stream: true`, upstream's Responses events).
//!
//! The upstream stand-in answers a streamed request at once with its first content chunk
//! (and notes when it wrote it), then finishes the reply 5 ms later. For each turn:
//! - time to first delta: `handle()` called -> first text delta event read from the body
//!   (`event: delta`, or `response.output_text.delta`);
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

const RESPONSE_FIRST: &str = concat!(
    "event: response.created\n",
    r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"m","output":[],"usage":null}}"#,
    "\n\n",
    "event: response.output_item.added\n",
    r#"data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}"#,
    "\n\n",
    "event: response.content_part.added\n",
    r#"data: {"type":"response.content_part.added","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}"#,
    "\n\n",
    "event: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Paris"}"#,
    "\n\n"
);
const RESPONSE_REST: &str = concat!(
    "event: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" it is."}"#,
    "\n\n",
    "event: response.output_text.done\n",
    r#"data: {"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Paris it is."}"#,
    "\n\n",
    "event: response.content_part.done\n",
    r#"data: {"type":"response.content_part.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Paris it is.","annotations":[]}}"#,
    "\n\n",
    "event: response.output_item.done\n",
    r#"data: {"type":"response.output_item.done","sequence_number":7,"output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Paris it is.","annotations":[]}]}}"#,
    "\n\n",
    "event: response.completed\n",
    r#"data: {"type":"response.completed","sequence_number":8,"response":{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Paris it is.","annotations":[]}]}],"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12}}}"#,
    "\n\n"
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
                            let (first, rest) = if request.uri().path().ends_with("/responses") {
                                (RESPONSE_FIRST, RESPONSE_REST)
                            } else {
                                (FIRST, REST)
                            };
                            let _ = request.into_body().collect().await;
                            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                            tokio::spawn(async move {
                                *written.lock().unwrap() = Some(Instant::now());
                                let _ = tx
                                    .send(Ok(Frame::data(Bytes::from_static(first.as_bytes()))))
                                    .await;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                let _ = tx
                                    .send(Ok(Frame::data(Bytes::from_static(rest.as_bytes()))))
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

    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    const QUESTION: &str = "What is the capital of France?";
    let seed = Case {
        what: "seed turn, POST /<id>/chat",
        // A fresh chat each time keeps the history (and so the request) the same size.
        request: Box::new(|i| {
            (
                format!("/bench-{i}/chat"),
                format!(r#"{{"content": "{QUESTION}"}}"#),
            )
        }),
        first: "event: delta",
        last: "event: done",
        upstream: "chat/completions",
        upstream_body: format!(
            r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"{QUESTION}"}}]}}"#
        ),
    };
    let responses = Case {
        what: "Responses turn, POST /v1/responses",
        // A new chain each time, the same size.
        request: Box::new(|_| {
            (
                "/v1/responses".to_owned(),
                format!(r#"{{"input": "{QUESTION}", "stream": true}}"#),
            )
        }),
        first: "event: response.output_text.delta",
        last: "event: response.completed",
        upstream: "responses",
        upstream_body: format!(r#"{{"model":"m","stream":true,"input":"{QUESTION}"}}"#),
    };
    println!("streamed turns, {TURNS} each after {WARM_UP} warm-up, real Redis on loopback (µs):");
    for case in [seed, responses] {
        let measured = case.measure(&app, &written, &http, &openai_url).await;
        measured.print(case.what);
    }
}

const WARM_UP: usize = 200;
const TURNS: usize = 2000;

/// One kind of streamed turn: the request, the events that mark its first delta and its
/// end, and the same question asked of the upstream directly.
struct Case {
    what: &'static str,
    request: Box<dyn Fn(usize) -> (String, String)>,
    first: &'static str,
    last: &'static str,
    upstream: &'static str,
    upstream_body: String,
}

struct Measured {
    ttfd: Vec<Duration>,
    direct: Vec<Duration>,
    relay: Vec<Duration>,
}

impl Case {
    async fn measure(
        &self,
        app: &App,
        written: &Written,
        http: &reqwest::Client,
        openai_url: &str,
    ) -> Measured {
        let (mut ttfd, mut relay) = (Vec::new(), Vec::new());
        for i in 0..WARM_UP + TURNS {
            let (path, body) = (self.request)(i);
            let request = lambda_http::http::Request::builder()
                .method("POST")
                .uri(path)
                .header("accept", "text/event-stream")
                .body(Body::from(body))
                .unwrap();
            let started = Instant::now();
            let response = handle(app, request).await;
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut text = String::new();
            while !text.contains(self.first) {
                let frame = body.next().await.expect("a delta before the end");
                text.push_str(&String::from_utf8_lossy(&frame));
            }
            let first_delta = Instant::now();
            while let Some(frame) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&frame));
            }
            assert!(text.contains(self.last), "{text}");
            app.settle().await;
            if i >= WARM_UP {
                let wrote = written.lock().unwrap().expect("upstream wrote a chunk");
                ttfd.push(first_delta - started);
                relay.push(first_delta - wrote);
            }
        }
        // The upstream's own time to first chunk, asked directly.
        let mut direct = Vec::new();
        for i in 0..WARM_UP + TURNS {
            let started = Instant::now();
            let mut response = http
                .post(format!("{openai_url}/{}", self.upstream))
                .header("content-type", "application/json")
                .body(self.upstream_body.clone())
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
        Measured {
            ttfd,
            direct,
            relay,
        }
    }
}

impl Measured {
    fn print(mut self, what: &str) {
        let at = |samples: &mut [Duration]| (percentile(samples, 0.5), percentile(samples, 0.99));
        let (ttfd50, ttfd99) = at(&mut self.ttfd);
        let (direct50, direct99) = at(&mut self.direct);
        let (relay50, relay99) = at(&mut self.relay);
        println!("{what}                 p50        p99");
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
}
