//! How a turn joins its chat, decided on the turn's read: a resent history must be the
//! chat's own and a tool result must answer a call the chat made; a Responses turn
//! continues a chain in place, branches, or starts one; and a turn that will follow the
//! chat's newest turn says so, to claim it in its read (`store/mod.rs`).

use super::{Ask, ResponsesTurn};
use crate::chat::{first_difference, response_id, Asked, ChatId};
use crate::error::ApiError;
use crate::store::TurnContext;

/// A turn's messages against the chat they join: a resent history must be the chat's own
/// (`history_conflict` otherwise), and a tool result must answer a call of the chat's last
/// reply (`invalid_messages` otherwise); either way nothing is asked or stored.
pub(super) fn check_against_history(ask: &Ask<'_>, context: &TurnContext) -> Result<(), ApiError> {
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
pub(super) fn continue_from(
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
    // A background run's turn lands where its queueing decided (`queue.rs`).
    let fixed = responses.fixed.as_ref();
    let new_chain = |made: bool| {
        made.then(|| {
            fixed
                .and_then(|fixed| fixed.chain.clone())
                .unwrap_or_else(ChatId::new_chain)
        })
    };
    let Some(previous) = &responses.previous else {
        return Ok(new_chain(ask.chat.is_none() && responses.store));
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
    let branches = fixed.is_some_and(|fixed| fixed.chain.is_some());
    if newest_of_a_chain && (context.claimed || !responses.store) && !branches {
        return Ok(None);
    }
    if fixed.is_some_and(|fixed| fixed.chain.is_none()) {
        // Queued to continue the chain in place, its claim has lapsed since: landing
        // anywhere else would answer under another id than the caller was given.
        return Err(ApiError::Conflict {
            code: "chain_moved",
            message: "the chain this background response continues moved on while it was \
                      queued"
                .to_owned(),
        });
    }
    context.history.truncate(position + 1);
    // A chain's history is what its turns sent: the conversation's prompts stay behind.
    context.chat_prompt = None;
    context.window_start = None;
    Ok(new_chain(responses.store))
}

/// Whether a turn will follow the chat's newest turn, and so claims it in its read: `Some(
/// None)` for tool results answering the newest turn's calls (whichever it is), `Some(id)`
/// for a chain continued from its response `id` (in place only while that is the newest).
pub(super) fn follows_newest(ask: &Ask<'_>) -> Option<Option<String>> {
    ask.chat?;
    if let Some(responses) = &ask.responses {
        // A call that keeps nothing (`store: false`, a compaction, a count) follows no
        // turn: there is no order of its own to keep, and nothing would free its claim.
        if !responses.store {
            return None;
        }
        // A background run queued as a branch lands in its own chain whatever it reads.
        if responses.fixed.as_ref().is_some_and(|f| f.chain.is_some()) {
            return None;
        }
        if let Some(previous) = &responses.previous {
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
