//! The turn engine: read the chat, build the messages, ask upstream, store the turn.
//!
//! Every front door that makes a turn goes through here, and none of them talks to the store
//! or upstream about a turn by itself; they only read requests and write answers. A turn
//! costs two Redis round trips: one read (the prompts, the history and, alongside, the
//! caller's rate limit) and one atomic write of the question with its answer, made only
//! once upstream has answered in full. A streamed turn hands each chunk to its front door's
//! [`StreamSink`] as it comes, and still stores the turn when the client has gone away.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::routes::ChatId;
use crate::store::{Store, Turn, TurnContext, UserContent};
use crate::upstream::wire::{ChatRequest, Message, Usage};
use crate::upstream::{Chunk, ChunkStream, Upstream, UpstreamError};

/// What a front door asks of the engine.
pub struct Ask<'a> {
    pub tenant: &'a Tenant,
    /// The chat this turn belongs to; `None` for a stateless call (`/v1` without
    /// `X-Chat-Id`), which reads and stores nothing and sends the caller's own `messages`.
    pub chat: Option<&'a ChatId>,
    /// The caller's new messages, in order; at least one for a chat's turn.
    pub asked: Vec<UserContent>,
    /// The model to ask, by name.
    pub model: &'a str,
    /// Parameters passed through to upstream as the caller sent them (`/v1` only).
    pub params: Option<&'a Map<String, Value>>,
    /// When upstream must have answered: the whole reply, streamed or not.
    pub deadline: Instant,
}

/// A turn upstream answered in full.
#[derive(Debug)]
pub struct Answered {
    pub reply: String,
    pub usage: Usage,
    /// False when the answer could not be stored: the caller still gets what it paid for.
    pub stored: bool,
    /// The `chat.completion` as upstream sent it (not for a streamed turn).
    pub raw: Option<Box<RawValue>>,
}

/// Where a streamed turn's chunks go: a front door's way of writing them to its client.
pub trait StreamSink: Send {
    /// A chunk of the reply, as upstream sent it.
    fn chunk(&mut self, chunk: &Chunk) -> impl Future<Output = ()> + Send;
    /// Upstream has said nothing for the keep-alive interval.
    fn keep_alive(&mut self) -> impl Future<Output = ()> + Send;
}

/// The store and upstream a turn needs, built once per cold start.
pub struct TurnEngine {
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    default_system_prompt: String,
    keep_alive: Duration,
}

/// How a turn sends the images of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HistoryImages {
    AsImages,
    /// As `[image: <url>]` text, after upstream refused an image of the history.
    AsText,
}

impl TurnEngine {
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Arc<Upstream>,
        default_system_prompt: String,
        keep_alive: Duration,
    ) -> Self {
        TurnEngine {
            store,
            upstream,
            default_system_prompt,
            keep_alive,
        }
    }

    /// Runs one turn and returns the whole answer. `rate_limit` is awaited in the same
    /// round trip as the chat's read; nothing is sent upstream unless both succeed, and
    /// nothing is stored unless upstream answered.
    pub async fn run(
        &self,
        ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Answered, ApiError> {
        let context = self.read(&ask, rate_limit, log).await?;
        let completion = self
            .ask_upstream(&context, &ask, log, |messages| async move {
                let request = ChatRequest {
                    params: ask.params,
                    ..ChatRequest::whole(ask.model, &messages)
                };
                self.upstream.chat(&request, ask.deadline).await
            })
            .await?;
        log.tokens = Some(completion.usage);
        let turn = Turn {
            id: Some(Turn::new_id()),
            asked: ask.asked,
            assistant: completion.content,
        };
        let stored = match ask.chat {
            Some(chat) => {
                log.redis(store_turn(&*self.store, ask.tenant, chat, &turn))
                    .await
            }
            None => true,
        };
        Ok(Answered {
            reply: turn.assistant,
            usage: completion.usage,
            stored,
            raw: Some(completion.raw),
        })
    }

    /// Starts a streamed turn: reads the chat and opens upstream's stream. Whatever fails
    /// here (the request, the limit, Redis, upstream's refusal) fails before the first byte
    /// of the answer, so it keeps its status. The returned turn owns all it needs to run to
    /// its end on its own.
    pub async fn open(
        &self,
        ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<OpenTurn, ApiError> {
        let context = self.read(&ask, rate_limit, log).await?;
        let stream = self
            .ask_upstream(&context, &ask, log, |messages| async move {
                let request = ChatRequest {
                    params: ask.params,
                    ..ChatRequest::streamed(ask.model, &messages)
                };
                self.upstream.chat_stream(&request, ask.deadline).await
            })
            .await?;
        Ok(OpenTurn {
            store: self.store.clone(),
            tenant: ask.tenant.clone(),
            chat: ask.chat.cloned(),
            asked: ask.asked,
            stream,
            deadline: ask.deadline,
            keep_alive: self.keep_alive,
            started: Instant::now(),
        })
    }

    /// The turn's read: the chat's context, with the rate limit in the same round trip.
    async fn read(
        &self,
        ask: &Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<TurnContext, ApiError> {
        let context = async {
            match ask.chat {
                Some(chat) => self.store.turn_context(ask.tenant, chat).await,
                None => Ok(TurnContext::default()),
            }
        };
        let (allowed, context) = log.redis(async { tokio::join!(rate_limit, context) }).await;
        allowed?;
        Ok(context?)
    }

    /// Calls upstream with the turn's messages; when upstream refuses an image of the
    /// history, calls once more with the history's images as text.
    async fn ask_upstream<'c, T, F, Fut>(
        &'c self,
        context: &'c TurnContext,
        ask: &'c Ask<'_>,
        log: &mut RequestLog,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Vec<Message<'c>>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut images = HistoryImages::AsImages;
        loop {
            let messages = self.messages(context, ask, images);
            match log.upstream(call(messages)).await {
                Ok(answer) => return Ok(answer),
                Err(error)
                    if images == HistoryImages::AsImages
                        && blames_history_images(&error, context, &ask.asked) =>
                {
                    tracing::warn!(
                        error = %error,
                        "upstream refused an image of the chat's history; sending its images as text"
                    );
                    images = HistoryImages::AsText;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The global prompt, the chat's prompt, the history, then the new messages; none for a
    /// stateless call, whose messages are the caller's own.
    fn messages<'a>(
        &'a self,
        context: &'a TurnContext,
        ask: &'a Ask<'_>,
        images: HistoryImages,
    ) -> Vec<Message<'a>> {
        if ask.chat.is_none() {
            return Vec::new();
        }
        let asked = &ask.asked;
        let global_prompt = context
            .global_prompt
            .as_deref()
            .unwrap_or(&self.default_system_prompt);
        let past = context
            .history
            .iter()
            .map(|t| t.asked.len() + 1)
            .sum::<usize>();
        let mut messages = Vec::with_capacity(2 + past + asked.len());
        messages.push(Message::System {
            content: global_prompt,
        });
        if let Some(prompt) = context.chat_prompt.as_deref() {
            messages.push(Message::System { content: prompt });
        }
        for turn in &context.history {
            for content in &turn.asked {
                messages.push(match images {
                    HistoryImages::AsImages => Message::user(content),
                    HistoryImages::AsText => Message::user_images_as_text(content),
                });
            }
            messages.push(Message::Assistant {
                content: &turn.assistant,
            });
        }
        messages.extend(asked.iter().map(Message::user));
        messages
    }
}

/// A streamed turn whose upstream has accepted it: it reads the chunks, hands them to a
/// sink, and stores the turn once the reply is whole.
pub struct OpenTurn {
    store: Arc<dyn Store>,
    tenant: Tenant,
    chat: Option<ChatId>,
    asked: Vec<UserContent>,
    stream: ChunkStream,
    deadline: Instant,
    keep_alive: Duration,
    started: Instant,
}

impl OpenTurn {
    /// Reads the reply to its end (within the deadline, whether or not the client is still
    /// there) and stores the turn. Upstream failing or falling silent past the deadline
    /// mid-stream is an error, and nothing is stored.
    pub async fn finish(mut self, sink: &mut impl StreamSink) -> Result<Answered, ApiError> {
        let mut reply = String::new();
        let mut usage = None;
        let mut finished = false;
        loop {
            let wake = (Instant::now() + self.keep_alive).min(self.deadline);
            let next = match tokio::time::timeout_at(wake, self.stream.next()).await {
                Ok(next) => next,
                Err(_silent) if Instant::now() >= self.deadline => {
                    return Err(self.failed(ApiError::UpstreamTimeout));
                }
                Err(_silent) => {
                    sink.keep_alive().await;
                    continue;
                }
            };
            match next {
                None => break,
                Some(Err(error)) => return Err(self.failed(error.into())),
                Some(Ok(chunk)) => {
                    reply.push_str(&chunk.delta);
                    finished |= chunk.finished;
                    usage = chunk.usage.or(usage);
                    sink.chunk(&chunk).await;
                }
            }
        }
        if !finished {
            let cut = UpstreamError::Transport("the stream ended before the reply did".to_owned());
            return Err(self.failed(cut.into()));
        }
        let usage = usage.unwrap_or_default();
        let turn = Turn {
            id: Some(Turn::new_id()),
            asked: self.asked,
            assistant: reply,
        };
        let stored = match &self.chat {
            Some(chat) => store_turn(&*self.store, &self.tenant, chat, &turn).await,
            None => true,
        };
        tracing::info!(
            stream_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            total_tokens = usage.total_tokens,
            stored,
            "streamed turn finished"
        );
        Ok(Answered {
            reply: turn.assistant,
            usage,
            stored,
            raw: None,
        })
    }

    fn failed(&self, error: ApiError) -> ApiError {
        tracing::warn!(
            stream_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "streamed turn failed mid-stream; nothing stored"
        );
        error
    }
}

/// Stores a turn upstream answered; a failure is logged and reported, never raised: the
/// answer is paid for and goes to the caller either way.
async fn store_turn(store: &dyn Store, tenant: &Tenant, chat: &ChatId, turn: &Turn) -> bool {
    match store.append_turn(tenant, chat, turn).await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(
                error = %error,
                "the answer was paid for but could not be stored; answering it unstored"
            );
            false
        }
    }
}

/// Whether upstream's refusal is about an image of the history rather than the new
/// messages: a chat whose old image link expired, or whose CHAT_MODEL cannot see images,
/// must not be refused forever.
fn blames_history_images(
    error: &UpstreamError,
    context: &TurnContext,
    asked: &[UserContent],
) -> bool {
    let UpstreamError::Rejected {
        message,
        code,
        param,
    } = error
    else {
        return false;
    };
    let history_urls: Vec<&str> = context
        .history
        .iter()
        .flat_map(|turn| &turn.asked)
        .flat_map(UserContent::image_urls)
        .collect();
    if history_urls.is_empty() {
        return false;
    }
    if asked
        .iter()
        .flat_map(UserContent::image_urls)
        .any(|url| message.contains(url))
    {
        return false;
    }
    // OpenAI names the message it refused as `messages.[i]...` when it can.
    if let Some(index) = param.as_deref().and_then(message_index) {
        let first_new = 1
            + usize::from(context.chat_prompt.is_some())
            + context
                .history
                .iter()
                .map(|t| t.asked.len() + 1)
                .sum::<usize>();
        return index < first_new;
    }
    let about_images = |text: &str| text.to_ascii_lowercase().contains("image");
    about_images(message)
        || code.as_deref().is_some_and(about_images)
        || history_urls.iter().any(|url| message.contains(url))
}

/// `3` from `messages.[3].content.[1].image_url` (or `messages[3]...`).
fn message_index(param: &str) -> Option<usize> {
    let rest = param.strip_prefix("messages")?;
    let rest = rest.strip_prefix('.').unwrap_or(rest).strip_prefix('[')?;
    rest.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context_with_image() -> TurnContext {
        TurnContext {
            global_prompt: None,
            chat_prompt: Some("p".into()),
            history: vec![Turn::question(
                None,
                "what?".into(),
                Some("https://x/old.png".into()),
                "a cat".into(),
            )],
        }
    }

    fn rejected(message: &str, code: Option<&str>, param: Option<&str>) -> UpstreamError {
        UpstreamError::Rejected {
            message: message.into(),
            code: code.map(Into::into),
            param: param.map(Into::into),
        }
    }

    #[test]
    fn message_indexes_are_read_from_params() {
        assert_eq!(message_index("messages.[3].content.[1].image_url"), Some(3));
        assert_eq!(message_index("messages[12].content"), Some(12));
        assert_eq!(message_index("model"), None);
        assert_eq!(message_index("messages"), None);
    }

    #[test]
    fn a_refused_history_image_is_recognised() {
        let context = context_with_image();
        let new = [UserContent::Text("and now?".into())];
        for error in [
            rejected("Timeout while downloading https://x/old.png.", None, None),
            rejected("Invalid image.", Some("invalid_image_url"), None),
            rejected(
                "Invalid content type. image_url is only supported by certain models.",
                None,
                Some("messages.[2].content.[1].type"),
            ),
        ] {
            assert!(blames_history_images(&error, &context, &new), "{error}");
        }
    }

    #[test]
    fn other_refusals_are_not_blamed_on_the_history() {
        let context = context_with_image();
        let own = [UserContent::question(
            "and this?".into(),
            Some("https://x/new.png".into()),
        )];
        let cases = [
            // The new message's own image.
            rejected("Timeout while downloading https://x/new.png.", None, None),
            // Pointed at the new message (index 4: global, chat prompt, 2 of history).
            rejected("Invalid image.", None, Some("messages.[4].content.[1]")),
            // Not about images at all.
            rejected("max_tokens is too large", None, Some("max_tokens")),
        ];
        for error in cases {
            assert!(!blames_history_images(&error, &context, &own), "{error}");
        }
        let no_images = TurnContext::default();
        let error = rejected("Invalid image.", Some("invalid_image_url"), None);
        assert!(!blames_history_images(&error, &no_images, &own));
        assert!(!blames_history_images(
            &UpstreamError::Timeout,
            &context,
            &own
        ));
    }
}
