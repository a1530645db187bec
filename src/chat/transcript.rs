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
    /// A reply's tokens: what the request that made it cost, as its answer said, when asked
    /// for ([`transcript_with_tokens`]); absent for turns stored before turns were counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<ReplyTokens>,
}

/// What the request behind a reply cost, as the seed routes' `tokens` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplyTokens {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

/// A message's place in a transcript: one of its turn's questions, or the turn's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Asked(usize),
    Reply,
}

/// The place of every message of `turns`, in transcript order, each with its turn's index:
/// each question, then its reply (a turn of items with no reply has none). What `/edit`
/// and `/fork` count their `index` in.
pub fn places(turns: &[Turn]) -> impl Iterator<Item = (usize, Place)> + '_ {
    turns.iter().enumerate().flat_map(|(at, turn)| {
        let questions = (0..turn.asked.len()).map(move |k| (at, Place::Asked(k)));
        questions.chain(turn.has_reply().then_some((at, Place::Reply)))
    })
}

/// Every message of `turns`, in order (see [`places`]).
pub fn transcript(turns: &[Turn]) -> Vec<TranscriptMessage<'_>> {
    places(turns)
        .map(|(at, place)| match place {
            Place::Asked(k) => asked_message(&turns[at].asked[k]),
            Place::Reply => reply_message(&turns[at]),
        })
        .collect()
}

/// [`transcript`], each reply with its tokens (`GET /<chat_id>/chat?tokens=true`: a page
/// shows each answer's usage after a reload as it did when the answer came).
pub fn transcript_with_tokens(turns: &[Turn]) -> Vec<TranscriptMessage<'_>> {
    places(turns)
        .map(|(at, place)| match place {
            Place::Asked(k) => asked_message(&turns[at].asked[k]),
            Place::Reply => TranscriptMessage {
                tokens: turns[at].tokens.map(|tokens| ReplyTokens {
                    prompt_tokens: u64::from(tokens.prompt),
                    completion_tokens: u64::from(tokens.completion),
                    cached_tokens: u64::from(tokens.cached),
                    total_tokens: u64::from(tokens.prompt) + u64::from(tokens.completion),
                }),
                ..reply_message(&turns[at])
            },
        })
        .collect()
}

fn asked_message(asked: &Asked) -> TranscriptMessage<'_> {
    let urls: Vec<&str> = asked.image_urls().collect();
    TranscriptMessage {
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
        tokens: None,
    }
}

fn reply_message(turn: &Turn) -> TranscriptMessage<'_> {
    // A reply's tool calls show as text after its own, one line each.
    let content = match (turn.assistant.as_str(), turn.calls.is_empty()) {
        (_, true) => Cow::Borrowed(turn.assistant.as_str()),
        ("", false) => Cow::Owned(turn.calls_as_text()),
        (text, false) => Cow::Owned(format!("{text}\n{}", turn.calls_as_text())),
    };
    TranscriptMessage {
        role: "assistant",
        content,
        url: None,
        urls: None,
        tool_call_id: None,
        tokens: None,
    }
}
