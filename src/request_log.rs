//! The one structured line logged per request (JSON on Lambda): what it was, how it ended,
//! and where its time went, so the proxy's own overhead can be read off every call.

use std::time::Duration;

use lambda_http::{Request, RequestExt, Response};
use tokio::time::Instant;

use crate::upstream::wire::Usage;

/// The one line logged per request: what it was, how it ended, and where the time went.
/// Never a message's text, never a key.
#[derive(Default)]
pub struct RequestLog {
    pub route: &'static str,
    pub caller: Option<String>,
    pub tokens: Option<Usage>,
    redis: Duration,
    upstream: Duration,
}

impl RequestLog {
    /// Awaits Redis work, adding the wait to the request's Redis time.
    pub async fn redis<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let output = work.await;
        self.redis += started.elapsed();
        output
    }

    /// Awaits OpenAI, adding the wait to the request's upstream time.
    pub async fn upstream<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let output = work.await;
        self.upstream += started.elapsed();
        output
    }

    /// Logs the request line. For a streamed answer it is logged when the stream starts
    /// (`streamed` is true), and the turn logs its own line when the stream ends.
    pub fn emit<B>(
        &self,
        request: &Request,
        response: &Response<B>,
        streamed: bool,
        total: Duration,
    ) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            request_id = request.lambda_context_ref().map(|c| c.request_id.as_str()),
            method = %request.method(),
            route = self.route,
            caller = self.caller.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            streamed,
            latency_ms = ms(total),
            upstream_ms = ms(self.upstream),
            redis_ms = ms(self.redis),
            overhead_ms = ms(total.saturating_sub(self.upstream)),
            prompt_tokens = self.tokens.map(|t| t.prompt_tokens),
            completion_tokens = self.tokens.map(|t| t.completion_tokens),
            total_tokens = self.tokens.map(|t| t.total_tokens),
            "request"
        );
    }
}
