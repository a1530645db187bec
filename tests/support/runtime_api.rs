//! A stand-in for the Lambda Runtime API on loopback, so the built `bootstrap` binary can be
//! run exactly as Lambda runs it: it polls `/invocation/next`, answers each event at
//! `/invocation/{id}/response` (or `/error`), and reports a failed start at `/init/error`.
//! It also serves Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`, as
//! the AWS SDK sends it when `AWS_ENDPOINT_URL_LAMBDA` points here): an `Event` invocation
//! is answered 202 at once and queued for whichever function instance polls next, as Lambda
//! does, so work one invocation hands over really runs in another.

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
    /// Every call of the Invoke API, as received.
    invoked: Mutex<Vec<Invoked>>,
    /// How asynchronous invocations ended, in the order they did.
    async_ended: Mutex<Vec<Outcome>>,
    async_notify: Notify,
    /// How long an invocation made through the Invoke API has to answer.
    invoke_deadline: Mutex<Option<Duration>>,
    /// Answer the Invoke API with this status rather than take the call.
    invoke_refusal: Mutex<Option<u16>>,
    /// While set, `Event` invocations are taken but held here, not run (Lambda's queue
    /// before an instance is free).
    parked: Mutex<Option<Vec<Invocation>>>,
}

/// A call of the Invoke API, as received.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The function named in the path, percent-decoded.
    pub function: String,
    /// `X-Amz-Invocation-Type` (Lambda's default, `RequestResponse`, when absent).
    pub invocation_type: String,
    /// Whether it was signed (SigV4 `Authorization`).
    pub signed: bool,
    pub payload: Vec<u8>,
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
        let rx = enqueue(&self.state, Bytes::from(event.to_string()), deadline, false);
        tokio::time::timeout(deadline + Duration::from_secs(5), rx)
            .await
            .expect("the function answered")
            .expect("the runtime API stayed up")
    }

    /// Every call the Invoke API has had.
    pub fn invoked(&self) -> Vec<Invoked> {
        self.state.invoked.lock().expect("lock").clone()
    }

    /// Gives invocations made through the Invoke API `deadline` to answer (30 s else).
    pub fn set_invoke_deadline(&self, deadline: Duration) {
        *self.state.invoke_deadline.lock().expect("lock") = Some(deadline);
    }

    /// Holds `Event` invocations taken from now on, until [`RuntimeApi::release_events`].
    pub fn hold_events(&self) {
        *self.state.parked.lock().expect("lock") = Some(Vec::new());
    }

    /// Runs the held `Event` invocations, and holds no more.
    pub fn release_events(&self) {
        let parked = self.state.parked.lock().expect("lock").take();
        for invocation in parked.unwrap_or_default() {
            self.state.queue.lock().expect("lock").push_back(invocation);
            self.state.queued.notify_one();
        }
    }

    /// Answers every Invoke call with `status` (Lambda refusing), or takes them again.
    pub fn refuse_invokes(&self, status: Option<u16>) {
        *self.state.invoke_refusal.lock().expect("lock") = status;
    }

    /// Waits until `count` asynchronous invocations have ended in all; answers how many
    /// have.
    pub async fn wait_for_async(&self, count: usize, wait: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.state.async_notify.notified();
            let ended = self.state.async_ended.lock().expect("lock").len();
            if ended >= count || tokio::time::Instant::now() >= deadline {
                return ended;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
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

/// Queues an event as an invocation (or holds it, when `may_park` and events are held); its
/// outcome arrives on the receiver.
fn enqueue(
    state: &State,
    event: Bytes,
    deadline: Duration,
    may_park: bool,
) -> oneshot::Receiver<Outcome> {
    let id = {
        let mut next = state.next_id.lock().expect("lock");
        *next += 1;
        format!("req-{:06}", *next)
    };
    let (tx, rx) = oneshot::channel();
    state.waiting.lock().expect("lock").insert(id.clone(), tx);
    let invocation = Invocation {
        id,
        event,
        deadline,
    };
    if let Some(parked) = state
        .parked
        .lock()
        .expect("lock")
        .as_mut()
        .filter(|_| may_park)
    {
        parked.push(invocation);
        return rx;
    }
    state.queue.lock().expect("lock").push_back(invocation);
    state.queued.notify_one();
    rx
}

/// Lambda's Invoke API: `Event` is taken (202) and run by the next instance that polls;
/// `RequestResponse` waits for the function's answer.
async fn invoke_api(
    state: Arc<State>,
    request: Request<Incoming>,
    function: &str,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let invocation_type =
        header("x-amz-invocation-type").unwrap_or_else(|| "RequestResponse".to_owned());
    let signed = header("authorization").is_some_and(|value| value.starts_with("AWS4-HMAC-SHA256"));
    let payload = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let function = percent_decode(function);
    state.invoked.lock().expect("lock").push(Invoked {
        function,
        invocation_type: invocation_type.clone(),
        signed,
        payload: payload.to_vec(),
    });
    if let Some(status) = *state.invoke_refusal.lock().expect("lock") {
        let mut answer = reply(
            StatusCode::from_u16(status).expect("a status"),
            Bytes::from_static(br#"{"message":"Rate exceeded"}"#),
            None,
        );
        answer.headers_mut().insert(
            "x-amzn-errortype",
            hyper::header::HeaderValue::from_static("TooManyRequestsException"),
        );
        return answer;
    }
    let deadline = state
        .invoke_deadline
        .lock()
        .expect("lock")
        .unwrap_or(Duration::from_secs(30));
    let asynchronous = invocation_type == "Event";
    let outcome = enqueue(&state, payload, deadline, asynchronous);
    if asynchronous {
        let waiter = state.clone();
        tokio::spawn(async move {
            if let Ok(outcome) = outcome.await {
                waiter.async_ended.lock().expect("lock").push(outcome);
                waiter.async_notify.notify_waiters();
            }
        });
        return reply(StatusCode::ACCEPTED, Bytes::new(), None);
    }
    match outcome.await {
        Ok(Outcome::Response(value)) => reply(StatusCode::OK, Bytes::from(value.to_string()), None),
        Ok(other) => reply(StatusCode::OK, Bytes::from(format!("{other:?}")), None),
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new(), None),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok());
        match (
            bytes[at],
            hex.and_then(|pair| u8::from_str_radix(pair, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                at += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

async fn serve(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if let Some(function) = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
    {
        if request.method() == Method::POST {
            let function = function.to_owned();
            return Ok(invoke_api(state, request, &function).await);
        }
    }
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
