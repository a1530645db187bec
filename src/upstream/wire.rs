//! What goes over the wire to OpenAI, and the part of its answers the proxy reads.
//!
//! Requests borrow from the stored history instead of copying it into owned structs: a
//! 100-message chat is serialised straight from the strings Redis returned.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{Asked, Turn, UserContent};

/// A chat completion request: the model, the messages the proxy built, and, for
/// `/v1/chat/completions`, the caller's other parameters as sent.
#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    /// Empty for a stateless call: the caller's `messages` are among `params`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub messages: &'a [Message<'a>],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The key upstream's prompt cache routes the chat's turns by, when the caller's
    /// `params` hold none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<&'a str>,
    /// Never holds `model`, `messages`, `stream` or `stream_options` (they would be sent
    /// twice), nor `prompt_cache_key` when the field above is set.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl<'a> ChatRequest<'a> {
    /// A request for one whole answer.
    pub fn whole(model: &'a str, messages: &'a [Message<'a>]) -> Self {
        ChatRequest {
            model,
            messages,
            stream: false,
            stream_options: None,
            prompt_cache_key: None,
            params: None,
        }
    }

    /// A streamed request that asks for the usage chunk at the end.
    pub fn streamed(model: &'a str, messages: &'a [Message<'a>]) -> Self {
        ChatRequest {
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            ..ChatRequest::whole(model, messages)
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// One chat message in OpenAI's `messages` array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message<'a> {
    System {
        content: Cow<'a, str>,
    },
    /// A developer message a conversation's items hold.
    Developer {
        content: Cow<'a, str>,
    },
    User {
        content: UserContentOut<'a>,
    },
    Assistant {
        /// Absent only from a reply that is tool calls alone, as OpenAI allows.
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        tool_calls: Cow<'a, [Value]>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a Value,
    },
}

/// A user message's content as sent: as stored (text, or text and image parts), or as text
/// alone with each image written as `[image: <url>]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UserContentOut<'a> {
    AsAsked(&'a UserContent),
    Text(Cow<'a, str>),
}

impl<'a> Message<'a> {
    /// A stored turn's reply: its text and its tool calls.
    pub fn reply(turn: &'a Turn) -> Self {
        let content = match (turn.assistant.as_str(), turn.calls.is_empty()) {
            ("", false) => None,
            (text, _) => Some(text),
        };
        Message::Assistant {
            content: content.map(Cow::Borrowed),
            tool_calls: Cow::Borrowed(&turn.calls),
        }
    }

    /// A system message.
    pub fn system(content: &'a str) -> Self {
        Message::System {
            content: Cow::Borrowed(content),
        }
    }

    /// A reply of text alone.
    pub fn assistant(content: &'a str) -> Self {
        Message::Assistant {
            content: Some(Cow::Borrowed(content)),
            tool_calls: Cow::Borrowed(&[]),
        }
    }

    /// One of the caller's messages: a user message (its images as text when
    /// `images_as_text`), or a tool's result.
    pub fn asked(asked: &'a Asked, images_as_text: bool) -> Self {
        match asked {
            Asked::User(content) if images_as_text => Message::user_images_as_text(content),
            Asked::User(content) => Message::user(content),
            Asked::ToolResult(result) => Message::Tool {
                tool_call_id: &result.tool_call_id,
                content: &result.content,
            },
        }
    }

    /// A user message, images included.
    pub fn user(content: &'a UserContent) -> Self {
        Message::User {
            content: UserContentOut::AsAsked(content),
        }
    }

    /// A user message with its images as text, for a model that will not (or can no longer)
    /// see them.
    pub fn user_images_as_text(content: &'a UserContent) -> Self {
        let text = if content.has_images() {
            let mut text = content.text().into_owned();
            for url in content.image_urls() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str("[image: ");
                text.push_str(url);
                text.push(']');
            }
            Cow::Owned(text)
        } else {
            content.text()
        };
        Message::User {
            content: UserContentOut::Text(text),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModerationRequest<'a> {
    pub model: &'a str,
    pub input: &'a str,
}

/// The fields of a `chat.completion` the proxy needs; the rest is ignored, so any
/// OpenAI-compatible server that sends these works.
#[derive(Debug, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    pub message: ResponseMessage,
}

#[derive(Debug, Deserialize)]
pub struct ResponseMessage {
    pub content: Option<String>,
    /// Set instead of `content` when the model declines to answer.
    pub refusal: Option<String>,
    /// The tool calls the reply makes, kept as upstream sent them.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// The fields of a `chat.completion.chunk` the proxy reads; the chunk itself is kept as sent.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkFields {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    pub usage: Option<Usage>,
    /// Set instead of a chunk when upstream fails mid-stream.
    pub error: Option<StreamError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice {
    /// Which of `n` replies the chunk belongs to.
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: ChunkDelta,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkDelta {
    pub content: Option<String>,
    pub refusal: Option<String>,
    /// Pieces of the reply's tool calls, each by its `index`.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamError {
    #[serde(default)]
    pub message: String,
}

/// Token usage, in the order the proxy's clients have always received it, and
/// `cached_tokens` after the older proxy's three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "UpstreamUsage")]
pub struct Usage {
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens upstream served from its prompt cache (billed at a discount).
    pub cached_tokens: u64,
    /// Completion tokens a reasoning model spent thinking: billed, never part of the reply.
    #[serde(skip)]
    pub reasoning_tokens: u64,
}

/// `usage` as OpenAI sends it, details nested.
#[derive(Deserialize)]
struct UpstreamUsage {
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    /// Absent from OpenAI's answers; present when a `Usage` of ours is read back.
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionTokensDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<UpstreamUsage> for Usage {
    fn from(usage: UpstreamUsage) -> Self {
        let cached = usage
            .prompt_tokens_details
            .and_then(|details| details.cached_tokens)
            .or(usage.cached_tokens);
        Usage {
            completion_tokens: usage.completion_tokens,
            prompt_tokens: usage.prompt_tokens,
            total_tokens: usage.total_tokens,
            cached_tokens: cached.unwrap_or(0),
            reasoning_tokens: usage
                .completion_tokens_details
                .and_then(|details| details.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_serialise_in_openai_shape() {
        let hi = UserContent::Text("hi".into());
        let cat = UserContent::question("what is this?".into(), Some("https://x/cat.png".into()));
        let messages = [
            Message::system("be brief"),
            Message::user(&hi),
            Message::assistant("hello"),
            Message::user(&cat),
            Message::user_images_as_text(&cat),
            Message::user_images_as_text(&hi),
        ];
        let request = ChatRequest::whole("gpt-4o-mini", &messages);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
                    ]},
                    {"role": "user", "content": "what is this?\n[image: https://x/cat.png]"},
                    {"role": "user", "content": "hi"}
                ]
            })
        );
    }

    #[test]
    fn a_streamed_request_asks_for_usage_and_passes_parameters_on() {
        let hi = UserContent::Text("hi".into());
        let messages = [Message::user(&hi)];
        let params: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(json!({"temperature": 0.2, "seed": 7})).unwrap();
        let request = ChatRequest {
            params: Some(&params),
            ..ChatRequest::streamed("m", &messages)
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.2,
                "seed": 7
            })
        );
    }

    #[test]
    fn usage_keeps_the_older_proxys_field_order_then_cached_tokens() {
        let usage: Usage = serde_json::from_value(json!({
            "prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 1, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&usage).unwrap(),
            r#"{"completion_tokens":1,"prompt_tokens":2,"total_tokens":3,"cached_tokens":1}"#
        );
        let bare: Usage = serde_json::from_value(json!({"prompt_tokens": 9})).unwrap();
        assert_eq!((bare.prompt_tokens, bare.cached_tokens), (9, 0));
    }
}
