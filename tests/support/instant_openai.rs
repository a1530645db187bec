//! An OpenAI stand-in that answers at once with a fixed, real-shaped body, for measuring
//! the proxy's own cost: unlike wiremock it keeps nothing per request, so it neither slows
//! down nor grows over a long run.

// Shared by the tests, the benchmarks and an example; each uses part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const CHAT_COMPLETION: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}"#;

const RESPONSE: &str = r#"{"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4o-mini-2024-07-18","output":[{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","status":"completed","role":"assistant","content":[{"type":"output_text","text":"The capital of France is Paris.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":false,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":24,"input_tokens_details":{"cached_tokens":0},"output_tokens":8,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":32},"user":null,"metadata":{}}"#;

const MODERATION: &str = r#"{"id":"modr-970d409ef3bef3b70c73d8232df86e7d","model":"omni-moderation-latest","results":[{"flagged":false,"categories":{"harassment":false,"violence":false},"category_scores":{"harassment":0.000012,"violence":0.000031},"category_applied_input_types":{"harassment":["text"],"violence":["text"]}}]}"#;

/// Serves on `address` (port 0 for any) until the runtime stops; returns the base URL to
/// give the proxy as `OPENAI_BASE_URL`.
pub async fn start(address: SocketAddr) -> String {
    let listener = TcpListener::bind(address).await.expect("bind");
    let bound = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    format!("http://{bound}/v1")
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    // Read the body, as a real server would, before answering.
    let _ = request.into_body().collect().await;
    let (status, body) = match path.as_str() {
        "/v1/chat/completions" => (StatusCode::OK, CHAT_COMPLETION),
        "/v1/moderations" => (StatusCode::OK, MODERATION),
        "/v1/responses" => (StatusCode::OK, RESPONSE),
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#,
        ),
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(response)
}
