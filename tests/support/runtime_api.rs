//! A stand-in for the Lambda Runtime API on loopback, so the built `bootstrap` binary can be
//! run exactly as Lambda runs it: it polls `/invocation/next`, answers each event at
//! `/invocation/{id}/response` (or `/error`), and reports a failed start at `/init/error`.

// Shared by the tests, the benchmarks and an example; each uses part of it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

const PREFIX: &str = "/2018-06-01/runtime";

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The function answered whole (a buffered response).
    Response(Value),
    /// The function streamed its answer.
    Streamed(Streamed),
    /// The function reported an invocation error.
    Error(Value),
}

/// A streamed answer, as Lambda received it.
#[derive(Debug)]
pub struct Streamed {
    /// The metadata prelude: `statusCode`, `headers`, `cookies`.
    pub prelude: Value,
    /// The body, after the 8 NUL bytes.
    pub body: Vec<u8>,
    /// Each piece of the body with when it arrived, counted from when the function took the
    /// event.
    pub pieces: Vec<(Duration, Vec<u8>)>,
}

impl Streamed {
    pub fn status(&self) -> u16 {
        self.prelude["statusCode"]
            .as_u64()
            .expect("a status in the prelude") as u16
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Invocation {
    id: String,
    event: Bytes,
    deadline: Duration,
}

#[derive(Default)]
struct State {
    queue: Mutex<VecDeque<Invocation>>,
    queued: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// When each invocation was handed to the function.
    taken: Mutex<HashMap<String, std::time::Instant>>,
    /// How many times the function has asked for its next event.
    polls: Mutex<u64>,
    polled: Notify,
    /// Stop reading the next streamed answer after this many body bytes, and close the
    /// connection, as when the client goes away.
    cut_after: Mutex<Option<usize>>,
    init_error: Mutex<Option<oneshot::Sender<Value>>>,
    next_id: Mutex<u64>,
}

pub struct RuntimeApi {
    address: SocketAddr,
    state: Arc<State>,
    init_error: Mutex<Option<oneshot::Receiver<Value>>>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (init_tx, init_rx) = oneshot::channel();
        let state = Arc::new(State {
            init_error: Mutex::new(Some(init_tx)),
            ..State::default()
        });
        let server_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| serve(state.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RuntimeApi {
            address,
            state,
            init_error: Mutex::new(Some(init_rx)),
        }
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Queues an event with Lambda's usual 30 s to answer, and waits for the answer.
    pub async fn invoke(&self, event: &Value) -> Outcome {
        self.invoke_with_deadline(event, Duration::from_secs(30))
            .await
    }

    /// Queues an event that must be answered within `deadline`, and waits for the answer.
    pub async fn invoke_with_deadline(&self, event: &Value, deadline: Duration) -> Outcome {
        let id = {
            let mut next = self.state.next_id.lock().expect("lock");
            *next += 1;
            format!("req-{:06}", *next)
        };
        let (tx, rx) = oneshot::channel();
        self.state
            .waiting
            .lock()
            .expect("lock")
            .insert(id.clone(), tx);
        self.state
            .queue
            .lock()
            .expect("lock")
            .push_back(Invocation {
                id,
                event: Bytes::from(event.to_string()),
                deadline,
            });
        self.state.queued.notify_one();
        tokio::time::timeout(deadline + Duration::from_secs(5), rx)
            .await
            .expect("the function answered")
            .expect("the runtime API stayed up")
    }

    /// Drops the next streamed answer after `bytes` bytes of its body, closing the link.
    pub fn cut_next_stream_after(&self, bytes: usize) {
        *self.state.cut_after.lock().expect("lock") = Some(bytes);
    }

    /// Waits until the function has asked for its next event `count` times in all.
    pub async fn wait_for_polls(&self, count: u64) {
        loop {
            let notified = self.state.polled.notified();
            if *self.state.polls.lock().expect("lock") >= count {
                return;
            }
            tokio::time::timeout(Duration::from_secs(30), notified)
                .await
                .expect("the function asked for its next event");
        }
    }

    /// The error the function reported at init, if it reports one within `wait`.
    pub async fn init_error(&self, wait: Duration) -> Option<Value> {
        let rx = self.init_error.lock().expect("lock").take()?;
        tokio::time::timeout(wait, rx).await.ok()?.ok()
    }
}

async fn serve(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let streaming = request
        .headers()
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode == "streaming");
    let rest = path.strip_prefix(PREFIX).unwrap_or_default().to_owned();
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    if let (&Method::POST, ["invocation", id, "response"]) = (&method, parts.as_slice()) {
        if streaming {
            let taken = state.taken.lock().expect("lock").get(*id).copied();
            let cut_after = state.cut_after.lock().expect("lock").take();
            let outcome = read_stream(request.into_body(), taken, cut_after).await;
            if let Some(tx) = state.waiting.lock().expect("lock").remove(*id) {
                let _ = tx.send(Outcome::Streamed(outcome));
            }
            let mut answer = reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"), None);
            if cut_after.is_some() {
                answer.headers_mut().insert(
                    "connection",
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            return Ok(answer);
        }
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let response = match (method, parts.as_slice()) {
        (Method::GET, ["invocation", "next"]) => next_event(&state).await,
        (Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let outcome = if *kind == "response" {
                Outcome::Response(value)
            } else {
                Outcome::Error(value)
            };
            if let Some(tx) = state.waiting.lock().expect("lock").remove(*id) {
                let _ = tx.send(outcome);
            }
            reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"), None)
        }
        (Method::POST, ["init", "error"]) => {
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(tx) = state.init_error.lock().expect("lock").take() {
                let _ = tx.send(value);
            }
            reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"), None)
        }
        _ => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"{}"), None),
    };
    Ok(response)
}

/// Reads a streamed response as it arrives: prelude, 8 NULs, body (or only `cut_after`
/// bytes of the body).
async fn read_stream(
    mut body: Incoming,
    taken: Option<std::time::Instant>,
    cut_after: Option<usize>,
) -> Streamed {
    let started = taken.unwrap_or_else(std::time::Instant::now);
    let mut received = Vec::new();
    let mut pieces = Vec::new();
    let mut prelude_end = None;
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue; // trailers: an error reported mid-stream
        };
        received.extend_from_slice(&data);
        match prelude_end {
            Some(_) => pieces.push((started.elapsed(), data.to_vec())),
            None => {
                if let Some(at) = received.windows(8).position(|w| w == [0u8; 8]) {
                    prelude_end = Some(at);
                    let after = received[at + 8..].to_vec();
                    if !after.is_empty() {
                        pieces.push((started.elapsed(), after));
                    }
                }
            }
        }
        let body_bytes: usize = pieces.iter().map(|(_, piece)| piece.len()).sum();
        if cut_after.is_some_and(|limit| body_bytes >= limit) {
            break;
        }
    }
    let at = prelude_end.expect("a streamed response has a prelude and 8 NUL bytes");
    Streamed {
        prelude: serde_json::from_slice(&received[..at]).expect("the prelude is JSON"),
        body: received[at + 8..].to_vec(),
        pieces,
    }
}

async fn next_event(state: &State) -> Response<Full<Bytes>> {
    *state.polls.lock().expect("lock") += 1;
    state.polled.notify_waiters();
    loop {
        let notified = state.queued.notified();
        if let Some(next) = state.queue.lock().expect("lock").pop_front() {
            state
                .taken
                .lock()
                .expect("lock")
                .insert(next.id.clone(), std::time::Instant::now());
            return reply(StatusCode::OK, next.event, Some((&next.id, next.deadline)));
        }
        notified.await;
    }
}

fn reply(
    status: StatusCode,
    body: Bytes,
    invocation: Option<(&str, Duration)>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some((id, left)) = invocation {
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            + left.as_millis();
        builder = builder
            .header("lambda-runtime-aws-request-id", id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:chat-proxy",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
            );
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
