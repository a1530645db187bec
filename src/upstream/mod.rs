//! OpenAI through async-openai: chat, vision and moderation, each bounded by a deadline.
//!
//! The client is built once at cold start and shared; every call runs inside a deadline
//! (`OPENAI_TIMEOUT_SECONDS`, or less when the Lambda invocation has less time left), which
//! both caps the whole call and tells the retry layer whether another attempt still fits.

mod calls;
pub mod echo;
mod error;
pub mod responses;
mod retry;
pub mod wire;

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::Client;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;
use serde_json::Value;

pub use self::calls::ToolCalls;
pub use self::error::UpstreamError;
use self::error::{classify, redact};
use self::retry::{DeadlineRetry, DEADLINE};
use self::wire::{ChatRequest, ChatResponse, ChunkFields, ModerationRequest, Usage};
use crate::config::OpenAiConfig;

/// Which configured model a turn goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Chat,
    Vision,
}

/// A reply and what it cost, with the `chat.completion` object as upstream sent it.
#[derive(Debug)]
pub struct Completion {
    /// The first choice's text (or refusal); `None` when it holds neither, as an answer made
    /// only of tool calls does.
    pub content: Option<String>,
    /// The first choice's tool calls, as upstream sent them.
    pub calls: Vec<Value>,
    pub usage: Usage,
    pub raw: Box<RawValue>,
}

/// One `chat.completion.chunk` of a streamed reply: as upstream sent it, and the parts the
/// proxy reads.
#[derive(Debug)]
pub struct Chunk {
    /// As upstream sent it: a `chat.completion.chunk`, or a Responses event.
    pub raw: Box<RawValue>,
    /// The piece of the reply it carries (content, or a refusal), possibly empty.
    pub delta: String,
    /// Upstream said why the reply (the first choice) ended: it is whole.
    pub finished: bool,
    /// Every choice the stream has begun has ended: only the usage and the end of the
    /// stream may follow.
    pub whole: bool,
    /// The usage chunk, last of a stream that asked for it.
    pub usage: Option<Usage>,
    pub(crate) usage_only: bool,
    /// The response failed (a Responses stream's `response.failed`), as upstream said why:
    /// the event is passed on as sent, and the turn ends with it, unstored.
    pub failure: Option<String>,
}

impl Chunk {
    /// The chunk carries usage and no choice: the last chunk of a stream that asked for it.
    pub fn is_usage_only(&self) -> bool {
        self.usage_only
    }
}

type RawStream = Pin<Box<dyn Stream<Item = Result<Box<RawValue>, OpenAIError>> + Send>>;

/// The chunks of a streamed reply, as they come: `chat.completion.chunk`s, or the Responses
/// API's events.
pub struct ChunkStream {
    inner: RawStream,
    api_key: SecretString,
    /// A Responses stream: its events, and the response its last one completed.
    responses: Option<Option<Box<RawValue>>>,
    /// The choices begun and not yet ended (`n` > 1 streams several).
    open: std::collections::BTreeSet<u32>,
    /// The first choice has ended.
    first_ended: bool,
    /// The first choice's tool calls so far.
    calls: ToolCalls,
}

impl ChunkStream {
    /// A stream of `chat.completion.chunk`s, or (`responses`) of the Responses API's events.
    pub(crate) fn new(inner: RawStream, api_key: SecretString, responses: bool) -> ChunkStream {
        ChunkStream {
            inner,
            api_key,
            responses: responses.then_some(None),
            open: std::collections::BTreeSet::new(),
            first_ended: false,
            calls: ToolCalls::default(),
        }
    }

    /// The whole tool calls of the reply (the first choice), once its stream has ended.
    pub fn tool_calls(&self) -> Vec<Value> {
        self.calls.whole()
    }

    /// The response a Responses stream completed, once it has.
    pub fn completed_response(&mut self) -> Option<Box<RawValue>> {
        self.responses.as_mut().and_then(Option::take)
    }

    /// The next chunk; `None` when upstream closed the stream.
    pub async fn next(&mut self) -> Option<Result<Chunk, UpstreamError>> {
        let raw = match self.inner.next().await? {
            Ok(raw) => raw,
            Err(error) => return Some(Err(classify(error, &self.api_key))),
        };
        if let Some(completed) = &mut self.responses {
            return Some(responses::event(raw, completed, &self.api_key));
        }
        let fields: ChunkFields = match serde_json::from_str(raw.get()) {
            Ok(fields) => fields,
            Err(e) => return Some(Err(UpstreamError::Unreadable(format!("a chunk: {e}")))),
        };
        if let Some(error) = fields.error {
            return Some(Err(UpstreamError::Status {
                status: 200,
                message: redact(error.message, &self.api_key),
            }));
        }
        let usage_only = fields.choices.is_empty() && fields.usage.is_some();
        let mut delta = String::new();
        let mut finished = false;
        for choice in fields.choices {
            if choice.finish_reason.is_some() {
                self.open.remove(&choice.index);
            } else {
                self.open.insert(choice.index);
            }
            // The reply kept is the first one (`n` > 1 is for stateless calls only).
            if choice.index == 0 {
                if let Some(calls) = &choice.delta.tool_calls {
                    self.calls.add(calls);
                }
                delta.extend(choice.delta.content);
                delta.extend(choice.delta.refusal);
                finished |= choice.finish_reason.is_some();
            }
        }
        self.first_ended |= finished;
        Some(Ok(Chunk {
            failure: None,
            raw,
            delta,
            finished,
            whole: self.first_ended && self.open.is_empty(),
            usage: fields.usage,
            usage_only,
        }))
    }
}

pub struct Upstream {
    client: Client<OpenAIConfig>,
    chat_model: String,
    vision_model: String,
    moderation_model: String,
    timeout: Duration,
    api_key: SecretString,
}

impl Upstream {
    /// Builds the HTTP client and its connection pool once; no network call is made here.
    pub fn new(config: &OpenAiConfig) -> Result<Self, UpstreamError> {
        crate::tls::install_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Transport(format!("cannot build the HTTP client: {e}")))?;
        let base_url = if config.is_echo() {
            echo::ECHO_BASE_URL
        } else {
            &config.base_url
        };
        let openai = OpenAIConfig::new()
            .with_api_key(config.api_key.expose_secret())
            .with_api_base(base_url);
        let client = Client::with_config(openai);
        let client = if config.is_echo() {
            let models = vec![config.chat_model.clone(), config.vision_model.clone()];
            client.with_http_service(DeadlineRetry::new(echo::EchoService::new(models)))
        } else {
            client.with_http_service(DeadlineRetry::new(ReqwestService::new(http)))
        };
        Ok(Upstream {
            client,
            chat_model: config.chat_model.clone(),
            vision_model: config.vision_model.clone(),
            moderation_model: config.moderation_model.clone(),
            timeout: config.timeout,
            api_key: config.api_key.clone(),
        })
    }

    /// When a call starting now must be done: the configured timeout, or `limit` if sooner.
    pub fn deadline(&self, limit: Option<Instant>) -> Instant {
        let own = Instant::now() + self.timeout;
        limit.map_or(own, |limit| limit.min(own))
    }

    /// The configured model name for a turn.
    pub fn model_name(&self, model: Model) -> &str {
        match model {
            Model::Chat => &self.chat_model,
            Model::Vision => &self.vision_model,
        }
    }

    /// Sends a chat completion request and returns the whole reply.
    pub async fn chat(
        &self,
        request: &ChatRequest<'_>,
        deadline: Instant,
    ) -> Result<Completion, UpstreamError> {
        let chat = self.client.chat();
        let call = chat.create_byot::<_, Box<RawValue>>(request);
        let raw = self.within(deadline, call).await?;
        let response: ChatResponse = serde_json::from_str(raw.get())
            .map_err(|e| UpstreamError::Unreadable(e.to_string()))?;
        let usage = response.usage.unwrap_or_default();
        let (content, calls) = match response.choices.into_iter().next() {
            Some(choice) => (
                choice.message.content.or(choice.message.refusal),
                choice.message.tool_calls.unwrap_or_default(),
            ),
            None => (None, Vec::new()),
        };
        Ok(Completion {
            content,
            calls,
            usage,
            raw,
        })
    }

    /// Sends a streamed chat completion request (which must say `stream: true`) and returns
    /// once upstream has accepted it: a refusal, a rate limit or an unreachable upstream is
    /// an error here, before any chunk, and retries happen only here. Nothing reaches the
    /// client while this waits, so it is bounded like a whole call (`OPENAI_TIMEOUT_SECONDS`)
    /// as well as by `deadline`; reading the chunks is the caller's, within `deadline`.
    pub async fn chat_stream(
        &self,
        request: &ChatRequest<'_>,
        deadline: Instant,
    ) -> Result<ChunkStream, UpstreamError> {
        let chat = self.client.chat();
        let call = chat.create_stream_byot::<_, Box<RawValue>>(request);
        let inner = self.within(self.deadline(Some(deadline)), call).await?;
        Ok(ChunkStream::new(inner, self.api_key.clone(), false))
    }

    /// Upstream's model list, as it sends it.
    pub async fn models(&self, deadline: Instant) -> Result<Box<RawValue>, UpstreamError> {
        let models = self.client.models();
        let call = models.list_byot::<Box<RawValue>>();
        self.within(deadline, call).await
    }

    /// Upstream's description of one model, as it sends it.
    pub async fn model(&self, id: &str, deadline: Instant) -> Result<Box<RawValue>, UpstreamError> {
        let models = self.client.models();
        let call = models.retrieve_byot::<_, Box<RawValue>>(id);
        self.within(deadline, call).await
    }

    /// Classifies `input` with the moderation model; the result is returned as received.
    pub async fn moderate(
        &self,
        input: &str,
        deadline: Instant,
    ) -> Result<serde_json::Value, UpstreamError> {
        let request = ModerationRequest {
            model: &self.moderation_model,
            input,
        };
        let moderations = self.client.moderations();
        let call = moderations.create_byot::<_, serde_json::Value>(&request);
        let result = self.within(deadline, call).await?;
        if !result
            .get("results")
            .is_some_and(serde_json::Value::is_array)
        {
            return Err(UpstreamError::Unreadable(
                "the moderation answer has no results".to_owned(),
            ));
        }
        Ok(result)
    }
}

impl Upstream {
    /// Runs an upstream call with `deadline` in scope for the retry layer, and gives up at it.
    async fn within<T>(
        &self,
        deadline: Instant,
        call: impl std::future::Future<Output = Result<T, OpenAIError>>,
    ) -> Result<T, UpstreamError> {
        match tokio::time::timeout_at(deadline, DEADLINE.scope(deadline, call)).await {
            Ok(result) => result.map_err(|error| classify(error, &self.api_key)),
            Err(_elapsed) => Err(UpstreamError::Timeout),
        }
    }
}
