//! The streamed turn: opened (the read and upstream accepting the request, so whatever
//! fails before the first byte keeps its status), then read to its end by a task of its
//! own, chunk by chunk into the front door's sink, and stored, whether or not the client
//! stayed.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::prepare::Prepared;
use super::record::Record;
use super::sent::Sent;
use super::{Answered, Ask, Opened, StreamSink, TurnEngine};
use crate::chat::Asked;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::upstream::wire::{ChatRequest, Usage};
use crate::upstream::{ChunkStream, UpstreamError};

impl TurnEngine {
    /// Starts a streamed turn: reads the chat and opens upstream's stream. Whatever fails
    /// here (the request, a limit, Redis, upstream's refusal) fails before the first byte
    /// of the answer, so it keeps its status. The returned turn owns all it needs to run to
    /// its end on its own.
    pub async fn open(
        &self,
        mut ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Opened, ApiError> {
        let mut ready = match self.prepare(&mut ask, rate_limit, log).await? {
            Prepared::Ready(ready) => *ready,
            Prepared::Replayed(answer) => return Ok(Opened::Replayed(answer)),
        };
        ready.compaction = self.compact(&mut ready, &ask, log).await;
        let asking = &ask;
        // Where the turn is kept (a new chain, or the chat read) names its cache key.
        let kept_in = ready.chain.as_ref().or(ask.chat);
        let cache_key = self.cache_key(ask.tenant, kept_in, ask.params);
        let cache_key = cache_key.as_deref();
        let stream = self
            .ask_upstream(&mut ready, asking, log, |sent| async move {
                match sent {
                    Sent::Items(responses, items) => {
                        let request =
                            self.responses_request(asking, responses, items, true, cache_key);
                        self.upstream
                            .respond_stream(&request, asking.deadline)
                            .await
                    }
                    Sent::Messages(messages) => {
                        let request = ChatRequest {
                            params: asking.params,
                            prompt_cache_key: cache_key,
                            ..ChatRequest::streamed(asking.model, &messages)
                        };
                        self.upstream.chat_stream(&request, asking.deadline).await
                    }
                }
            })
            .await;
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                let compaction = self.count_compaction(&ask, &ready);
                let release = async {
                    if ready.claimed {
                        self.release(&ask).await;
                    }
                };
                tokio::join!(compaction, release);
                return Err(error);
            }
        };
        Ok(Opened::Streaming(Box::new(OpenTurn {
            record: Record::new(self, &ask, ready),
            asked: ask.asked,
            stream,
            deadline: ask.deadline,
            keep_alive: self.settings.keep_alive,
            started: Instant::now(),
        })))
    }
}

/// A streamed turn whose upstream has accepted it: it reads the chunks, hands them to a
/// sink, and stores the turn once the reply is whole.
pub struct OpenTurn {
    record: Record,
    asked: Vec<Asked>,
    stream: ChunkStream,
    deadline: Instant,
    keep_alive: Duration,
    started: Instant,
}

impl OpenTurn {
    /// The proxy's id of a Responses turn's answer, known before upstream's first event.
    pub fn answer_id(&self) -> Option<&str> {
        self.record.answer_id()
    }

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
                tokio::join!(self.record.release(), self.record.count_compaction());
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
            let wait = match (whole, sink.wake_every()) {
                (true, _) => FINISH_GRACE,
                (false, Some(every)) => every.min(self.keep_alive),
                (false, None) => self.keep_alive,
            };
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
                    if sink.stop_asked() {
                        match sink.keeps_when_stopped() && !reply.is_empty() {
                            true => return Ok(self.stopped_here(reply)),
                            false => return Err(stopped(&self.record, self.estimate(&reply)).await),
                        }
                    }
                    continue;
                }
            };
            match next {
                None => break,
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(mut chunk)) => {
                    if chunk.usage.is_some() {
                        chunk.raw = self.record.own_usage(chunk.raw);
                    }
                    reply.push_str(&chunk.delta);
                    finished |= chunk.finished;
                    whole = chunk.whole;
                    usage = chunk.usage.or(usage);
                    sink.chunk(&chunk).await;
                    if sink.stop_asked() {
                        match sink.keeps_when_stopped() && !reply.is_empty() {
                            true => return Ok(self.stopped_here(reply)),
                            false => return Err(stopped(&self.record, self.estimate(&reply)).await),
                        }
                    }
                    if let Some(message) = chunk.failure {
                        // The sink has passed upstream's own word on; the turn ends here.
                        let failed = UpstreamError::Status {
                            status: 200,
                            message,
                        };
                        return Err(failed.into());
                    }
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
            self.estimate(&reply)
        });
        // A Responses stream ends with the whole response: the answer to keep.
        let raw = self
            .stream
            .completed_response()
            .map(|raw| self.record.own_answer(raw));
        let calls = match &raw {
            Some(raw) => crate::upstream::responses::calls_in(raw),
            None => self.stream.tool_calls(),
        };
        Ok(Answered {
            reply,
            calls,
            usage,
            stored: false,
            raw,
            compaction: self.record.compaction.clone(),
            stopped: false,
        })
    }

    /// The turn as it stood when its sink asked it to stop, kept as its answer: the reply
    /// so far (a tool call not yet whole is dropped), its usage estimated.
    fn stopped_here(&self, reply: String) -> Answered {
        tracing::info!("a streamed turn was stopped; keeping its reply so far");
        Answered {
            usage: self.estimate(&reply),
            reply,
            calls: Vec::new(),
            stored: false,
            raw: None,
            compaction: self.record.compaction.clone(),
            stopped: true,
        }
    }
}

impl OpenTurn {
    /// What the turn spent, estimated from what it sent and `reply` (upstream told no
    /// usage): its window's tokens and the reply's.
    fn estimate(&self, reply: &str) -> Usage {
        let prompt = self.record.chat.as_ref().map_or(0, |(_, _, w)| w.tokens);
        let completion = crate::tokens::estimate(reply);
        Usage {
            prompt_tokens: u64::from(prompt),
            completion_tokens: u64::from(completion),
            total_tokens: u64::from(prompt) + u64::from(completion),
            ..Usage::default()
        }
    }
}

/// A turn stopped by its sink: what it spent so far is counted, and it ends with
/// [`super::stopped`].
async fn stopped(record: &Record, spent: Usage) -> ApiError {
    record.count_spent(&spent).await;
    super::stopped()
}

/// How long a stream whose replies are whole may stay silent before it is taken as ended.
const FINISH_GRACE: Duration = Duration::from_secs(3);
