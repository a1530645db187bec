//! What goes over the wire to OpenAI, and the part of its answers the proxy reads.
//!
//! Requests borrow from the stored history instead of copying it into owned structs: a
//! 100-message chat is serialised straight from the strings Redis returned.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Message<'a>],
}

/// One chat message in OpenAI's `messages` array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message<'a> {
    System { content: &'a str },
    User { content: UserContent<'a> },
    Assistant { content: &'a str },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UserContent<'a> {
    Text(&'a str),
    /// A question about an image: its text, then the image, as the vision API takes them.
    WithImage([Part<'a>; 2]),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageUrl<'a> {
    pub url: &'a str,
}

impl<'a> Message<'a> {
    /// The user's message: plain text, or text and image parts when it has an image.
    pub fn user(text: &'a str, image_url: Option<&'a str>) -> Self {
        let content = match image_url {
            None => UserContent::Text(text),
            Some(url) => UserContent::WithImage([
                Part::Text { text },
                Part::ImageUrl {
                    image_url: ImageUrl { url },
                },
            ]),
        };
        Message::User { content }
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
}

/// Token usage, in the order the proxy's clients have always received it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_serialise_in_openai_shape() {
        let messages = [
            Message::System {
                content: "be brief",
            },
            Message::User {
                content: UserContent::Text("hi"),
            },
            Message::Assistant { content: "hello" },
            Message::user("what is this?", Some("https://x/cat.png")),
        ];
        let request = ChatRequest {
            model: "gpt-4o-mini",
            messages: &messages,
        };
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
                    ]}
                ]
            })
        );
    }

    #[test]
    fn usage_keeps_the_older_proxys_field_order() {
        let usage = Usage {
            completion_tokens: 1,
            prompt_tokens: 2,
            total_tokens: 3,
        };
        assert_eq!(
            serde_json::to_string(&usage).unwrap(),
            r#"{"completion_tokens":1,"prompt_tokens":2,"total_tokens":3}"#
        );
    }
}
