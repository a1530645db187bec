//! What a turn sends upstream: the Responses API's input items or Chat Completions'
//! messages, built from the chat's prompts, the window of history the budget chose and the
//! caller's new messages; and a Responses request around them, asking OpenAI to keep
//! nothing.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::{Ask, ResponsesCall, ResponsesTurn, TurnEngine};
use crate::budget::{self, Window};
use crate::chat::{
    asked_of, calls_of, is_compaction, summary_message, text_of, turn_items, Compacted, Compaction,
    Exchange, Turn,
};
use crate::store::TurnContext;
use crate::upstream::wire::Message;

/// What a turn sends upstream besides its parameters.
pub(super) enum Sent<'a> {
    /// Chat Completions' `messages` (none for a stateless call: they are the caller's).
    Messages(Vec<Message<'a>>),
    /// The Responses API's `input` items, for the turn they are of.
    Items(&'a ResponsesTurn, Vec<Value>),
}

/// How a turn sends the images of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HistoryImages {
    AsImages,
    /// As `[image: <url>]` text, after upstream refused an image of the history.
    AsText,
}

impl TurnEngine {
    /// What the turn sends: a Responses turn's input items, or the messages of the others.
    pub(super) fn sent<'a>(
        &'a self,
        context: &'a TurnContext,
        window: &Window,
        ask: &'a Ask<'_>,
        images: HistoryImages,
    ) -> Sent<'a> {
        match &ask.responses {
            Some(responses) => {
                Sent::Items(responses, self.items(context, window, responses, images))
            }
            None => Sent::Messages(self.messages(context, window, ask, images)),
        }
    }

    /// A Responses turn's input: in a conversation, the global and the chat's prompts and
    /// this response's instructions, as system messages; then the window's history, each
    /// turn as its items; then the caller's new items, as sent.
    fn items(
        &self,
        context: &TurnContext,
        window: &Window,
        responses: &ResponsesTurn,
        images: HistoryImages,
    ) -> Vec<Value> {
        let history = &context.history[window.start.min(context.history.len())..];
        let mut items = Vec::with_capacity(3 + history.len() * 2 + responses.input.len());
        if responses.prompts {
            items.push(json!({"role": "system", "content": self.global_prompt(context)}));
            if let Some(prompt) = &context.chat_prompt {
                items.push(json!({"role": "system", "content": prompt}));
            }
            if let Some(instructions) = &responses.instructions {
                items.push(json!({"role": "system", "content": instructions}));
            }
        }
        // A compaction item stands for what came before it. The window starts at the newest
        // turn that holds one (the budget's `compacted_from`). One that upstream made (in
        // that turn's output) stands for the turn's input too: the turn is sent from it. One
        // a caller sent (in the turn's input, with the user messages `/compact` kept before
        // it) is sent as it was sent. A new input that holds one starts from it, with no
        // history at all.
        if !responses.input.iter().any(is_compaction) {
            if let Some(compacted) = budget::compacted(context, window) {
                compacted_items(compacted, &mut items);
            }
            window_items(history, images == HistoryImages::AsText, &mut items);
        }
        items.extend(responses.input.iter().cloned());
        items
    }

    /// A Responses request: the caller's parameters, the model, the input the proxy
    /// assembled, and `store: false`, so that OpenAI keeps nothing. A reasoning model is
    /// asked for its reasoning's encrypted content, which a later turn must send back.
    pub(super) fn responses_request(
        &self,
        ask: &Ask<'_>,
        responses: &ResponsesTurn,
        items: Vec<Value>,
        stream: bool,
        cache_key: Option<&str>,
    ) -> Value {
        let mut body = ask.params.cloned().unwrap_or_default();
        body.insert("model".to_owned(), json!(ask.model));
        body.insert("input".to_owned(), Value::Array(items));
        if let (false, Some(instructions)) = (responses.prompts, &responses.instructions) {
            body.insert("instructions".to_owned(), json!(instructions));
        }
        // A count takes no cache key (it reads no cache) and neither it nor a compaction
        // takes `store` (they keep nothing) or `include` (they answer no reasoning).
        match responses.call {
            ResponsesCall::CountTokens => return Value::Object(body),
            ResponsesCall::Compact | ResponsesCall::Create => {
                if let Some(key) = cache_key {
                    body.insert("prompt_cache_key".to_owned(), json!(key));
                }
            }
        }
        if responses.call == ResponsesCall::Compact {
            return Value::Object(body);
        }
        body.insert("store".to_owned(), json!(false));
        if stream {
            body.insert("stream".to_owned(), json!(true));
        }
        if reasons(&body, ask.model) {
            let include = body
                .entry("include")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(include) = include {
                let encrypted = json!(ENCRYPTED_REASONING);
                if !include.contains(&encrypted) {
                    include.push(encrypted);
                }
            }
        }
        Value::Object(body)
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
        messages.push(Message::system(self.global_prompt(context)));
        if let Some(prompt) = context.chat_prompt.as_deref() {
            messages.push(Message::system(prompt));
        }
        if let Some(Compaction::Summary(summary)) =
            budget::compacted(context, window).map(|c| &c.with)
        {
            messages.push(Message::System {
                content: Cow::Owned(summary_message(summary)),
            });
        }
        history_messages(history, images == HistoryImages::AsText, &mut messages);
        messages.extend(ask.asked.iter().map(|asked| Message::asked(asked, false)));
        messages
    }
}

/// Stored turns as Chat Completions messages, in order: each turn's questions (or its
/// items), then its reply.
pub(super) fn history_messages<'a>(
    history: &'a [Turn],
    as_text: bool,
    messages: &mut Vec<Message<'a>>,
) {
    for turn in history {
        match &turn.exchange {
            Some(exchange) => exchange_messages(turn, exchange, as_text, messages),
            None => {
                for asked in &turn.asked {
                    messages.push(Message::asked(asked, as_text));
                }
            }
        }
        if turn.has_reply() {
            messages.push(Message::reply(turn));
        }
    }
}

/// Stored turns as a Responses input's items, in order. A first turn whose output holds a
/// `compaction` item upstream made is sent from that item, which stands for what came
/// before it in the turn.
pub(super) fn window_items(history: &[Turn], as_text: bool, items: &mut Vec<Value>) {
    let history_from = items.len();
    for turn in history {
        turn_items(turn, as_text, items);
    }
    let first = history.first().and_then(|turn| turn.exchange.as_ref());
    if let Some(exchange) = first {
        if let Some(at) = exchange.output().iter().rposition(is_compaction) {
            // The items `turn_items` put before it: the input's, then the output's (a
            // deleted item's `null` is not sent).
            let kept = |items: &[Value]| items.iter().filter(|i| !i.is_null()).count();
            let before = kept(&exchange.input) + kept(&exchange.output()[..at]);
            items.drain(history_from..history_from + before);
        }
    }
}

/// What stands for the turns before the window, as a Responses input's items: upstream's
/// compaction as it answered it, or a summary as a system message.
pub(super) fn compacted_items(compacted: &Compacted, items: &mut Vec<Value>) {
    match &compacted.with {
        Compaction::Items(kept) => items.extend(kept.iter().cloned()),
        Compaction::Summary(summary) => {
            items.push(json!({"role": "system", "content": summary_message(summary)}));
        }
    }
}

/// A Responses turn's input items as Chat Completions messages, in order: its user messages
/// and tool results (the turn's `asked`, read from the same items), and the assistant,
/// system and developer messages and function calls a conversation's items may hold (an
/// item a chat message cannot say, reasoning say, is left out). Its reply follows.
fn exchange_messages<'a>(
    turn: &'a Turn,
    exchange: &'a Exchange,
    as_text: bool,
    messages: &mut Vec<Message<'a>>,
) {
    let mut asked = turn.asked.iter();
    let mut calls: Vec<Value> = Vec::new();
    let flush = |calls: &mut Vec<Value>, messages: &mut Vec<Message<'a>>| {
        if !calls.is_empty() {
            messages.push(Message::Assistant {
                content: None,
                tool_calls: Cow::Owned(std::mem::take(calls)),
            });
        }
    };
    for item in exchange.input.iter().filter(|item| !item.is_null()) {
        if asked_of(item).is_some() {
            flush(&mut calls, messages);
            if let Some(asked) = asked.next() {
                messages.push(Message::asked(asked, as_text));
            }
            continue;
        }
        if item["type"] == "function_call" {
            calls.extend(calls_of(std::slice::from_ref(item)));
            continue;
        }
        let is_message = item["type"] == "message" || item["type"].is_null();
        let content = || text_of(&item["content"]);
        let message = match item["role"].as_str() {
            Some("assistant") if is_message => Message::Assistant {
                content: Some(content()),
                tool_calls: Cow::Borrowed(&[]),
            },
            Some("system") if is_message => Message::System { content: content() },
            Some("developer") if is_message => Message::Developer { content: content() },
            _ => continue,
        };
        flush(&mut calls, messages);
        messages.push(message);
    }
    flush(&mut calls, messages);
}

/// What a later turn needs of a reasoning model's reasoning, when OpenAI keeps nothing.
pub const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// Whether the request goes to a reasoning model: it sets `reasoning`, or names a model of
/// the o-series or gpt-5 family (other models refuse the encrypted reasoning `include`).
fn reasons(body: &Map<String, Value>, model: &str) -> bool {
    let family = |prefix: &str| {
        model
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    body.get("reasoning").is_some_and(|r| !r.is_null())
        || family("o")
        || model.starts_with("gpt-5")
        || family("codex-")
}
