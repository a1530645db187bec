//! The handler behind a real HTTP server on loopback, so that real HTTP clients (async-openai,
//! an OpenAI SDK) can talk to it: each request becomes a `lambda_http::Request`, and the
//! handler's answer, streamed or whole, goes back as it comes.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use chat_proxy::http::ResponseBody;
use chat_proxy::{handle, App};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves `app` on a free loopback port until the test's runtime stops; returns its address.
pub async fn serve(app: &'static App) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(app, request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    app: &'static App,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut builder = lambda_http::http::Request::builder()
        .method(parts.method)
        .uri(parts.uri);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(lambda_http::Body::from(body.to_vec()))
        .expect("a request the server parsed");
    let (parts, body) = handle(app, request).await.into_parts();
    let body: Body = match body {
        ResponseBody::Whole(bytes) => http_body_util::Full::new(bytes).boxed(),
        stream @ ResponseBody::Stream(_) => {
            use futures::StreamExt;
            BodyExt::boxed(StreamBody::new(stream.map(|frame| frame.map(Frame::data))))
        }
    };
    Ok(hyper::Response::from_parts(parts, body))
}
