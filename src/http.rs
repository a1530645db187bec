//! Response helpers shared by every front door: the response body (whole or streamed), JSON
//! answers, and server-sent event framing.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use lambda_http::http::{header, HeaderName, HeaderValue, StatusCode};
use lambda_http::Response;
use serde::Serialize;
use tokio::sync::mpsc;

/// Set to `false` on a turn's answer when the turn could not be stored.
pub const X_CHAT_STORED: HeaderName = HeaderName::from_static("x-chat-stored");
/// On `GET /<chat_id>/chat`: the id of the chat's turn being made, which
/// `GET /<chat_id>/live` follows.
pub const X_CHAT_LIVE: HeaderName = HeaderName::from_static("x-chat-live");
/// On `GET /<chat_id>/chat` of a temporary chat: how long after its last write it is kept
/// (seconds).
pub const X_CHAT_TEMPORARY: HeaderName = HeaderName::from_static("x-chat-temporary");
/// Set to `true` on an answer replayed for a retry with the same `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How many frames a stream holds for a slow client before its producer waits.
const STREAM_BUFFER: usize = 64;

/// A response body: whole, or frames sent as they are made.
#[derive(Debug)]
pub enum ResponseBody {
    Whole(Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody::Whole(Bytes::new())
    }

    /// A streamed body and the sender that feeds it; the body ends when the sender drops.
    /// A client that takes no frame for `stall` while the buffer is full is taken as gone.
    pub fn channel(stall: Duration) -> (FrameSender, ResponseBody) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        (
            FrameSender {
                tx,
                gone: false,
                stall,
            },
            ResponseBody::Stream(rx),
        )
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, ResponseBody::Stream(_))
    }

    /// The next piece of the body, or `None` at its end.
    pub async fn next(&mut self) -> Option<Bytes> {
        match self {
            ResponseBody::Whole(bytes) if bytes.is_empty() => None,
            ResponseBody::Whole(bytes) => Some(std::mem::take(bytes)),
            ResponseBody::Stream(rx) => rx.recv().await,
        }
    }
}

impl From<&'static str> for ResponseBody {
    fn from(text: &'static str) -> Self {
        ResponseBody::Whole(Bytes::from_static(text.as_bytes()))
    }
}

impl From<Vec<u8>> for ResponseBody {
    fn from(bytes: Vec<u8>) -> Self {
        ResponseBody::Whole(Bytes::from(bytes))
    }
}

impl futures_util::Stream for ResponseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut *self {
            ResponseBody::Whole(bytes) if bytes.is_empty() => Poll::Ready(None),
            ResponseBody::Whole(bytes) => Poll::Ready(Some(Ok(std::mem::take(bytes)))),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|frame| frame.map(Ok)),
        }
    }
}

/// Feeds a streamed body. Once the client has gone, frames are dropped: the work behind
/// the stream goes on (a turn still finishes and is stored) without anyone to tell. A
/// client that stops reading without leaving counts as gone once it has left a full buffer
/// untouched for the stall time: it must not hold the turn behind the stream.
pub struct FrameSender {
    tx: mpsc::Sender<Bytes>,
    gone: bool,
    stall: Duration,
}

impl FrameSender {
    pub async fn send(&mut self, frame: Bytes) {
        if self.gone {
            return;
        }
        match tokio::time::timeout(self.stall, self.tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => self.gone = true,
            Err(_stalled) => {
                tracing::warn!(
                    stall_ms = self.stall.as_millis() as u64,
                    "the client stopped reading the stream; going on without it"
                );
                self.gone = true;
            }
        }
    }

    /// Whether the client has gone away.
    pub fn client_gone(&self) -> bool {
        self.gone || self.tx.is_closed()
    }
}

/// A JSON response. Serialising the proxy's own types cannot fail; if it ever did, the
/// client still gets a JSON error rather than a panic.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<ResponseBody> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            INTERNAL_ERROR_BODY.to_vec(),
        ),
    };
    let mut response = Response::new(ResponseBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub const INTERNAL_ERROR_BODY: &[u8] =
    br#"{"error":{"message":"something went wrong","type":"api_error","param":null,"code":"internal_error"}}"#;

/// `{}`, the answer of every route that only writes.
pub fn empty_object() -> Response<ResponseBody> {
    json_response(StatusCode::OK, &serde_json::json!({}))
}

/// A JSON answer kept for an `Idempotency-Key`.
pub fn json_body(body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Marks an answer as the replay of an earlier one.
pub fn replayed(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A 200 whose body is a stream of server-sent events.
pub fn event_stream(body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells proxies that buffer (nginx and the like) to pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One server-sent event: `event: <name>` (when named) and `data: <data>`. `data` must be a
/// single line, which JSON always is.
pub fn sse_event(name: Option<&str>, data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 32);
    if let Some(name) = name {
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(name.as_bytes());
        frame.push(b'\n');
    }
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// One server-sent event with its `id: <position>`, which a reader that left may resume
/// after (the seed's `GET /<chat_id>/live?after=<position>`).
pub fn sse_event_at(name: &str, position: u64, data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 48);
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(position.to_string().as_bytes());
    frame.push(b'\n');
    frame.extend_from_slice(&sse_event(Some(name), data));
    Bytes::from(frame)
}

/// A comment line: ignored by every SSE reader, but it keeps idle connections open.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Whether the client asked for server-sent events in its `Accept` header.
pub fn accepts_event_stream(headers: &lambda_http::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_as_sse() {
        assert_eq!(
            &sse_event(Some("delta"), br#"{"content":"Hi"}"#)[..],
            b"event: delta\ndata: {\"content\":\"Hi\"}\n\n"
        );
        assert_eq!(&sse_event(None, b"[DONE]")[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn accept_headers_are_read_by_media_type() {
        let with = |value: &str| {
            let mut headers = lambda_http::http::HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().unwrap());
            accepts_event_stream(&headers)
        };
        assert!(with("text/event-stream"));
        assert!(with("application/json, Text/Event-Stream;q=0.9"));
        assert!(!with("application/json"));
        assert!(!with("*/*"));
        assert!(!accepts_event_stream(&lambda_http::http::HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_sender_is_dropped() {
        let (mut tx, mut body) = ResponseBody::channel(Duration::from_secs(1));
        tx.send(Bytes::from_static(b"one")).await;
        drop(tx);
        assert_eq!(body.next().await.as_deref(), Some(&b"one"[..]));
        assert_eq!(body.next().await, None);
    }

    #[tokio::test]
    async fn a_sender_notices_the_client_leaving() {
        let (mut tx, body) = ResponseBody::channel(Duration::from_secs(1));
        drop(body);
        tx.send(Bytes::from_static(b"lost")).await;
        assert!(tx.client_gone());
    }
}
