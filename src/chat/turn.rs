//! A turn as stored: what the caller asked (one or more user messages) and the reply. One
//! room because it is one stored form read by every version; half of it is its tests.
//!
//! The stored JSON keeps the shape the first version wrote, `{"user", "url"?, "assistant"}`,
//! and adds to it, so chats written by any version read the same way:
//! - `id`: the turn's id, which makes its write idempotent (absent in older turns);
//! - `messages`: the caller's messages, only when `user` and `url` cannot say it all
//!   (several messages, several images, an image `detail`, a tool's result): user contents
//!   in OpenAI's content shape, tool results as `{"tool_call_id", "content"}`;
//! - `calls`: the reply's tool calls, exactly as upstream sent them (`tool_calls`);
//! - `exchange`: a Responses turn's input and response, exactly (`exchange.rs`), from which
//!   its messages, reply and calls are read, with `m`, its count of messages, first after
//!   the id, where the Redis scripts can read it without decoding the turn;
//! - `tokens`: what the turn cost, as upstream counted it, and what it weighs as history.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Exchange;

/// One part of a user message, in OpenAI's content-part shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageRef },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A user message's `content`, as OpenAI takes it: a string, or text and image parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserContent {
    Text(String),
    Parts(Vec<Part>),
}

impl UserContent {
    /// A question with an optional image, as the seed routes take it.
    pub fn question(text: String, image_url: Option<String>) -> UserContent {
        match image_url {
            None => UserContent::Text(text),
            Some(url) => UserContent::Parts(vec![
                Part::Text { text },
                Part::ImageUrl {
                    image_url: ImageRef { url, detail: None },
                },
            ]),
        }
    }

    /// The message's text: its text parts joined by blank lines.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            UserContent::Text(text) => Cow::Borrowed(text),
            UserContent::Parts(parts) => {
                let mut texts = parts.iter().filter_map(|part| match part {
                    Part::Text { text } => Some(text.as_str()),
                    Part::ImageUrl { .. } => None,
                });
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(first), Some(second)) => {
                        let mut joined = format!("{first}\n\n{second}");
                        for text in texts {
                            joined.push_str("\n\n");
                            joined.push_str(text);
                        }
                        Cow::Owned(joined)
                    }
                }
            }
        }
    }

    /// The URLs of the message's images, in order.
    pub fn image_urls(&self) -> impl Iterator<Item = &str> {
        let parts = match self {
            UserContent::Text(_) => &[][..],
            UserContent::Parts(parts) => parts.as_slice(),
        };
        parts.iter().filter_map(|part| match part {
            Part::ImageUrl { image_url } => Some(image_url.url.as_str()),
            Part::Text { .. } => None,
        })
    }

    pub fn has_images(&self) -> bool {
        self.image_urls().next().is_some()
    }

    /// The message as `user` and `url` alone say it, when they can: text, or one text part
    /// and one image without a `detail`.
    fn as_question(&self) -> Option<(&str, Option<&str>)> {
        match self {
            UserContent::Text(text) => Some((text, None)),
            UserContent::Parts(parts) => match parts.as_slice() {
                [Part::Text { text }, Part::ImageUrl {
                    image_url: ImageRef { url, detail: None },
                }] => Some((text, Some(url))),
                _ => None,
            },
        }
    }
}

/// One of the caller's messages in a turn: a user message, or the result of a tool call
/// the chat's previous reply made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Asked {
    User(UserContent),
    ToolResult(ToolResult),
}

/// A `tool` message: what a tool call returned, by the call's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    pub tool_call_id: String,
    /// As the caller sent it: a string, or an array of text parts.
    pub content: Value,
}

impl Asked {
    /// The user message, when this is one.
    pub fn user(&self) -> Option<&UserContent> {
        match self {
            Asked::User(content) => Some(content),
            Asked::ToolResult(_) => None,
        }
    }

    /// The message's text: a user message's text parts, or a tool result's output.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Asked::User(content) => content.text(),
            Asked::ToolResult(result) => text_of(&result.content),
        }
    }

    /// The URLs of the message's images, in order (a tool result has none).
    pub fn image_urls(&self) -> impl Iterator<Item = &str> {
        self.user().into_iter().flat_map(UserContent::image_urls)
    }
}

/// The text of a `content` that is a string or an array of text parts.
pub fn text_of(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(text) => Cow::Borrowed(text),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            match texts.as_slice() {
                [only] => Cow::Borrowed(only),
                _ => Cow::Owned(texts.join("\n\n")),
            }
        }
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// One turn: what the caller asked and the reply, stored and sent upstream together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Set on every turn this version stores; turns stored before ids have none.
    pub id: Option<String>,
    /// The caller's messages of this turn, oldest first; never empty.
    pub asked: Vec<Asked>,
    /// The model's reply: its text (empty when it is only tool calls).
    pub assistant: String,
    /// The reply's tool calls, as upstream sent them (OpenAI's `tool_calls` objects).
    pub calls: Vec<Value>,
    /// A Responses turn's items as they came; `asked`, `assistant` and `calls` are read
    /// from them.
    pub exchange: Option<Box<Exchange>>,
    /// Absent from turns stored before turns were counted.
    pub tokens: Option<TurnTokens>,
}

/// A turn's tokens: what its request cost (upstream's counts) and what the turn weighs
/// when later turns send it as history.
///
/// Stored as an array, `[size, exact, prompt, completion, cached, answer, sent]`: every
/// turn of a chat is read on every turn, and an object's keys took 40% of reading a turn
/// (BENCHMARKS.md). The object form earlier versions wrote is read as well.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct TurnTokens {
    /// The turn's messages (the caller's and the reply) as history, framing included.
    pub size: u32,
    /// `size` comes from upstream's counts; otherwise the new messages were estimated.
    #[serde(default)]
    pub exact: bool,
    /// Upstream's `prompt_tokens` for the request that made the turn.
    pub prompt: u32,
    /// Upstream's `completion_tokens` for the reply (reasoning included).
    pub completion: u32,
    #[serde(default)]
    pub cached: u32,
    /// The reply as history: its tokens without the reasoning that never reached it, and
    /// the message's framing.
    #[serde(default)]
    pub answer: u32,
    /// What the request sent before the new messages: a fingerprint of the prompts, of the
    /// first turn of history it sent and of how many it sent.
    #[serde(default)]
    pub sent: u64,
}

impl Serialize for TurnTokens {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (
            self.size,
            u8::from(self.exact),
            self.prompt,
            self.completion,
            self.cached,
            self.answer,
            self.sent,
        )
            .serialize(serializer)
    }
}

/// A stored turn's `tokens`: the array this version writes, or an older version's object
/// (read without buffering either: every history turn passes through here).
fn stored_tokens<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TurnTokens>, D::Error> {
    struct Tokens;

    impl<'de> serde::de::Visitor<'de> for Tokens {
        type Value = Option<TurnTokens>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a turn's token counts")
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut next = |name: &str| -> Result<u64, A::Error> {
                seq.next_element::<u64>()?
                    .ok_or_else(|| serde::de::Error::custom(format!("tokens lack {name}")))
            };
            let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            Ok(Some(TurnTokens {
                size: small(next("size")?),
                exact: next("exact")? != 0,
                prompt: small(next("prompt")?),
                completion: small(next("completion")?),
                cached: small(next("cached")?),
                answer: small(next("answer")?),
                sent: next("sent")?,
            }))
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            TurnTokens::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_option(Tokens)
}

impl Turn {
    /// A turn of one question (with an optional image) and its reply.
    pub fn question(
        id: Option<String>,
        user: String,
        url: Option<String>,
        assistant: String,
    ) -> Turn {
        Turn {
            id,
            asked: vec![Asked::User(UserContent::question(user, url))],
            assistant,
            calls: Vec::new(),
            exchange: None,
            tokens: None,
        }
    }

    /// How many messages the turn holds: the caller's and the reply.
    pub fn messages(&self) -> usize {
        self.asked.len() + usize::from(self.has_reply())
    }

    /// Whether the turn has a reply: all but the items a caller added to a conversation
    /// by themselves (`POST /v1/conversations/{id}/items`).
    pub fn has_reply(&self) -> bool {
        self.exchange
            .as_ref()
            .is_none_or(|exchange| !exchange.response.is_null())
    }

    /// The reply's tool calls as text, one line each (`name(arguments)`), for readers that
    /// show a chat as text.
    pub fn calls_as_text(&self) -> String {
        let mut text = String::new();
        for call in &self.calls {
            let function = &call["function"];
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str("[tool call ");
            text.push_str(function["name"].as_str().unwrap_or("?"));
            text.push('(');
            text.push_str(function["arguments"].as_str().unwrap_or(""));
            text.push_str(")]");
        }
        text
    }

    /// The ids of the reply's tool calls, in order.
    pub fn call_ids(&self) -> impl Iterator<Item = &str> {
        self.calls.iter().filter_map(|call| call["id"].as_str())
    }

    /// A new, random turn id: 128 bits, hex.
    pub fn new_id() -> String {
        format!("{:032x}", fastrand::u128(..))
    }
}

/// The stored JSON, borrowed for writing.
#[derive(Serialize)]
struct StoredRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    m: Option<usize>,
    user: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [Asked]>,
    assistant: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    calls: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<&'a Exchange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<&'a TurnTokens>,
}

/// The stored JSON, owned for reading; every field but `user` and `assistant` is optional.
#[derive(Deserialize)]
struct Stored {
    #[serde(default)]
    id: Option<String>,
    user: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Asked>>,
    assistant: String,
    #[serde(default)]
    calls: Vec<Value>,
    #[serde(default)]
    exchange: Option<Box<Exchange>>,
    #[serde(default, deserialize_with = "stored_tokens")]
    tokens: Option<TurnTokens>,
}

impl Serialize for Turn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(exchange) = &self.exchange {
            // Its messages, reply and calls are the exchange's: kept once.
            return StoredRef {
                id: self.id.as_deref(),
                m: Some(self.messages()),
                user: Cow::Owned(
                    self.asked
                        .iter()
                        .map(Asked::text)
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                ),
                url: None,
                messages: None,
                assistant: &self.assistant,
                calls: &[],
                exchange: Some(exchange),
                tokens: self.tokens.as_ref(),
            }
            .serialize(serializer);
        }
        let simple = match self.asked.as_slice() {
            [Asked::User(only)] => only.as_question(),
            _ => None,
        };
        let stored = match simple {
            Some((user, url)) => StoredRef {
                id: self.id.as_deref(),
                m: None,
                user: Cow::Borrowed(user),
                url,
                messages: None,
                assistant: &self.assistant,
                calls: &self.calls,
                exchange: None,
                tokens: self.tokens.as_ref(),
            },
            // A version that knows only `user` and `url` still reads a fair summary.
            None => StoredRef {
                id: self.id.as_deref(),
                m: None,
                user: Cow::Owned(
                    self.asked
                        .iter()
                        .map(Asked::text)
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                ),
                url: self.asked.iter().flat_map(Asked::image_urls).next(),
                messages: Some(&self.asked),
                assistant: &self.assistant,
                calls: &self.calls,
                exchange: None,
                tokens: self.tokens.as_ref(),
            },
        };
        stored.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Turn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        if let Some(exchange) = stored.exchange {
            return Ok(Turn {
                id: stored.id,
                asked: exchange.asked(),
                assistant: stored.assistant,
                calls: exchange.calls(),
                exchange: Some(exchange),
                tokens: stored.tokens,
            });
        }
        let asked = match stored.messages {
            Some(messages) if !messages.is_empty() => messages,
            _ => vec![Asked::User(UserContent::question(stored.user, stored.url))],
        };
        Ok(Turn {
            id: stored.id,
            asked,
            assistant: stored.assistant,
            calls: stored.calls,
            exchange: None,
            tokens: stored.tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::StoredResponse;
    use serde_json::json;

    fn round_trip(turn: &Turn) -> Turn {
        serde_json::from_str(&serde_json::to_string(turn).unwrap()).unwrap()
    }

    #[test]
    fn turns_of_the_first_version_are_read() {
        let old: Turn = serde_json::from_value(
            json!({"user": "q", "url": "https://x/a.png", "assistant": "a"}),
        )
        .unwrap();
        assert_eq!(
            old,
            Turn::question(None, "q".into(), Some("https://x/a.png".into()), "a".into())
        );
    }

    #[test]
    fn a_question_is_stored_in_the_first_versions_shape_plus_its_id() {
        let turn = Turn::question(Some("t1".into()), "q".into(), None, "a".into());
        assert_eq!(
            serde_json::to_value(&turn).unwrap(),
            json!({"id": "t1", "user": "q", "assistant": "a"})
        );
        assert_eq!(round_trip(&turn), turn);
    }

    #[test]
    fn several_messages_and_images_are_kept_with_a_summary_for_older_readers() {
        let turn = Turn {
            id: Some("t2".into()),
            asked: vec![
                Asked::User(UserContent::Text("first".into())),
                Asked::User(UserContent::Parts(vec![
                    Part::Text {
                        text: "compare".into(),
                    },
                    Part::ImageUrl {
                        image_url: ImageRef {
                            url: "https://x/1.png".into(),
                            detail: Some("low".into()),
                        },
                    },
                    Part::ImageUrl {
                        image_url: ImageRef {
                            url: "https://x/2.png".into(),
                            detail: None,
                        },
                    },
                ])),
            ],
            assistant: "they differ".into(),
            calls: Vec::new(),
            exchange: None,
            tokens: Some(TurnTokens {
                size: 30,
                exact: true,
                prompt: 100,
                completion: 3,
                cached: 64,
                answer: 7,
                sent: 7,
            }),
        };
        let stored = serde_json::to_value(&turn).unwrap();
        assert_eq!(stored["user"], "first\n\ncompare");
        assert_eq!(stored["url"], "https://x/1.png");
        assert_eq!(stored["messages"][1][1]["image_url"]["detail"], "low");
        assert_eq!(round_trip(&turn), turn);
    }

    #[test]
    fn tool_calls_and_their_results_are_kept_as_sent() {
        let call = json!({"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}});
        let asking = Turn {
            calls: vec![call.clone()],
            ..Turn::question(Some("t1".into()), "weather?".into(), None, String::new())
        };
        let stored = serde_json::to_value(&asking).unwrap();
        assert_eq!(stored["calls"], json!([call]));
        assert_eq!(round_trip(&asking), asking);
        assert_eq!(asking.call_ids().collect::<Vec<_>>(), ["call_1"]);
        assert_eq!(
            asking.calls_as_text(),
            "[tool call weather({\"city\":\"Paris\"})]"
        );

        let answering = Turn {
            id: Some("t2".into()),
            asked: vec![Asked::ToolResult(ToolResult {
                tool_call_id: "call_1".into(),
                content: json!([{"type": "text", "text": "sunny"}]),
            })],
            assistant: "It is sunny.".into(),
            calls: Vec::new(),
            exchange: None,
            tokens: None,
        };
        let stored = serde_json::to_value(&answering).unwrap();
        assert_eq!(stored["user"], "sunny");
        assert_eq!(
            stored["messages"],
            json!([{"tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]}])
        );
        assert!(stored.get("calls").is_none());
        assert_eq!(round_trip(&answering), answering);
    }

    #[test]
    fn a_responses_turn_keeps_its_items_once_and_its_count_first() {
        let exchange = Exchange {
            input: vec![json!({"role": "user", "content": "hi"})],
            response: StoredResponse::from_value(
                &json!({"id": "resp_x", "output": [{"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "hello"}]}]}),
            ),
        };
        let turn = Turn {
            id: Some("t9".into()),
            asked: exchange.asked(),
            assistant: exchange.reply_text(),
            calls: exchange.calls(),
            exchange: Some(Box::new(exchange)),
            tokens: None,
        };
        let text = serde_json::to_string(&turn).unwrap();
        assert!(
            text.starts_with(r#"{"id":"t9","m":2,"user":"hi","#),
            "{text}"
        );
        assert!(!text.contains(r#""messages":"#), "{text}");
        assert_eq!(round_trip(&turn), turn);
    }

    #[test]
    fn tokens_are_stored_as_an_array_and_read_in_either_form() {
        let tokens = TurnTokens {
            size: 30,
            exact: true,
            prompt: 100,
            completion: 3,
            cached: 64,
            answer: 7,
            sent: u64::MAX,
        };
        let turn = Turn {
            tokens: Some(tokens),
            ..Turn::question(Some("t".into()), "q".into(), None, "a".into())
        };
        let stored = serde_json::to_value(&turn).unwrap();
        assert_eq!(stored["tokens"], json!([30, 1, 100, 3, 64, 7, u64::MAX]));
        assert_eq!(round_trip(&turn), turn);
        // As versions before the array wrote them, with the later fields missing.
        let older: Turn = serde_json::from_value(json!({"user": "q", "assistant": "a",
            "tokens": {"size": 30, "exact": true, "prompt": 100, "completion": 3}}))
        .unwrap();
        assert_eq!(
            older.tokens,
            Some(TurnTokens {
                cached: 0,
                answer: 0,
                sent: 0,
                ..tokens
            })
        );
        let none: Turn =
            serde_json::from_value(json!({"user": "q", "assistant": "a", "tokens": null})).unwrap();
        assert_eq!(none.tokens, None);
    }

    #[test]
    fn text_joins_text_parts_and_images_are_listed() {
        let content = UserContent::Parts(vec![
            Part::Text { text: "a".into() },
            Part::ImageUrl {
                image_url: ImageRef {
                    url: "https://x/1.png".into(),
                    detail: None,
                },
            },
            Part::Text { text: "b".into() },
        ]);
        assert_eq!(content.text(), "a\n\nb");
        assert_eq!(
            content.image_urls().collect::<Vec<_>>(),
            ["https://x/1.png"]
        );
        assert!(!UserContent::Text("x".into()).has_images());
    }
}
