//! The turn engine: read the chat, build the messages, ask upstream, store the turn.
//!
//! Every front door that makes a turn goes through here, and none of them talks to the store
//! or upstream about a turn by itself; they only read requests and write answers. A turn
//! costs two Redis round trips: one read (the prompts, the history and, alongside, the
//! caller's rate limit, the tokens it spent today and its `Idempotency-Key`), and one write
//! of the question with its answer (with the chat's usage and the answer to replay, in one
//! atomic script; the caller's counters in a second script sent with it), made only once
//! upstream has answered in full. A streamed turn hands each chunk to its front door's
//! [`StreamSink`] as it comes, and still stores the turn when the client has gone away.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::Tenant;
use crate::budget::{self, Window};
use crate::clock::UtcDay;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::routes::ChatId;
use crate::store::{
    Claim, Claimant, IdempotencyKey, KeptAnswer, Spent, Store, Turn, TurnContext, TurnExtras,
    UserContent,
};
use crate::upstream::wire::{ChatRequest, Message, Usage};
use crate::upstream::{Chunk, ChunkStream, Upstream, UpstreamError};

/// What a front door asks of the engine.
pub struct Ask<'a> {
    pub tenant: &'a Tenant,
    /// The chat this turn belongs to; `None` for a stateless call (`/v1` without
    /// `X-Chat-Id`), which reads and stores no chat and sends the caller's own `messages`.
    pub chat: Option<&'a ChatId>,
    /// The caller's new messages, in order; at least one for a chat's turn.
    pub asked: Vec<UserContent>,
    /// The model to ask, by name.
    pub model: &'a str,
    /// Parameters passed through to upstream as the caller sent them (`/v1` only).
    pub params: Option<&'a Map<String, Value>>,
    /// When upstream must have answered: the whole reply, streamed or not.
    pub deadline: Instant,
    /// The caller's address: an open API limits and counts tokens by it.
    pub ip: Option<&'a str>,
    /// The request's `Idempotency-Key`, when it sent one.
    pub keep: Option<Keep>,
}

/// An `Idempotency-Key` and how to keep the answer for a retry.
#[derive(Clone)]
pub struct Keep {
    pub key: IdempotencyKey,
    /// What the request asked, so that a retry asking something else is told apart.
    pub fingerprint: String,
    /// This request's own mark on its claim of the key.
    token: String,
    /// A buffered answer as the front door will replay it (rendered where the turn is
    /// written); a streamed one is rendered by its [`StreamSink`].
    pub render: Arc<dyn Fn(&Answered) -> String + Send + Sync>,
}

/// How long a claim outlives its request's deadline, should the request never end it.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);

impl Keep {
    pub fn new(
        key: IdempotencyKey,
        fingerprint: String,
        render: Arc<dyn Fn(&Answered) -> String + Send + Sync>,
    ) -> Keep {
        Keep {
            key,
            fingerprint,
            token: Turn::new_id(),
            render,
        }
    }

    /// This request as the holder of the key's claim, held until `deadline` and a margin.
    fn claimant(&self, deadline: Instant) -> Claimant<'_> {
        Claimant {
            fingerprint: &self.fingerprint,
            token: &self.token,
            hold: deadline.saturating_duration_since(Instant::now()) + CLAIM_MARGIN,
        }
    }
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

/// How a buffered turn ended.
#[derive(Debug)]
pub enum Ran {
    Answered(Answered),
    /// A retry of an answered request: its kept answer, with no upstream call.
    Replayed(String),
}

/// How a streamed turn started.
pub enum Opened {
    Streaming(Box<OpenTurn>),
    /// A retry of an answered request: its kept answer, with no upstream call.
    Replayed(String),
}

/// Where a streamed turn's chunks go: a front door's way of writing them to its client.
pub trait StreamSink: Send {
    /// A chunk of the reply, as upstream sent it.
    fn chunk(&mut self, chunk: &Chunk) -> impl Future<Output = ()> + Send;
    /// Upstream has said nothing for the keep-alive interval.
    fn keep_alive(&mut self) -> impl Future<Output = ()> + Send;
    /// The answer to replay to a retry with the same `Idempotency-Key`: what this sink
    /// streamed, as the front door will replay it.
    fn kept_answer(&self, answered: &Answered) -> String;
}

/// What a turn needs besides the request, built once per cold start.
pub struct TurnEngine {
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    settings: TurnSettings,
}

/// The limits a turn runs within.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub default_system_prompt: String,
    /// How long a stream may be silent before a keep-alive.
    pub keep_alive: Duration,
    /// `MAX_PROMPT_TOKENS`: the most a turn sends upstream.
    pub max_prompt_tokens: u32,
    /// `TOKEN_LIMIT_PER_DAY`: tokens a caller (or address, when open) may spend a day.
    pub token_limit_per_day: Option<u64>,
}

/// How a turn sends the images of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HistoryImages {
    AsImages,
    /// As `[image: <url>]` text, after upstream refused an image of the history.
    AsText,
}

/// A turn ready to ask upstream: its chat's context and the window it sends.
struct Ready {
    context: TurnContext,
    window: Window,
    turn_id: String,
    claimed: bool,
}

enum Prepared {
    Ready(Ready),
    Replayed(String),
}

impl TurnEngine {
    pub fn new(store: Arc<dyn Store>, upstream: Arc<Upstream>, settings: TurnSettings) -> Self {
        TurnEngine {
            store,
            upstream,
            settings,
        }
    }

    /// Runs one turn and returns the whole answer. `rate_limit` is awaited in the same
    /// round trip as the chat's read; nothing is sent upstream unless the read and every
    /// limit allow it, and nothing is stored unless upstream answered.
    pub async fn run(
        &self,
        ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Ran, ApiError> {
        let ready = match self.prepare(&ask, rate_limit, log).await? {
            Prepared::Ready(ready) => ready,
            Prepared::Replayed(answer) => return Ok(Ran::Replayed(answer)),
        };
        let claimed = ready.claimed;
        let result = self.run_ready(&ask, ready, log).await;
        if result.is_err() && claimed {
            self.release(&ask).await;
        }
        result.map(Ran::Answered)
    }

    async fn run_ready(
        &self,
        ask: &Ask<'_>,
        mut ready: Ready,
        log: &mut RequestLog,
    ) -> Result<Answered, ApiError> {
        let completion = self
            .ask_upstream(&mut ready, ask, log, |messages| async move {
                let request = ChatRequest {
                    params: ask.params,
                    ..ChatRequest::whole(ask.model, &messages)
                };
                self.upstream.chat(&request, ask.deadline).await
            })
            .await?;
        log.tokens = Some(completion.usage);
        // A stateless call's answer is upstream's, whatever its message holds (tool calls
        // and no text, say); a chat's turn keeps a reply, so it needs one.
        let reply = match (completion.content, ask.chat) {
            (Some(content), _) => content,
            (None, None) => String::new(),
            (None, Some(_)) => {
                return Err(UpstreamError::Unreadable(
                    "the answer has neither content nor a refusal".to_owned(),
                )
                .into())
            }
        };
        let mut answered = Answered {
            reply,
            usage: completion.usage,
            stored: true,
            raw: Some(completion.raw),
        };
        let record = Record::of(self, ask, &ready);
        let kept = ask.keep.as_ref().map(|keep| (keep.render)(&answered));
        answered.stored = log
            .redis(record.store(&answered, ask.asked.clone(), kept))
            .await;
        Ok(answered)
    }

    /// Starts a streamed turn: reads the chat and opens upstream's stream. Whatever fails
    /// here (the request, a limit, Redis, upstream's refusal) fails before the first byte
    /// of the answer, so it keeps its status. The returned turn owns all it needs to run to
    /// its end on its own.
    pub async fn open(
        &self,
        ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Opened, ApiError> {
        let mut ready = match self.prepare(&ask, rate_limit, log).await? {
            Prepared::Ready(ready) => ready,
            Prepared::Replayed(answer) => return Ok(Opened::Replayed(answer)),
        };
        let stream = self
            .ask_upstream(&mut ready, &ask, log, |messages| async move {
                let request = ChatRequest {
                    params: ask.params,
                    ..ChatRequest::streamed(ask.model, &messages)
                };
                self.upstream.chat_stream(&request, ask.deadline).await
            })
            .await;
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                if ready.claimed {
                    self.release(&ask).await;
                }
                return Err(error);
            }
        };
        Ok(Opened::Streaming(Box::new(OpenTurn {
            record: Record::of(self, &ask, &ready),
            asked: ask.asked,
            stream,
            deadline: ask.deadline,
            keep_alive: self.settings.keep_alive,
            started: Instant::now(),
        })))
    }

    /// The turn's read, in one round trip: the chat's context, and beside it the rate
    /// limit, the tokens spent today and the claim on the request's `Idempotency-Key`.
    async fn prepare(
        &self,
        ask: &Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Prepared, ApiError> {
        let store = &self.store;
        let day = UtcDay::today();
        let context = async {
            match ask.chat {
                Some(chat) => store.turn_context(ask.tenant, chat).await,
                None => Ok(TurnContext::default()),
            }
        };
        let spent = async {
            match self.settings.token_limit_per_day {
                Some(_) => store
                    .tokens_spent(ask.tenant, self.limited_ip(ask), &day)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let claim = async {
            match &ask.keep {
                Some(keep) => store
                    .claim(ask.tenant, &keep.key, keep.claimant(ask.deadline))
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (allowed, context, spent, claim) = log
            .redis(async { tokio::join!(rate_limit, context, spent, claim) })
            .await;
        let claimed = match claim? {
            None => false,
            Some(Claim::Claimed) => true,
            Some(Claim::InProgress { fingerprint }) => {
                return Err(self
                    .reused(ask, &fingerprint)
                    .unwrap_or(ApiError::RequestInProgress))
            }
            Some(Claim::Answered {
                fingerprint,
                answer,
            }) => {
                return match self.reused(ask, &fingerprint) {
                    Some(error) => Err(error),
                    None => Ok(Prepared::Replayed(answer)),
                }
            }
        };
        let checked = (|| {
            allowed?;
            if let (Some(limit), Some(spent)) = (self.settings.token_limit_per_day, spent?) {
                if spent >= limit {
                    return Err(ApiError::TokenLimitExceeded {
                        limit,
                        retry_after: day.seconds_left,
                    });
                }
            }
            let context = context?;
            let turn_id = Turn::new_id();
            let window = match ask.chat {
                Some(_) => budget::plan(
                    &context,
                    &self.budget_request(&context, &ask.asked),
                    self.settings.max_prompt_tokens,
                    &turn_id,
                )?,
                None => Window {
                    start: 0,
                    moved_to: None,
                    tokens: 0,
                },
            };
            Ok(Ready {
                context,
                window,
                turn_id,
                claimed,
            })
        })();
        match checked {
            Ok(ready) => Ok(Prepared::Ready(ready)),
            Err(error) => {
                if claimed {
                    self.release(ask).await;
                }
                Err(error)
            }
        }
    }

    /// The address an open API counts tokens by; a caller with a key is counted as itself.
    fn limited_ip<'a>(&self, ask: &Ask<'a>) -> Option<&'a str> {
        match ask.tenant {
            Tenant::Open => Some(ask.ip.unwrap_or("unknown")),
            Tenant::Caller(_) => None,
        }
    }

    /// A claim held for another request: the same key with a different body.
    fn reused(&self, ask: &Ask<'_>, fingerprint: &str) -> Option<ApiError> {
        let keep = ask.keep.as_ref()?;
        (keep.fingerprint != fingerprint).then_some(ApiError::IdempotencyKeyReused)
    }

    /// Frees the request's `Idempotency-Key` after a failure.
    async fn release(&self, ask: &Ask<'_>) {
        release(&*self.store, ask.tenant, ask.keep.as_ref(), ask.deadline).await;
    }

    fn budget_request<'a>(
        &'a self,
        context: &'a TurnContext,
        asked: &'a [UserContent],
    ) -> budget::Request<'a> {
        budget::Request {
            global_prompt: self.global_prompt(context),
            chat_prompt: context.chat_prompt.as_deref(),
            asked,
        }
    }

    fn global_prompt<'a>(&'a self, context: &'a TurnContext) -> &'a str {
        context
            .global_prompt
            .as_deref()
            .unwrap_or(&self.settings.default_system_prompt)
    }

    /// Calls upstream with the turn's messages. When upstream refuses an image of the
    /// history, calls once more with the history's images as text; when it refuses the
    /// request as too long for its context, once more with half the history.
    async fn ask_upstream<'c, T, F, Fut>(
        &'c self,
        ready: &'c mut Ready,
        ask: &'c Ask<'_>,
        log: &mut RequestLog,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Vec<Message<'c>>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut images = HistoryImages::AsImages;
        let mut halved = false;
        loop {
            let messages = self.messages(&ready.context, &ready.window, ask, images);
            let error = match log.upstream(call(messages)).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if images == HistoryImages::AsImages
                && blames_history_images(&error, &ready.context, &ready.window, &ask.asked)
            {
                tracing::warn!(
                    error = %error,
                    "upstream refused an image of the chat's history; sending its images as text"
                );
                images = HistoryImages::AsText;
            } else if !halved
                && is_context_length(&error)
                && ready.window.start < ready.context.history.len()
            {
                tracing::warn!(
                    error = %error,
                    "upstream found the request too long for its context; sending half the history"
                );
                ready.window = budget::halve(&ready.context, &ready.window, &ready.turn_id);
                halved = true;
            } else {
                return Err(error.into());
            }
        }
    }

    /// The global prompt, the chat's prompt, the window's history, then the new messages;
    /// none for a stateless call, whose messages are the caller's own.
    fn messages<'a>(
        &'a self,
        context: &'a TurnContext,
        window: &Window,
        ask: &'a Ask<'_>,
        images: HistoryImages,
    ) -> Vec<Message<'a>> {
        if ask.chat.is_none() {
            return Vec::new();
        }
        let history = &context.history[window.start.min(context.history.len())..];
        let past = history.iter().map(|t| t.asked.len() + 1).sum::<usize>();
        let mut messages = Vec::with_capacity(2 + past + ask.asked.len());
        messages.push(Message::System {
            content: self.global_prompt(context),
        });
        if let Some(prompt) = context.chat_prompt.as_deref() {
            messages.push(Message::System { content: prompt });
        }
        for turn in history {
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
        messages.extend(ask.asked.iter().map(Message::user));
        messages
    }
}

/// What a turn writes when upstream has answered, owned so that a streamed turn can write
/// it on its own.
struct Record {
    store: Arc<dyn Store>,
    tenant: Tenant,
    chat: Option<(ChatId, TurnContext, Window)>,
    global_prompt: String,
    turn_id: String,
    model: String,
    ip: Option<String>,
    keep: Option<Keep>,
    deadline: Instant,
}

impl Record {
    fn of(engine: &TurnEngine, ask: &Ask<'_>, ready: &Ready) -> Record {
        Record {
            store: engine.store.clone(),
            tenant: ask.tenant.clone(),
            chat: ask
                .chat
                .map(|chat| (chat.clone(), ready.context.clone(), ready.window.clone())),
            global_prompt: engine.global_prompt(&ready.context).to_owned(),
            turn_id: ready.turn_id.clone(),
            model: ask.model.to_owned(),
            ip: engine.limited_ip(ask).map(str::to_owned),
            keep: ask.keep.clone(),
            deadline: ask.deadline,
        }
    }

    /// Stores the turn (for a chat) and counts its tokens, in one round trip; says whether
    /// the turn was stored. A failure is logged, never raised: the answer is paid for and
    /// goes to the caller either way.
    async fn store(
        &self,
        answered: &Answered,
        asked: Vec<UserContent>,
        kept_answer: Option<String>,
    ) -> bool {
        let kept = kept_answer.as_deref().and_then(|answer| {
            self.keep.as_ref().map(|keep| KeptAnswer {
                key: &keep.key,
                fingerprint: &keep.fingerprint,
                answer,
            })
        });
        let day = UtcDay::today();
        let chat_write = async {
            let Some((chat, context, window)) = &self.chat else {
                return Ok(());
            };
            let request = budget::Request {
                global_prompt: &self.global_prompt,
                chat_prompt: context.chat_prompt.as_deref(),
                asked: &asked,
            };
            let tokens = budget::turn_tokens(context, &request, window, &answered.usage);
            let turn = Turn {
                id: Some(self.turn_id.clone()),
                asked: asked.clone(),
                assistant: answered.reply.clone(),
                tokens: Some(tokens),
            };
            let extras = TurnExtras {
                window_start: window.moved_to.as_deref(),
                answer: kept,
            };
            self.store
                .append_turn(&self.tenant, chat, &turn, extras)
                .await
        };
        let usage_write = async {
            let spent = Spent {
                id: &self.turn_id,
                model: &self.model,
                prompt_tokens: answered.usage.prompt_tokens,
                completion_tokens: answered.usage.completion_tokens,
                cached_tokens: answered.usage.cached_tokens,
                day: &day,
                ip: self.ip.as_deref(),
                // A stateless call keeps its answer with its caller's counters.
                answer: match self.chat {
                    Some(_) => None,
                    None => kept,
                },
            };
            self.store.add_usage(&self.tenant, spent).await
        };
        let (stored, counted) = tokio::join!(chat_write, usage_write);
        // The kept answer goes with the chat's write, or with the counters of a stateless
        // call: when that write failed, the key is freed, so that a retry is asked again
        // rather than told for the claim's whole life that this request is in progress.
        let kept_with = match self.chat {
            Some(_) => stored.is_ok(),
            None => counted.is_ok(),
        };
        if let Err(error) = counted {
            tracing::error!(%error, "the turn's tokens could not be counted");
        }
        if !kept_with {
            self.release().await;
        }
        match stored {
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

    async fn release(&self) {
        release(
            &*self.store,
            &self.tenant,
            self.keep.as_ref(),
            self.deadline,
        )
        .await;
    }
}

/// A streamed turn whose upstream has accepted it: it reads the chunks, hands them to a
/// sink, and stores the turn once the reply is whole.
pub struct OpenTurn {
    record: Record,
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
        let result = self.read(sink).await;
        let answered = match result {
            Ok(answered) => answered,
            Err(error) => {
                tracing::warn!(
                    stream_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                    "streamed turn failed mid-stream; nothing stored"
                );
                self.record.release().await;
                return Err(error);
            }
        };
        let mut answered = answered;
        let kept = self
            .record
            .keep
            .as_ref()
            .map(|_| sink.kept_answer(&answered));
        answered.stored = self.record.store(&answered, self.asked, kept).await;
        let usage = answered.usage;
        tracing::info!(
            stream_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cached_tokens = usage.cached_tokens,
            total_tokens = usage.total_tokens,
            stored = answered.stored,
            "streamed turn finished"
        );
        Ok(answered)
    }

    async fn read(&mut self, sink: &mut impl StreamSink) -> Result<Answered, ApiError> {
        let mut reply = String::new();
        let mut usage = None;
        let mut finished = false;
        let mut whole = false;
        loop {
            // Once every reply is whole, upstream has only the usage and the end of the
            // stream left to send, and sends them at once: silence past a short grace means
            // an upstream that will not close, which must not hold the turn to its deadline.
            let wait = if whole { FINISH_GRACE } else { self.keep_alive };
            let wake = (Instant::now() + wait).min(self.deadline);
            let next = match tokio::time::timeout_at(wake, self.stream.next()).await {
                Ok(next) => next,
                Err(_silent) if whole => {
                    tracing::warn!(
                        "upstream ended its reply but not its stream; taking it as ended"
                    );
                    break;
                }
                Err(_silent) if Instant::now() >= self.deadline => {
                    return Err(ApiError::UpstreamTimeout);
                }
                Err(_silent) => {
                    sink.keep_alive().await;
                    continue;
                }
            };
            match next {
                None => break,
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(chunk)) => {
                    reply.push_str(&chunk.delta);
                    finished |= chunk.finished;
                    whole = chunk.whole;
                    usage = chunk.usage.or(usage);
                    sink.chunk(&chunk).await;
                }
            }
        }
        if !finished {
            let cut = UpstreamError::Transport("the stream ended before the reply did".to_owned());
            return Err(cut.into());
        }
        let usage = usage.unwrap_or_else(|| {
            // An upstream that does not send usage on a stream: counted on the high side,
            // so that TOKEN_LIMIT_PER_DAY still holds.
            tracing::warn!("upstream sent no usage for a streamed reply; counting an estimate");
            let prompt = self.record.chat.as_ref().map_or(0, |(_, _, w)| w.tokens);
            let completion = crate::tokens::estimate(&reply);
            Usage {
                prompt_tokens: u64::from(prompt),
                completion_tokens: u64::from(completion),
                total_tokens: u64::from(prompt) + u64::from(completion),
                ..Usage::default()
            }
        });
        Ok(Answered {
            reply,
            usage,
            stored: false,
            raw: None,
        })
    }
}

/// How long a stream whose replies are whole may stay silent before it is taken as ended.
const FINISH_GRACE: Duration = Duration::from_secs(3);

/// Frees a failed request's `Idempotency-Key`, if it sent one; a failure to free it only
/// makes a retry wait for the claim to expire (at the request's deadline and a margin).
async fn release(store: &dyn Store, tenant: &Tenant, keep: Option<&Keep>, deadline: Instant) {
    if let Some(keep) = keep {
        if let Err(error) = store
            .release(tenant, &keep.key, keep.claimant(deadline))
            .await
        {
            tracing::warn!(%error, "could not free an Idempotency-Key after a failure");
        }
    }
}

/// Whether upstream refused the request as longer than the model's context.
fn is_context_length(error: &UpstreamError) -> bool {
    matches!(error, UpstreamError::Refused { status: 400, code: Some(code), .. } if code == "context_length_exceeded")
}

/// Whether upstream's refusal is about an image of the history rather than the new
/// messages: a chat whose old image link expired, or whose CHAT_MODEL cannot see images,
/// must not be refused forever.
fn blames_history_images(
    error: &UpstreamError,
    context: &TurnContext,
    window: &Window,
    asked: &[UserContent],
) -> bool {
    let UpstreamError::Refused {
        status: 400,
        message,
        code,
        param,
    } = error
    else {
        return false;
    };
    let sent = &context.history[window.start.min(context.history.len())..];
    let history_urls: Vec<&str> = sent
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
            + sent.iter().map(|t| t.asked.len() + 1).sum::<usize>();
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
            window_start: None,
        }
    }

    fn whole() -> Window {
        Window {
            start: 0,
            moved_to: None,
            tokens: 0,
        }
    }

    fn rejected(message: &str, code: Option<&str>, param: Option<&str>) -> UpstreamError {
        UpstreamError::Refused {
            status: 400,
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
            assert!(
                blames_history_images(&error, &context, &whole(), &new),
                "{error}"
            );
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
            assert!(
                !blames_history_images(&error, &context, &whole(), &own),
                "{error}"
            );
        }
        let no_images = TurnContext::default();
        let error = rejected("Invalid image.", Some("invalid_image_url"), None);
        assert!(!blames_history_images(&error, &no_images, &whole(), &own));
        // An image outside the window sent is not to blame either.
        let past_window = Window {
            start: 1,
            moved_to: None,
            tokens: 0,
        };
        assert!(!blames_history_images(&error, &context, &past_window, &own));
        assert!(!blames_history_images(
            &UpstreamError::Timeout,
            &context,
            &whole(),
            &own
        ));
    }

    #[test]
    fn only_a_context_length_refusal_halves_the_history() {
        assert!(is_context_length(&rejected(
            "This model's maximum context length is 128000 tokens.",
            Some("context_length_exceeded"),
            Some("messages")
        )));
        assert!(!is_context_length(&rejected(
            "bad",
            Some("invalid_value"),
            None
        )));
        assert!(!is_context_length(&UpstreamError::Timeout));
    }
}
