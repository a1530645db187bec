//! The Lambda side of the function: every invocation, answered through the streaming
//! response API, since API Gateway's integration streams for every route.
//!
//! lambda_http's own streaming runner would do most of this, but not three things:
//! - API Gateway's streaming integration invokes the function a second time after each
//!   stream with a payload that is no HTTP event (`{"invokeCompletionStatus": ...}`), which
//!   lambda_http fails to parse, so every request would also count as a failed invocation;
//!   here any such payload is answered at once and logged at DEBUG (an unknown one at WARN);
//! - lambda_http panics on some malformed headers while it builds the request (an `unwrap`
//!   on `Url::parse` of `Host`, aws-lambda-rust-runtime's `build_request_uri`; the same
//!   family as its issues #368 and #488, fixed there for a missing `Host` but not for a
//!   malformed one such as `h:99999`); here a panic is answered as our JSON 500 rather than
//!   API Gateway's bare 502;
//! - a streamed turn whose client went away still runs to its end and is stored before the
//!   invocation ends: Lambda freezes the process between invocations, so the runtime waits
//!   for such turns ([`App::settle`]) before it asks for the next event.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use lambda_http::http::{HeaderName, HeaderValue};
use lambda_http::lambda_runtime::{
    self, layers::TracingLayer, Diagnostic, FunctionResponse, LambdaEvent, LambdaInvocation,
    MetadataPrelude, StreamResponse,
};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Layer, Service};
use lambda_http::{Request, RequestExt};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::app::App;
use crate::error::ApiError;
use crate::http::ResponseBody;
use crate::router::{handle, refuse, RunEvent};

/// What an invocation answers: a streamed HTTP response, or `{}` for a payload that is not
/// an HTTP event.
pub type Answer = FunctionResponse<serde_json::Value, ResponseBody>;

/// Serves invocations until Lambda stops the process.
///
/// lambda_runtime stops its loop when the Runtime API fails a request of its own (a local
/// emulator does when a client hangs up before the answer is posted); the loop is started
/// again rather than the process ended, unless it keeps failing at once.
pub async fn run(app: &'static App) -> Result<(), lambda_runtime::Error> {
    let mut failures_in_a_row = 0;
    loop {
        let handler = lambda_runtime::service_fn(move |event: LambdaEvent<Box<RawValue>>| {
            invocation(app, event)
        });
        let started = std::time::Instant::now();
        let result = lambda_runtime::Runtime::new(handler)
            .layer(SettleLayer { app })
            .layer(TracingLayer::new())
            .run()
            .await;
        let error = match result {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        failures_in_a_row = if started.elapsed() < RESTART_WINDOW {
            failures_in_a_row + 1
        } else {
            1
        };
        if failures_in_a_row >= MAX_QUICK_RESTARTS {
            return Err(error);
        }
        tracing::warn!(%error, "the Runtime API failed a request; serving the next invocation");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The runtime loop is started again after a failure, unless it failed this many times in
/// a row, each within `RESTART_WINDOW` of its start.
const MAX_QUICK_RESTARTS: u32 = 5;
const RESTART_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers one invocation; never an invocation error, whatever the payload.
pub async fn invocation(
    app: &App,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<Answer, Diagnostic> {
    let LambdaEvent { payload, context } = event;
    // A background response handed over by another invocation (`api/responses`).
    if let Ok(run) = serde_json::from_str::<RunEvent>(payload.get()) {
        crate::router::run(app, run, context.deadline).await;
        return Ok(FunctionResponse::BufferedResponse(serde_json::json!({})));
    }
    let (http, dropped) = match serde_json::from_str::<LambdaRequest>(payload.get()) {
        Ok(http) => (http, Vec::new()),
        Err(_) => match unreadable_http(payload.get()) {
            None => return Ok(not_http(&payload)),
            Some(Ok(cleaned)) => cleaned,
            Some(Err(response)) => return Ok(streamed(response)),
        },
    };
    // Building the request can panic inside lambda_http (see the module's comment).
    let request = std::panic::catch_unwind(AssertUnwindSafe(|| Request::from(http)));
    let response = match request {
        Ok(request) if !dropped.is_empty() => {
            let request = request.with_lambda_context(context);
            refuse(app, &request, bad_headers(&dropped))
        }
        Ok(request) => {
            let request = request.with_lambda_context(context);
            // `handle` catches its own panics; this one is belt and braces for the runtime.
            AssertUnwindSafe(handle(app, request))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| ApiError::Internal.into_response())
        }
        Err(_panic) => {
            tracing::error!("the HTTP event could not be read (lambda_http panicked)");
            ApiError::Internal.into_response()
        }
    };
    Ok(streamed(response))
}

fn streamed(response: lambda_http::Response<ResponseBody>) -> Answer {
    let (parts, body) = response.into_parts();
    FunctionResponse::StreamingResponse(StreamResponse {
        metadata_prelude: MetadataPrelude {
            status_code: parts.status,
            headers: parts.headers,
            cookies: Vec::new(),
        },
        stream: body,
    })
}

/// An HTTP event that lambda_http could not read: one that holds a header the `http`
/// crate cannot hold (a control character in a value, a `(` in a name), which API Gateway
/// passes on. `None` when the payload is no HTTP event at all; else the event with those
/// headers dropped and their names, or, when it still cannot be read, the 400 to answer.
fn unreadable_http(payload: &str) -> Option<Result<Cleaned, lambda_http::Response<ResponseBody>>> {
    let mut event: serde_json::Value = serde_json::from_str(payload).ok()?;
    let is_http =
        event.get("httpMethod").is_some() || event.pointer("/requestContext/http/method").is_some();
    if !is_http {
        return None;
    }
    let mut dropped = Vec::new();
    for field in ["headers", "multiValueHeaders"] {
        if let Some(serde_json::Value::Object(headers)) = event.get_mut(field) {
            headers.retain(|name, value| {
                let fits = HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && header_values(value).all(|v| HeaderValue::from_bytes(v.as_bytes()).is_ok());
                if !fits && !dropped.contains(name) {
                    dropped.push(name.clone());
                }
                fits
            });
        }
    }
    let readable = serde_json::from_value::<LambdaRequest>(event);
    Some(match readable {
        Ok(http) if !dropped.is_empty() => Ok((http, dropped)),
        _ => {
            tracing::warn!("an HTTP event could not be read");
            Err(ApiError::bad_request(
                "invalid_request",
                "the request could not be read (its method, path or query is not valid HTTP)",
            )
            .into_response())
        }
    })
}

/// An event that could be read once some headers were dropped, and their names.
type Cleaned = (LambdaRequest, Vec<String>);

/// A header's value in an event: a string, or (`multiValueHeaders`) a list of them.
fn header_values(value: &serde_json::Value) -> impl Iterator<Item = &str> {
    let values: Vec<&str> = match value {
        serde_json::Value::String(text) => vec![text.as_str()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    values.into_iter()
}

/// The 400 for headers that had to be dropped, named as they came (escaped, and cut short:
/// a name may be anything).
fn bad_headers(names: &[String]) -> ApiError {
    let named: Vec<String> = names
        .iter()
        .map(|name| {
            let short: String = name.chars().take(64).collect();
            format!("{short:?}")
        })
        .collect();
    ApiError::bad_request(
        "invalid_header",
        format!(
            "header {} cannot be read: a header name is letters, digits and !#$%&'*+-.^_`|~, \
             and a value holds no control characters",
            named.join(", ")
        ),
    )
}

/// The payload API Gateway's streaming integration sends after a stream has ended.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompletionStatus {
    invoke_completion_status: String,
    #[serde(default)]
    request_id: Option<String>,
}

fn not_http(payload: &RawValue) -> Answer {
    match serde_json::from_str::<CompletionStatus>(payload.get()) {
        Ok(completion) => tracing::debug!(
            status = %completion.invoke_completion_status,
            request_id = completion.request_id.as_deref().unwrap_or("-"),
            "stream completion reported"
        ),
        Err(_) => tracing::warn!(
            bytes = payload.get().len(),
            "an invocation that is not an HTTP event was answered with {{}}"
        ),
    }
    FunctionResponse::BufferedResponse(serde_json::json!({}))
}

/// Waits, after each invocation, for the streamed turns it started.
#[derive(Clone, Copy)]
struct SettleLayer {
    app: &'static App,
}

impl<S> Layer<S> for SettleLayer {
    type Service = Settle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Settle {
            inner,
            app: self.app,
        }
    }
}

struct Settle<S> {
    inner: S,
    app: &'static App,
}

impl<S> Service<LambdaInvocation> for Settle<S>
where
    S: Service<LambdaInvocation, Response = ()>,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = ();
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let answered = self.inner.call(invocation);
        let app = self.app;
        Box::pin(async move {
            let result = answered.await;
            app.settle().await;
            result
        })
    }
}
