//! A chat as its messages read: `GET /<chat_id>/chat`'s transcript, which the seed routes,
//! the export and the playground show, and whose places `/edit` and `/fork` name.

use std::borrow::Cow;

use serde::Serialize;

use super::{Asked, Turn};

/// One message of `GET /<chat_id>/chat`.
#[derive(Serialize)]
pub struct TranscriptMessage<'a> {
    pub role: &'static str,
    pub content: Cow<'a, str>,
    /// The message's image (its first, when it has several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<&'a str>,
    /// Every image of a message that has more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<&'a str>>,
    /// The call a tool's result answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// Every message of `turns`, in order: each question, then its reply (a turn of items
/// with no reply has none).
pub fn transcript(turns: &[Turn]) -> Vec<TranscriptMessage<'_>> {
    let mut messages = Vec::with_capacity(turns.len() * 2);
    for turn in turns {
        for asked in &turn.asked {
            let urls: Vec<&str> = asked.image_urls().collect();
            messages.push(TranscriptMessage {
                // A tool's result, which the seed routes never send, shows as its text.
                role: match asked {
                    Asked::User(_) => "user",
                    Asked::ToolResult(_) => "tool",
                },
                content: asked.text(),
                url: urls.first().copied(),
                urls: (urls.len() > 1).then_some(urls),
                tool_call_id: match asked {
                    Asked::User(_) => None,
                    Asked::ToolResult(result) => Some(&result.tool_call_id),
                },
            });
        }
        if !turn.has_reply() {
            continue;
        }
        // A reply's tool calls show as text after its own, one line each.
        let content = match (turn.assistant.as_str(), turn.calls.is_empty()) {
            (_, true) => Cow::Borrowed(turn.assistant.as_str()),
            ("", false) => Cow::Owned(turn.calls_as_text()),
            (text, false) => Cow::Owned(format!("{text}\n{}", turn.calls_as_text())),
        };
        messages.push(TranscriptMessage {
            role: "assistant",
            content,
            url: None,
            urls: None,
            tool_call_id: None,
        });
    }
    messages
}
