//! The context budget: which of a chat's stored turns a turn sends upstream, so that a chat
//! never fails because it grew, and what each turn weighs in tokens.
//!
//! - The history sent is a window: the stored turns from `window_start` on. It stays where
//!   it is turn after turn, so successive requests share their prefix and OpenAI's prompt
//!   cache keeps hitting; when a request would pass `MAX_PROMPT_TOKENS`, the window's start
//!   moves forward in one step, to leave the request at three quarters of the budget.
//! - Sizes are upstream's own counts wherever they can be: a request's `prompt_tokens`
//!   counts everything it sent, so when the previous turn's request sent the same prompts
//!   and the same window less one turn, the difference is exactly what that turn and the new
//!   message weigh. Only text upstream has not counted yet is estimated ([`crate::tokens`]).

use serde_json::{Map, Value};

use crate::chat::{text_of, Asked, Compacted, Turn, TurnTokens};
use crate::error::ApiError;
use crate::store::TurnContext;
use crate::tokens::{estimate, estimate_message, estimate_user, PER_MESSAGE, PER_REQUEST};
use crate::upstream::wire::Usage;

/// The history a request sends, and what it weighs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Index in the history of the first turn sent.
    pub start: usize,
    /// The window's new start, to keep with the turn, when this request moved it.
    pub moved_to: Option<String>,
    /// Where the window started before this request moved it (`start` when it did not):
    /// the turns from there to `start` are the ones a compaction stands for.
    pub moved_from: usize,
    /// The request's tokens, prompts and new messages included.
    pub tokens: u32,
}

/// What a request sends besides its history: the system prompts and the new messages, and
/// everything else it sends; `MAX_PROMPT_TOKENS` counts all of it.
pub struct Request<'a> {
    pub global_prompt: &'a str,
    pub chat_prompt: Option<&'a str>,
    pub asked: &'a [Asked],
    /// The new input's items besides `asked` (a developer or an assistant message, a
    /// function call, reasoning, an item a reference filled in): kept with the turn, and
    /// sent again with it as history ([`besides`]).
    pub besides: u32,
    /// What the request sends only this once: a Responses request's `instructions`, the
    /// tools' definitions ([`fixed`]).
    pub fixed: u32,
    /// The first turn of the history the request may send: for a Responses turn, the
    /// newest turn that holds a `compaction` item ([`compacted_from`]), which stands for
    /// everything before it; 0 for the chat door, which cannot send one.
    pub from: usize,
    /// What the chat's compaction of the turns before the window weighs (0: none sent):
    /// weighed with the history (a new message too long with it is sent without it, never
    /// refused for it).
    pub compacted: u32,
}

/// The sizes a request is planned within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_PROMPT_TOKENS`: the most a request sends; a new message that cannot fit with
    /// the prompts alone is refused.
    pub budget: u32,
    /// The request size past which the window moves: `COMPACT_AT_TOKENS` when stored chats
    /// compact, else the budget.
    pub move_at: u32,
    /// Room kept for the compaction the move makes (none without compaction).
    pub reserve: u32,
}

impl Limits {
    /// The limits of a request within `budget`, moving its window at `compact_at` when
    /// stored chats compact: below it by a quarter (as without compaction), and by an
    /// eighth more for the compaction the move makes.
    pub fn new(budget: u32, compact_at: Option<u32>) -> Limits {
        match compact_at {
            Some(at) => Limits {
                budget,
                move_at: at.min(budget),
                reserve: at.min(budget) / 8,
            },
            None => Limits {
                budget,
                move_at: budget,
                reserve: 0,
            },
        }
    }
}

impl Request<'_> {
    fn prompts(&self) -> u32 {
        estimate_message(self.global_prompt)
            + self.chat_prompt.map_or(0, estimate_message)
            + self.fixed
    }

    fn asked(&self) -> u32 {
        self.asked.iter().map(estimate_asked).sum::<u32>() + self.besides
    }

    /// What identifies the part of a request that comes before its new messages.
    fn fingerprint(&self, history: &[Turn], start: usize) -> u64 {
        let first = history
            .get(start)
            .and_then(|t| t.id.as_deref())
            .unwrap_or("");
        let sent = (history.len() - start.min(history.len())).to_string();
        let mut hash = Fnv::new();
        for part in [
            self.global_prompt,
            self.chat_prompt.unwrap_or("\u{0}none"),
            first,
            &sent,
        ] {
            hash.write(part.as_bytes());
            hash.write(&[0xff]);
        }
        // A compaction sent before the window is part of the prefix (none: the fingerprint
        // a chat's turns had before compaction).
        if self.compacted > 0 {
            hash.write(format!("compacted {}", self.compacted).as_bytes());
            hash.write(&[0xff]);
        }
        hash.finish()
    }
}

/// Decides which history a request sends within `limits`. A new message that does not fit
/// with the prompts alone is refused (`message_too_long`) before any upstream call.
/// `new_turn` is the id the new turn will be stored under: when no stored turn fits, the
/// window starts at it.
pub fn plan(
    context: &TurnContext,
    request: &Request<'_>,
    limits: Limits,
    new_turn: &str,
) -> Result<Window, ApiError> {
    let Limits {
        budget,
        move_at,
        reserve,
    } = limits;
    let history = &context.history;
    let floor = request.prompts() + request.asked() + PER_REQUEST;
    if floor > budget {
        return Err(ApiError::bad_request(
            "message_too_long",
            format!(
                "the message takes about {floor} tokens with the prompts, more than the \
                 {budget} a turn may send (MAX_PROMPT_TOKENS)"
            ),
        ));
    }
    let start = window_position(context).unwrap_or(0);
    // From the newest compaction on, when it is later: that turn is sent from its
    // compaction item, so a tool result before the item is not sent without its call (and
    // the turn is not skipped as one that answers a call, which would lose the item).
    let start = if request.from > start {
        request.from
    } else {
        sendable(history, start)
    };
    let tokens = weigh(history, start, request).min(u32::MAX as u64) as u32;
    if tokens <= move_at {
        return Ok(Window {
            start,
            moved_to: None,
            moved_from: start,
            tokens,
        });
    }
    // Over: move the start far enough to leave room for the turns to come (and for the
    // compaction of the turns it moves past).
    let target = (move_at / 4 * 3).saturating_sub(reserve);
    Ok(cut(history, start, tokens, target, new_turn))
}

/// The chat's compaction, when it stands for the turns before `window`: the window it was
/// made for, whose start is kept with it (a halved window, which starts later, goes
/// without it). The turns sent may start a little later than the window (a window never
/// starts sending at a tool's result), which it still precedes.
pub fn compacted<'a>(context: &'a TurnContext, window: &Window) -> Option<&'a Compacted> {
    let start = window
        .moved_to
        .as_deref()
        .or(context.window_start.as_deref());
    context.compacted.as_ref().filter(|c| c.precedes(start))
}

/// Where the window the chat's read names starts in its history: `None` when it names no
/// turn the history holds (none was kept, or a redo replaced it), and the window starts at
/// the first.
pub fn window_position(context: &TurnContext) -> Option<usize> {
    let id = context.window_start.as_deref()?;
    context
        .history
        .iter()
        .position(|t| t.id.as_deref() == Some(id))
}

/// Where a Responses turn's history starts at the earliest: the newest turn that holds a
/// `compaction` item, which stands for everything before it. The turns before are kept
/// (every listing and export shows them) but not sent, nor weighed.
pub fn compacted_from(history: &[Turn]) -> usize {
    history.iter().rposition(Turn::compacts).unwrap_or(0)
}

/// The window of a request that upstream refused as too long for its context: at most half
/// of the history that was sent.
pub fn halve(context: &TurnContext, sent: &Window, new_turn: &str) -> Window {
    let history = &context.history;
    let sent_history: u32 = history[sent.start..].iter().map(size).sum();
    let target = sent.tokens.saturating_sub(sent_history - sent_history / 2);
    cut(history, sent.start, sent.tokens, target, new_turn)
}

/// Drops turns from `start` on until the request weighs at most `target`.
fn cut(history: &[Turn], mut start: usize, mut tokens: u32, target: u32, new_turn: &str) -> Window {
    let moved_from = start;
    while start < history.len() && (tokens > target || answers_a_call(&history[start])) {
        tokens = tokens.saturating_sub(size(&history[start]));
        start += 1;
    }
    let moved_to = match history.get(start) {
        Some(turn) => turn.id.clone(),
        None => Some(new_turn.to_owned()),
    };
    Window {
        start,
        moved_to,
        moved_from,
        tokens,
    }
}

/// What a request sending `history[start..]` weighs: exactly, when the newest turn's own
/// request sent the same prompts and window, else from the turns' sizes and estimates.
fn weigh(history: &[Turn], start: usize, request: &Request<'_>) -> u64 {
    let asked = u64::from(request.asked());
    if let Some(last) = history.last().filter(|_| start < history.len()) {
        if let Some(tokens) = last.tokens {
            if tokens.sent == request.fingerprint(&history[..history.len() - 1], start) {
                return u64::from(tokens.prompt) + u64::from(tokens.answer) + asked;
            }
        }
    }
    let sizes: u64 = history[start..].iter().map(|t| u64::from(size(t))).sum();
    let prompts = u64::from(request.prompts()) + u64::from(request.compacted);
    prompts + sizes + asked + u64::from(PER_REQUEST)
}

/// The tokens of the turn a request made: upstream's counts, its size as history (exact
/// when the previous turn's request sent the same prompts and window less one turn), and
/// the fingerprint of what it sent.
pub fn turn_tokens(
    context: &TurnContext,
    request: &Request<'_>,
    window: &Window,
    usage: &Usage,
) -> TurnTokens {
    let history = &context.history;
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let answer = clamp(
        usage
            .completion_tokens
            .saturating_sub(usage.reasoning_tokens)
            + u64::from(PER_MESSAGE),
    );
    let previous = history
        .last()
        .filter(|_| window.start < history.len())
        .and_then(|last| last.tokens.map(|tokens| (last, tokens)));
    let exact_asked = previous.and_then(|(_, tokens)| {
        let same_before =
            tokens.sent == request.fingerprint(&history[..history.len() - 1], window.start);
        same_before.then(|| {
            clamp(usage.prompt_tokens)
                .saturating_sub(tokens.prompt)
                .saturating_sub(tokens.answer)
        })
    });
    let asked = exact_asked.unwrap_or_else(|| request.asked());
    TurnTokens {
        size: asked + answer,
        exact: exact_asked.is_some(),
        prompt: clamp(usage.prompt_tokens),
        completion: clamp(usage.completion_tokens),
        cached: clamp(usage.cached_tokens),
        answer,
        sent: request.fingerprint(history, window.start),
    }
}

/// What a turn weighs as history: its counted size, or an estimate for a turn stored before
/// turns were counted.
pub fn size(turn: &Turn) -> u32 {
    match &turn.tokens {
        Some(tokens) => tokens.size,
        None => {
            let calls: u32 = turn
                .calls
                .iter()
                .map(|call| estimate(&call.to_string()))
                .sum();
            turn.asked.iter().map(estimate_asked).sum::<u32>()
                + estimate_message(&turn.assistant)
                + calls
        }
    }
}

/// A Responses input's items that are not the other doors' messages (what `asked_in`
/// leaves out), estimated: a message's text, any other item's JSON.
pub fn besides(input: &[Value]) -> u32 {
    input
        .iter()
        .filter(|item| !is_asked(item))
        .map(|item| match item.get("content") {
            Some(content) if item["role"].is_string() => estimate_message(&text_of(content)),
            _ => estimate(&item.to_string()),
        })
        .sum()
}

/// Whether an input item is one of the messages `asked_in` reads (a user message, a
/// tool's result), which `estimate_asked` counts.
fn is_asked(item: &Value) -> bool {
    match item["type"].as_str() {
        Some("function_call_output") => true,
        Some("message") | None => item["role"] == "user",
        Some(_) => false,
    }
}

/// What a request sends once besides its prompts and input: `instructions`, and the
/// definitions of the tools it offers (`tools` among its parameters).
pub fn fixed(instructions: Option<&str>, params: Option<&Map<String, Value>>) -> u32 {
    let tools = params
        .and_then(|params| params.get("tools"))
        .map_or(0, |tools| estimate(&tools.to_string()));
    instructions.map_or(0, estimate_message) + tools
}

/// One of the caller's messages as it is sent, estimated.
fn estimate_asked(asked: &Asked) -> u32 {
    match asked {
        Asked::User(content) => estimate_user(content),
        Asked::ToolResult(result) => {
            estimate_message(&text_of(&result.content)) + estimate(&result.tool_call_id)
        }
    }
}

/// A turn that begins with the results of the previous turn's tool calls: upstream refuses
/// a tool result whose call it was not sent, so no window starts there.
fn answers_a_call(turn: &Turn) -> bool {
    matches!(turn.asked.first(), Some(Asked::ToolResult(_)))
}

/// The first turn from `start` on that a window can start at.
fn sendable(history: &[Turn], mut start: usize) -> usize {
    while history.get(start).is_some_and(answers_a_call) {
        start += 1;
    }
    start
}

/// FNV-1a, 64 bits: a fingerprint that stays the same across builds and Rust versions
/// (std's hasher may change), stored with each turn.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
