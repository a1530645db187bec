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
    /// The function answered; for an HTTP event this is the API Gateway response object.
    Response(Value),
    /// The function reported an invocation error.
    Error(Value),
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
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
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

async fn next_event(state: &State) -> Response<Full<Bytes>> {
    loop {
        let notified = state.queued.notified();
        if let Some(next) = state.queue.lock().expect("lock").pop_front() {
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
