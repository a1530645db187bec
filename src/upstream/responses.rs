//! OpenAI's Responses API: a turn's request (`POST /responses` with `store: false` and the
//! whole input the proxy assembled, so OpenAI keeps nothing between turns), its answer, and
//! its stream of semantic events; and a stored turn as the input items it sends.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::time::Instant;

use super::error::redact;
use super::wire::Usage;
use super::{Chunk, ChunkStream, Completion, Upstream, UpstreamError};
use crate::chat::{calls_of, output_text};

/// `usage` as the Responses API counts it.
#[derive(Debug, Default, Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// A response's usage, in the proxy's own terms.
pub fn usage_of(response: &Value) -> Usage {
    let usage = ResponsesUsage::deserialize(&response["usage"]).unwrap_or_default();
    Usage {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        total_tokens: usage.total_tokens,
        cached_tokens: usage
            .input_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        reasoning_tokens: usage
            .output_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    }
}

/// A failed response's message, when it says one.
fn failure(response: &Value, api_key: &SecretString) -> Option<UpstreamError> {
    (response["status"] == "failed").then(|| UpstreamError::Status {
        status: 200,
        message: redact(
            response["error"]["message"]
                .as_str()
                .unwrap_or("the response failed")
                .to_owned(),
            api_key,
        ),
    })
}

impl Upstream {
    /// Sends a Responses request and returns the whole response.
    pub async fn respond(
        &self,
        request: &Value,
        deadline: Instant,
    ) -> Result<Completion, UpstreamError> {
        let responses = self.client.responses();
        let call = responses.create_byot::<_, Box<RawValue>>(request);
        let raw = self.within(deadline, call).await?;
        let response: Value = serde_json::from_str(raw.get())
            .map_err(|e| UpstreamError::Unreadable(e.to_string()))?;
        if let Some(failed) = failure(&response, &self.api_key) {
            return Err(failed);
        }
        let output = response["output"].as_array().map_or(&[][..], Vec::as_slice);
        Ok(Completion {
            content: output_text(output),
            calls: calls_of(output),
            usage: usage_of(&response),
            raw,
        })
    }

    /// Sends a compaction request (`POST /responses/compact`) and returns its
    /// `response.compaction` whole: output items (the user messages kept, then a
    /// `compaction` item standing for the rest) and usage, but no reply of its own.
    pub async fn compact(
        &self,
        request: &Value,
        deadline: Instant,
    ) -> Result<Completion, UpstreamError> {
        let responses = self.client.responses();
        let call = responses.compact_byot::<_, Box<RawValue>>(request);
        let raw = self.within(deadline, call).await?;
        no_reply(raw, "output", Value::is_array, usage_of)
    }

    /// Asks how many tokens a Responses request's input makes (`POST
    /// /responses/input_tokens`) and returns upstream's `response.input_tokens` whole; it
    /// costs no tokens, so its usage is none.
    pub async fn count_tokens(
        &self,
        request: &Value,
        deadline: Instant,
    ) -> Result<Completion, UpstreamError> {
        let responses = self.client.responses();
        let call = responses.get_input_token_counts_byot::<_, Box<RawValue>>(request);
        let raw = self.within(deadline, call).await?;
        no_reply(raw, "input_tokens", Value::is_u64, |_| Usage::default())
    }

    /// Sends a streamed Responses request (which must say `stream: true`) and returns once
    /// upstream has accepted it, as [`Upstream::chat_stream`] does.
    pub async fn respond_stream(
        &self,
        request: &Value,
        deadline: Instant,
    ) -> Result<ChunkStream, UpstreamError> {
        let responses = self.client.responses();
        let call = responses.create_stream_byot::<_, Box<RawValue>>(request);
        let inner = self.within(self.deadline(Some(deadline)), call).await?;
        Ok(ChunkStream::new(inner, self.api_key.clone(), true))
    }
}

/// An answer that is no reply (a compaction, a count), passed on whole once `field` is as
/// `shaped` says, with the usage `usage` reads from it.
fn no_reply(
    raw: Box<RawValue>,
    field: &str,
    shaped: fn(&Value) -> bool,
    usage: impl FnOnce(&Value) -> Usage,
) -> Result<Completion, UpstreamError> {
    let answer: Value =
        serde_json::from_str(raw.get()).map_err(|e| UpstreamError::Unreadable(e.to_string()))?;
    if !shaped(&answer[field]) {
        return Err(UpstreamError::Unreadable(format!(
            "an answer without a readable `{field}`"
        )));
    }
    Ok(Completion {
        content: None,
        calls: Vec::new(),
        usage: usage(&answer),
        raw,
    })
}

/// The fields of a Responses event the proxy reads; the event itself is passed on as sent.
#[derive(Deserialize)]
struct EventFields {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    response: Option<Box<RawValue>>,
}

/// One event of a Responses stream, read: the reply's text deltas, and its end, which
/// carries the whole response (kept in `completed`), or says it failed. An `error` event
/// fails the stream.
pub(super) fn event(
    raw: Box<RawValue>,
    completed: &mut Option<Box<RawValue>>,
    api_key: &SecretString,
) -> Result<Chunk, UpstreamError> {
    let fields: EventFields = serde_json::from_str(raw.get())
        .map_err(|e| UpstreamError::Unreadable(format!("an event: {e}")))?;
    let mut chunk = Chunk {
        raw,
        delta: String::new(),
        finished: false,
        whole: false,
        usage: None,
        usage_only: false,
        failure: None,
    };
    match fields.kind.as_str() {
        "response.output_text.delta" | "response.refusal.delta" => {
            if let Some(Value::String(delta)) = fields.delta {
                chunk.delta = delta;
            }
        }
        "response.completed" | "response.incomplete" => {
            let response = fields.response.ok_or_else(|| {
                UpstreamError::Unreadable("a response's last event has no response".to_owned())
            })?;
            let value: Value = serde_json::from_str(response.get())
                .map_err(|e| UpstreamError::Unreadable(e.to_string()))?;
            chunk.usage = Some(usage_of(&value));
            chunk.finished = true;
            chunk.whole = true;
            *completed = Some(response);
        }
        // Passed on as upstream sent it (a caller reads OpenAI's own reason in it), and
        // the turn ends with it.
        "response.failed" => {
            let response: Value = fields
                .response
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or(Value::Null);
            let message = match failure(&response, api_key) {
                Some(UpstreamError::Status { message, .. }) => message,
                _ => "the response failed".to_owned(),
            };
            chunk.failure = Some(message);
        }
        "error" => {
            return Err(UpstreamError::Status {
                status: 200,
                message: redact(fields.message.unwrap_or_default(), api_key),
            })
        }
        _ => {}
    }
    Ok(chunk)
}

/// The function calls of a response, as raw JSON, in Chat Completions' shape.
pub fn calls_in(response: &RawValue) -> Vec<Value> {
    let response: Value = serde_json::from_str(response.get()).unwrap_or(Value::Null);
    response["output"]
        .as_array()
        .map_or_else(Vec::new, |output| calls_of(output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_read_in_the_proxys_terms() {
        let usage = usage_of(&json!({"usage": {"input_tokens": 10, "output_tokens": 4,
            "total_tokens": 14, "input_tokens_details": {"cached_tokens": 8},
            "output_tokens_details": {"reasoning_tokens": 3}}}));
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (10, 4, 14)
        );
        assert_eq!((usage.cached_tokens, usage.reasoning_tokens), (8, 3));
    }
}
