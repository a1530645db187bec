//! The buffered turn: prepared, asked upstream once for the whole answer (with one more try
//! for what the history holds), stored, answered.

use std::future::Future;

use super::prepare::Prepared;
use super::record::Record;
use super::sent::Sent;
use super::{Answered, Ask, Ran, ResponsesCall, TurnEngine};
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::upstream::wire::ChatRequest;
use crate::upstream::UpstreamError;

impl TurnEngine {
    /// Runs one turn and returns the whole answer. `rate_limit` is awaited in the same
    /// round trip as the chat's read; nothing is sent upstream unless the read and every
    /// limit allow it, and nothing is stored unless upstream answered.
    pub async fn run(
        &self,
        mut ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Ran, ApiError> {
        let mut ready = match self.prepare(&mut ask, rate_limit, log).await? {
            Prepared::Ready(ready) => *ready,
            Prepared::Replayed(answer) => return Ok(Ran::Replayed(answer)),
        };
        ready.compaction = self.compact(&mut ready, &ask, log).await;
        let asking = &ask;
        // Where the turn is kept (a new chain, or the chat read) names its cache key.
        let kept_in = ready.chain.as_ref().or(ask.chat);
        let cache_key = self.cache_key(ask.tenant, kept_in, ask.params);
        let cache_key = cache_key.as_deref();
        let completion = self
            .ask_upstream(&mut ready, asking, log, |sent| async move {
                match sent {
                    Sent::Items(responses, items) => {
                        let request =
                            self.responses_request(asking, responses, items, false, cache_key);
                        match responses.call {
                            ResponsesCall::Create => {
                                self.upstream.respond(&request, asking.deadline).await
                            }
                            ResponsesCall::Compact => {
                                self.upstream.compact(&request, asking.deadline).await
                            }
                            ResponsesCall::CountTokens => {
                                self.upstream.count_tokens(&request, asking.deadline).await
                            }
                        }
                    }
                    Sent::Messages(messages) => {
                        let request = ChatRequest {
                            params: asking.params,
                            prompt_cache_key: cache_key,
                            ..ChatRequest::whole(asking.model, &messages)
                        };
                        self.upstream.chat(&request, asking.deadline).await
                    }
                }
            })
            .await;
        // A stateless call's answer is upstream's, whatever its message holds (tool calls
        // and no text, say); a chat's turn keeps a reply, so it needs one.
        let completion = completion.and_then(|completion| {
            let empty = completion.content.is_none() && completion.calls.is_empty();
            // A Responses turn keeps whatever items upstream answered with.
            match (empty, ask.chat) {
                (true, Some(_)) if ask.responses.is_none() => Err(UpstreamError::Unreadable(
                    "the answer has no content, refusal or tool call".to_owned(),
                )
                .into()),
                _ => Ok(completion),
            }
        });
        let completion = match completion {
            Ok(completion) => completion,
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
        // A count keeps nothing and costs nothing: there is nothing to write.
        if ask.responses.as_ref().map(|r| r.call) == Some(ResponsesCall::CountTokens) {
            return Ok(Ran::Answered(Answered {
                reply: String::new(),
                calls: Vec::new(),
                usage: completion.usage,
                stored: false,
                raw: Some(completion.raw),
                compaction: None,
                stopped: false,
            }));
        }
        log.tokens = Some(completion.usage);
        let record = Record::new(self, &ask, ready);
        let mut answered = Answered {
            reply: completion.content.unwrap_or_default(),
            calls: completion.calls,
            usage: completion.usage,
            stored: true,
            raw: Some(record.own_answer(completion.raw)),
            compaction: record.compaction.clone(),
            stopped: false,
        };
        let kept = ask.keep.as_ref().map(|keep| (keep.render)(&answered));
        answered.stored = log.redis(record.store(&answered, ask.asked, kept)).await;
        Ok(Ran::Answered(answered))
    }
}
