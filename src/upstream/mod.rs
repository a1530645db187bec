//! OpenAI through async-openai: chat, vision and moderation, each bounded by a deadline.
//!
//! The client is built once at cold start and shared; every call runs inside a deadline
//! (`OPENAI_TIMEOUT_SECONDS`, or less when the Lambda invocation has less time left), which
//! both caps the whole call and tells the retry layer whether another attempt still fits.

pub mod echo;
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

use self::retry::{DeadlineRetry, RateLimited, DEADLINE};
use self::wire::{ChatRequest, ChatResponse, ChunkFields, ModerationRequest, Usage};
use crate::config::OpenAiConfig;

/// Why an upstream call failed. Messages are for logs; `ApiError` decides what clients see.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("rate limited by OpenAI")]
    RateLimited { retry_after: Option<u64> },
    #[error("OpenAI did not answer before the deadline")]
    Timeout,
    /// Upstream refused the request with a 4xx other than 408 and 429: an invalid request
    /// (400, e.g. an image URL it cannot fetch), an unknown model (404), the operator's key
    /// refused (401, 403), ... `code` and `param` are OpenAI's, when it sent them; `message`
    /// has the key and any organization or project id cut out.
    #[error("OpenAI refused the request (HTTP {status}): {message}")]
    Refused {
        status: u16,
        message: String,
        code: Option<String>,
        param: Option<String>,
    },
    #[error("OpenAI answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot reach OpenAI: {0}")]
    Transport(String),
    #[error("OpenAI's answer could not be read: {0}")]
    Unreadable(String),
}

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
    pub usage: Usage,
    pub raw: Box<RawValue>,
}

/// One `chat.completion.chunk` of a streamed reply: as upstream sent it, and the parts the
/// proxy reads.
#[derive(Debug)]
pub struct Chunk {
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
    usage_only: bool,
}

impl Chunk {
    /// The chunk carries usage and no choice: the last chunk of a stream that asked for it.
    pub fn is_usage_only(&self) -> bool {
        self.usage_only
    }
}

type RawStream = Pin<Box<dyn Stream<Item = Result<Box<RawValue>, OpenAIError>> + Send>>;

/// The chunks of a streamed reply, as they come.
pub struct ChunkStream {
    inner: RawStream,
    api_key: SecretString,
    /// The choices begun and not yet ended (`n` > 1 streams several).
    open: std::collections::BTreeSet<u32>,
    /// The first choice has ended.
    first_ended: bool,
}

impl ChunkStream {
    /// The next chunk; `None` when upstream closed the stream.
    pub async fn next(&mut self) -> Option<Result<Chunk, UpstreamError>> {
        let raw = match self.inner.next().await? {
            Ok(raw) => raw,
            Err(error) => return Some(Err(classify(error, &self.api_key))),
        };
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
                delta.extend(choice.delta.content);
                delta.extend(choice.delta.refusal);
                finished |= choice.finish_reason.is_some();
            }
        }
        self.first_ended |= finished;
        Some(Ok(Chunk {
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
        crate::install_tls_provider();
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
        let content = response
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content.or(choice.message.refusal));
        Ok(Completion {
            content,
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
        Ok(ChunkStream {
            inner,
            api_key: self.api_key.clone(),
            open: std::collections::BTreeSet::new(),
            first_ended: false,
        })
    }

    /// Upstream's model list, as it sends it.
    pub async fn models(&self, deadline: Instant) -> Result<Box<RawValue>, UpstreamError> {
        let models = self.client.models();
        let call = models.list_byot::<Box<RawValue>>();
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

/// Upstream's error messages can quote the key that was sent (OpenAI's 401 does, in part)
/// and name the operator's organization or project (its 429s and 403s do); they reach logs
/// and, for a 4xx, the client, so the key and those ids are cut out of them first.
fn redact(message: String, api_key: &SecretString) -> String {
    let key = api_key.expose_secret();
    let message = if key.is_empty() || !message.contains(key) {
        message
    } else {
        message.replace(key, "[redacted]")
    };
    redact_account_ids(&message)
}

/// `org-...` and `proj_...` ids replaced by `org-[redacted]` and `proj_[redacted]`.
fn redact_account_ids(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, prefix)) = ["org-", "proj_"]
        .iter()
        .filter_map(|prefix| rest.find(prefix).map(|at| (at, *prefix)))
        .min()
    {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let after = &rest[at + prefix.len()..];
        let id_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        out.push_str(&rest[..at + prefix.len()]);
        if starts_word && id_len > 0 {
            out.push_str("[redacted]");
            rest = &after[id_len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn classify(error: OpenAIError, api_key: &SecretString) -> UpstreamError {
    match error {
        OpenAIError::ApiError(response) => {
            let status = response.status_code.as_u16();
            let error = response.api_error;
            let message = redact(error.message, api_key);
            match status {
                429 => UpstreamError::RateLimited { retry_after: None },
                408 => UpstreamError::Timeout,
                400..=499 => UpstreamError::Refused {
                    status,
                    message,
                    code: error.code,
                    param: error.param,
                },
                _ => UpstreamError::Status { status, message },
            }
        }
        OpenAIError::Reqwest(error) if error.is_timeout() => UpstreamError::Timeout,
        OpenAIError::Reqwest(error) if error.is_decode() => {
            UpstreamError::Unreadable(error.to_string())
        }
        OpenAIError::Reqwest(error) => UpstreamError::Transport(error.without_url().to_string()),
        OpenAIError::JSONDeserialize(error, _body) => UpstreamError::Unreadable(error.to_string()),
        OpenAIError::Boxed(boxed) => match boxed.downcast::<RateLimited>() {
            Ok(limited) => UpstreamError::RateLimited {
                retry_after: limited.retry_after,
            },
            Err(other) => UpstreamError::Transport(other.to_string()),
        },
        other => UpstreamError::Transport(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_account_ids_are_cut_out_of_upstream_messages() {
        let key = SecretString::from("sk-secret-123".to_owned());
        let cases = [
            (
                "Incorrect API key provided: sk-secret-123.",
                "Incorrect API key provided: [redacted].",
            ),
            (
                "Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min.",
                "Rate limit reached for gpt-4o in organization org-[redacted] on tokens per min.",
            ),
            (
                "Project `proj_x9Y` does not have access to model `gpt-5`",
                "Project `proj_[redacted]` does not have access to model `gpt-5`",
            ),
            ("a cyborg-7 and org- alone", "a cyborg-7 and org- alone"),
            ("nothing to hide", "nothing to hide"),
        ];
        for (message, redacted) in cases {
            assert_eq!(redact(message.to_owned(), &key), redacted);
        }
    }
}
