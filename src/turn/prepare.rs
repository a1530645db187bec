//! Preparing a turn, one room because every check below runs on the one read's result:
//! its one read round trip (the chat, and beside it the rate limit, the
//! tokens spent today, the claim on the `Idempotency-Key` and where the items its input
//! references are kept), every limit checked, the references filled in, and the window of
//! history it sends; then the messages that window makes.

use std::collections::HashMap;
use std::future::Future;

use futures_util::future::join_all;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{Ask, Keep, ResponsesTurn, TurnEngine, CLAIM_MARGIN};
use crate::budget::{self, Window};
use crate::chat::{
    asked_in, find_items, first_difference, parse_response_id, referenced_ids, resolve,
    response_id, turn_items, Asked, ChatId, Tenant, Turn,
};
use crate::clock::UtcDay;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{Claim, Store, StoreError, TailClaim, TurnContext};
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

/// A turn ready to ask upstream: its chat's context and the window it sends.
pub(super) struct Ready {
    pub context: TurnContext,
    pub window: Window,
    pub turn_id: String,
    pub claimed: bool,
    /// The request gave the chat a new prompt, to be stored with the turn.
    pub new_prompt: bool,
    /// Where a Responses turn is kept when not in the chat it read: a new chain, or a
    /// branch of one (which gets the history read, up to the turn it continues, copied).
    pub chain: Option<ChatId>,
    /// The proxy's id of a Responses turn's answer.
    pub answer_id: Option<String>,
    /// The stored turn this one replaces, with every turn after it (a redo).
    pub replaces: Option<String>,
    /// The chat's newest turn as read, when this turn must follow it (it answers that
    /// turn's tool calls, or continues a chain in place): the read claimed it.
    pub follows: Option<String>,
}

pub(super) enum Prepared {
    Ready(Box<Ready>),
    Replayed(String),
}

impl TurnEngine {
    /// The turn's read, in one round trip: the chat's context, and beside it the rate
    /// limit, the tokens spent today and the claim on the request's `Idempotency-Key`.
    pub(super) async fn prepare(
        &self,
        ask: &mut Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Prepared, ApiError> {
        let store = &self.store;
        let day = UtcDay::today();
        let turn_id = Turn::new_id();
        // A turn that will follow the chat's newest turn claims it in its read: only one
        // request at a time answers a turn's tool calls or continues a chain in place.
        let follow = follows_newest(ask);
        let hold = ask.deadline.saturating_duration_since(Instant::now()) + CLAIM_MARGIN;
        let claim = follow.as_ref().map(|newest| TailClaim {
            newest: newest.as_deref(),
            claimant: &turn_id,
            hold,
        });
        let context = async {
            match ask.chat {
                Some(chat) => store.turn_context(ask.tenant, chat, claim).await,
                None => Ok(TurnContext::default()),
            }
        };
        let spent = async {
            match self.settings.token_limit_per_day {
                Some(_) => store
                    .tokens_spent(ask.tenant, self.limited_ip(ask), &day)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let claim = async {
            match &ask.keep {
                Some(keep) => store
                    .claim(ask.tenant, &keep.key, keep.claimant(ask.deadline))
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        // Where the items the input references are kept, looked up beside the rest.
        let references = match &ask.responses {
            Some(responses) => referenced_ids(&responses.input).unwrap_or_default(),
            None => Vec::new(),
        };
        let located = async {
            match references.is_empty() {
                true => Ok(Vec::new()),
                false => store.item_responses(ask.tenant, &references).await,
            }
        };
        let (allowed, context, spent, claim, located) = log
            .redis(async { tokio::join!(rate_limit, context, spent, claim, located) })
            .await;
        let newest_claimed = matches!(&context, Ok(context) if context.claimed);
        let referenced = match (&allowed, &context) {
            (Ok(()), Ok(context)) if !references.is_empty() => {
                self.referenced(ask, &references, located, context, log)
                    .await
            }
            _ => Ok(HashMap::new()),
        };
        let claimed = match claim? {
            None => false,
            Some(Claim::Claimed) => true,
            Some(Claim::InProgress { fingerprint }) => {
                return Err(self
                    .reused(ask, &fingerprint)
                    .unwrap_or(ApiError::RequestInProgress))
            }
            Some(Claim::Answered {
                fingerprint,
                answer,
            }) => {
                return match self.reused(ask, &fingerprint) {
                    Some(error) => Err(error),
                    None => Ok(Prepared::Replayed(answer)),
                }
            }
        };
        let checked = (|| {
            allowed?;
            if let (Some(limit), Some(spent)) = (self.settings.token_limit_per_day, spent?) {
                if spent >= limit {
                    return Err(ApiError::TokenLimitExceeded {
                        limit,
                        retry_after: day.seconds_left,
                    });
                }
            }
            let mut context = context?;
            // A redo is found in the history just read: what it asks, and what it replaces.
            let mut replaces = None;
            if let Some(redo) = ask.redo.take() {
                let (asked, replaced) = super::redo::resolve(redo, &mut context)?;
                ask.asked = asked;
                replaces = Some(replaced);
            }
            if let Some(responses) = ask.responses.as_mut().filter(|_| !references.is_empty()) {
                resolve(&mut responses.input, &referenced?).map_err(|id| ApiError::Missing {
                    code: "item_not_found",
                    param: Some("input"),
                    message: format!("Item with id '{id}' not found."),
                })?;
                ask.asked = asked_in(&responses.input);
            }
            let mut new_prompt = false;
            let mut chain = None;
            if let Some(responses) = &ask.responses {
                chain = continue_from(ask, responses, &mut context)?;
            }
            if ask.chat.is_some() || ask.responses.is_some() {
                // A redo asks what the chat holds, which was checked when it was stored.
                if replaces.is_none() {
                    check_against_history(ask, &context)?;
                }
                if let Some(prompt) = &ask.prompt {
                    new_prompt = context.chat_prompt.as_ref() != Some(prompt);
                    context.chat_prompt = Some(prompt.clone());
                }
            }
            // The newest turn this one follows, when its read claimed it; a claim held by
            // another request refuses tool results (a chain continued in place has become
            // a branch above instead).
            let newest = context.history.last().and_then(|turn| turn.id.clone());
            let follows = match (&follow, chain.is_some()) {
                (Some(_), false) if context.claimed => newest,
                (Some(_), false) => {
                    return Err(ApiError::Conflict {
                        code: "tool_call_in_progress",
                        message: "another request is answering this chat's newest tool calls; \
                                  read the chat again when it has been answered"
                            .to_owned(),
                    })
                }
                _ => None,
            };
            let answer_id = ask.responses.as_ref().map(|responses| {
                let kept_in = match (&chain, ask.chat) {
                    (Some(chain), _) => chain.clone(),
                    (None, Some(chat)) if responses.store => chat.clone(),
                    // Kept nowhere: an id no chat answers to.
                    _ => ChatId::new_chain(),
                };
                response_id(&turn_id, &kept_in)
            });
            let window = match (ask.chat, &ask.responses) {
                (None, None) => Window {
                    start: 0,
                    moved_to: None,
                    tokens: 0,
                },
                _ => budget::plan(
                    &context,
                    &self.budget_request(&context, &ask.asked),
                    self.settings.max_prompt_tokens,
                    &turn_id,
                )?,
            };
            Ok(Ready {
                context,
                window,
                turn_id: turn_id.clone(),
                claimed,
                new_prompt,
                chain,
                answer_id,
                replaces,
                follows,
            })
        })();
        match checked {
            Ok(ready) => Ok(Prepared::Ready(Box::new(ready))),
            Err(error) => {
                let key = async {
                    if claimed {
                        self.release(ask).await;
                    }
                };
                let newest = async {
                    if newest_claimed {
                        self.release_claim(ask, &turn_id).await;
                    }
                };
                tokio::join!(key, newest);
                Err(error)
            }
        }
    }

    /// The items `ids` names, found in the history just read, or else in the chains and
    /// conversations their records name, read together in one more round trip (only a
    /// request that references items it did not continue from pays it). An id found
    /// nowhere is left out.
    async fn referenced(
        &self,
        ask: &Ask<'_>,
        ids: &[String],
        located: Result<Vec<Option<String>>, StoreError>,
        context: &TurnContext,
        log: &mut RequestLog,
    ) -> Result<HashMap<String, Value>, ApiError> {
        let mut found = HashMap::new();
        find_items(&context.history, ids, &mut found);
        let mut chats: Vec<ChatId> = Vec::new();
        for (id, response) in ids.iter().zip(located?) {
            let chat = response
                .as_deref()
                .and_then(parse_response_id)
                .map(|(_, chat)| chat);
            if let (false, Some(chat)) = (found.contains_key(id), chat) {
                if !chats.contains(&chat) {
                    chats.push(chat);
                }
            }
        }
        if chats.is_empty() {
            return Ok(found);
        }
        let reads = chats.iter().map(|chat| self.store.turns(ask.tenant, chat));
        for turns in log.redis(join_all(reads)).await {
            find_items(&turns?, ids, &mut found);
        }
        Ok(found)
    }

    /// The address an open API counts tokens by, for its `TOKEN_LIMIT_PER_DAY` (without a
    /// limit nothing reads that count, so none is kept); a caller with a key is counted as
    /// itself.
    pub(super) fn limited_ip<'a>(&self, ask: &Ask<'a>) -> Option<&'a str> {
        match ask.tenant {
            Tenant::Open if self.settings.token_limit_per_day.is_some() => {
                Some(ask.ip.unwrap_or("unknown"))
            }
            Tenant::Open | Tenant::Caller(_) => None,
        }
    }

    /// A claim held for another request: the same key with a different body.
    fn reused(&self, ask: &Ask<'_>, fingerprint: &str) -> Option<ApiError> {
        let keep = ask.keep.as_ref()?;
        (keep.fingerprint != fingerprint).then_some(ApiError::IdempotencyKeyReused)
    }

    /// Frees the request's `Idempotency-Key` after a failure.
    pub(super) async fn release(&self, ask: &Ask<'_>) {
        release(&*self.store, ask.tenant, ask.keep.as_ref(), ask.deadline).await;
    }

    /// Frees the read's claim on the chat's newest turn after a failure.
    pub(super) async fn release_claim(&self, ask: &Ask<'_>, turn_id: &str) {
        if let Some(chat) = ask.chat {
            release_claim(&*self.store, ask.tenant, chat, turn_id).await;
        }
    }

    fn budget_request<'a>(
        &'a self,
        context: &'a TurnContext,
        asked: &'a [Asked],
    ) -> budget::Request<'a> {
        budget::Request {
            global_prompt: self.global_prompt(context),
            chat_prompt: context.chat_prompt.as_deref(),
            asked,
        }
    }

    pub(super) fn global_prompt<'a>(&'a self, context: &'a TurnContext) -> &'a str {
        context
            .global_prompt
            .as_deref()
            .unwrap_or(&self.settings.default_system_prompt)
    }

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
        for turn in history {
            turn_items(turn, images == HistoryImages::AsText, &mut items);
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
    ) -> Value {
        let mut body = ask.params.cloned().unwrap_or_default();
        body.insert("model".to_owned(), json!(ask.model));
        body.insert("input".to_owned(), Value::Array(items));
        body.insert("store".to_owned(), json!(false));
        if stream {
            body.insert("stream".to_owned(), json!(true));
        }
        if let (false, Some(instructions)) = (responses.prompts, &responses.instructions) {
            body.insert("instructions".to_owned(), json!(instructions));
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
        messages.push(Message::System {
            content: self.global_prompt(context),
        });
        if let Some(prompt) = context.chat_prompt.as_deref() {
            messages.push(Message::System { content: prompt });
        }
        let as_text = images == HistoryImages::AsText;
        for turn in history {
            for asked in &turn.asked {
                messages.push(Message::asked(asked, as_text));
            }
            if turn.has_reply() {
                messages.push(Message::reply(turn));
            }
        }
        messages.extend(ask.asked.iter().map(|asked| Message::asked(asked, false)));
        messages
    }
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

/// A turn's messages against the chat they join: a resent history must be the chat's own
/// (`history_conflict` otherwise), and a tool result must answer a call of the chat's last
/// reply (`invalid_messages` otherwise); either way nothing is asked or stored.
fn check_against_history(ask: &Ask<'_>, context: &TurnContext) -> Result<(), ApiError> {
    if let Some(resent) = &ask.resent {
        if let Some(index) = first_difference(&context.history, &resent.messages) {
            return Err(ApiError::Conflict {
                code: "history_conflict",
                message: format!(
                    "messages[{}] differs from the chat's stored message at that point: \
                     with X-Chat-Id, send the chat's history as it is stored (GET \
                     /<chat_id>/chat), or only the new messages",
                    resent.from + index
                ),
            });
        }
    }
    let last = context.history.last();
    // A Responses input may hold the calls it answers (a caller that keeps its own items).
    let own_calls: Vec<&str> = ask
        .responses
        .iter()
        .flat_map(|responses| &responses.input)
        .filter(|item| item["type"] == "function_call")
        .filter_map(|item| item["call_id"].as_str())
        .collect();
    for (index, asked) in ask.asked.iter().enumerate() {
        let Asked::ToolResult(result) = asked else {
            continue;
        };
        let id = result.tool_call_id.as_str();
        let known =
            own_calls.contains(&id) || last.is_some_and(|turn| turn.call_ids().any(|c| c == id));
        if known {
            continue;
        }
        if ask.responses.is_some() {
            return Err(ApiError::BadParam {
                code: "invalid_function_call_output",
                param: "input",
                message: format!(
                    "a function_call_output answers call `{id}`, which no function_call before it made"
                ),
            });
        }
        let from = ask.resent.as_ref().map_or(0, |r| r.from + r.messages.len());
        return Err(ApiError::bad_request(
            "invalid_messages",
            format!(
                "messages[{}] answers tool call `{id}`, which the chat's last reply did not make",
                from + index
            ),
        ));
    }
    Ok(())
}

/// Where a Responses turn continues from. A `previous_response_id` names a turn of a chat:
/// the newest turn of a chain is continued in place (by one request at a time: the one whose
/// read claimed it); any other (an earlier turn, a turn of a conversation, or a newest turn
/// another request is continuing) starts a new chain, a branch, whose history is the chat's
/// up to that turn (the old chain is untouched). A turn kept with no previous response and no
/// conversation starts a new chain. `None`: the turn is kept in the chat it read, or
/// nowhere (`store: false`).
fn continue_from(
    ask: &Ask<'_>,
    responses: &ResponsesTurn,
    context: &mut TurnContext,
) -> Result<Option<ChatId>, ApiError> {
    if let Some(conversation) = &responses.conversation {
        let exists =
            context.conversation || !context.history.is_empty() || context.chat_prompt.is_some();
        if !exists {
            return Err(ApiError::Missing {
                code: "conversation_not_found",
                param: Some("conversation"),
                message: format!(
                    "Conversation with id '{}' not found.",
                    conversation.as_str()
                ),
            });
        }
    }
    let Some(previous) = &responses.previous else {
        let new_chain = ask.chat.is_none() && responses.store;
        return Ok(new_chain.then(ChatId::new_chain));
    };
    let position = context
        .history
        .iter()
        .position(|turn| turn.id.as_deref() == Some(previous) && turn.exchange.is_some());
    let Some(position) = position else {
        let id = ask
            .chat
            .map(|chat| response_id(previous, chat))
            .unwrap_or_default();
        return Err(ApiError::Missing {
            code: "previous_response_not_found",
            param: Some("previous_response_id"),
            message: format!("Previous response with id '{id}' not found."),
        });
    };
    // Continued in place only by the request whose read claimed it: a second request
    // continuing the same response at once branches, so neither chain holds a turn the
    // other never saw.
    let newest_of_a_chain =
        position + 1 == context.history.len() && ask.chat.is_some_and(ChatId::is_chain);
    if newest_of_a_chain && (context.claimed || !responses.store) {
        return Ok(None);
    }
    context.history.truncate(position + 1);
    // A chain's history is what its turns sent: the conversation's prompts stay behind.
    context.chat_prompt = None;
    context.window_start = None;
    Ok(responses.store.then(ChatId::new_chain))
}

/// Whether a turn will follow the chat's newest turn, and so claims it in its read: `Some(
/// None)` for tool results answering the newest turn's calls (whichever it is), `Some(id)`
/// for a chain continued from its response `id` (in place only while that is the newest).
fn follows_newest(ask: &Ask<'_>) -> Option<Option<String>> {
    ask.chat?;
    if let Some(responses) = &ask.responses {
        if let (Some(previous), true) = (&responses.previous, responses.store) {
            return Some(Some(previous.clone()));
        }
    }
    // A Responses input may hold the calls it answers (a caller that keeps its own items).
    let own_calls: Vec<&str> = ask
        .responses
        .iter()
        .flat_map(|responses| &responses.input)
        .filter(|item| item["type"] == "function_call")
        .filter_map(|item| item["call_id"].as_str())
        .collect();
    let answers_newest = ask.asked.iter().any(|asked| match asked {
        Asked::ToolResult(result) => !own_calls.contains(&result.tool_call_id.as_str()),
        Asked::User(_) => false,
    });
    answers_newest.then_some(None)
}

/// Frees a claim on a chat's newest turn; a failure only makes the next request that would
/// follow that turn wait for the claim to expire (at the request's deadline and a margin).
pub(super) async fn release_claim(store: &dyn Store, tenant: &Tenant, chat: &ChatId, turn: &str) {
    if let Err(error) = store.release_claim(tenant, chat, turn).await {
        tracing::warn!(%error, "could not free a claim on a chat's newest turn after a failure");
    }
}

/// Frees a failed request's `Idempotency-Key`, if it sent one; a failure to free it only
/// makes a retry wait for the claim to expire (at the request's deadline and a margin).
pub(super) async fn release(
    store: &dyn Store,
    tenant: &Tenant,
    keep: Option<&Keep>,
    deadline: Instant,
) {
    if let Some(keep) = keep {
        if let Err(error) = store
            .release(tenant, &keep.key, keep.claimant(deadline))
            .await
        {
            tracing::warn!(%error, "could not free an Idempotency-Key after a failure");
        }
    }
}
