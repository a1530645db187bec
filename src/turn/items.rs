//! Items a caller adds to a conversation by hand (`POST /v1/conversations` with `items`,
//! `POST /v1/conversations/{id}/items`): no upstream call, but their references filled in
//! and their function call outputs checked against the conversation as a turn's input is,
//! then stored as the write model says (`store/mod.rs`): after whatever was added
//! meanwhile, or, when they answer the newest turn's calls, only while it is the newest.

use std::future::Future;

use serde_json::Value;

use super::TurnEngine;
use crate::chat::{referenced_ids, resolve, unanswered_output, ChatId, Tenant, Turn};
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{Expect, TurnExtras, Written};

/// Items checked against a conversation, as the turn that keeps them.
pub struct CheckedItems {
    pub turn: Turn,
    /// They answer the calls of the conversation's newest turn, this one.
    pub follows: Option<String>,
}

impl TurnEngine {
    /// `items` as a turn of the conversation whose turns are `history`: references filled
    /// in (found in `history`, else where their records say, in one more round trip), and
    /// every function call output answering a call made before it.
    pub async fn checked_items(
        &self,
        tenant: &Tenant,
        history: &[Turn],
        mut items: Vec<Value>,
        log: &mut RequestLog,
    ) -> Result<CheckedItems, ApiError> {
        let ids = referenced_ids(&items).unwrap_or_default();
        if !ids.is_empty() {
            let located = log.redis(self.store.item_responses(tenant, &ids)).await;
            let found = self.referenced(tenant, &ids, located, history, log).await?;
            resolve(&mut items, &found).map_err(|id| ApiError::Missing {
                code: "item_not_found",
                param: Some("items"),
                message: format!("Item with id '{id}' not found."),
            })?;
        }
        let newest = history.last();
        let calls: Vec<&str> = newest
            .map(|turn| turn.call_ids().collect())
            .unwrap_or_default();
        let follows = match unanswered_output(&items, &calls) {
            Ok(true) => newest.and_then(|turn| turn.id.clone()),
            Ok(false) => None,
            Err((index, call)) => {
                return Err(ApiError::BadParam {
                    code: "invalid_function_call_output",
                    param: "items",
                    message: format!(
                        "items[{index}] answers call `{call}`, which no function_call before \
                         it made (nor the conversation's newest turn)"
                    ),
                })
            }
        };
        Ok(CheckedItems {
            turn: Turn::of_items(items),
            follows,
        })
    }

    /// Adds `items` to the conversation `chat`, read with `first` (the rate limit and the
    /// door's own checks) in one round trip; the turn that keeps them.
    pub async fn add_items(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        items: Vec<Value>,
        first: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Turn, ApiError> {
        let read = async { tokio::join!(first, self.store.turn_context(tenant, chat, None)) };
        let (checked, context) = log.redis(read).await;
        checked?;
        let context = context?;
        let CheckedItems { turn, follows } = self
            .checked_items(tenant, &context.history, items, log)
            .await?;
        let expect = match &follows {
            Some(newest) => Expect::Follows {
                seen: context.version,
                newest,
            },
            None => Expect::Since(context.version),
        };
        let extras = TurnExtras {
            expect,
            temporary: context.temporary,
            has_prompt: context.chat_prompt.is_some(),
            ..TurnExtras::default()
        };
        let written = log
            .redis(self.store.append_turn(tenant, chat, &turn, extras))
            .await?;
        match written {
            Written::Stored => Ok(turn),
            Written::Gone => Err(ApiError::Missing {
                code: "conversation_not_found",
                param: None,
                message: format!("Conversation with id '{}' not found.", chat.as_str()),
            }),
            Written::Moved => Err(ApiError::Conflict {
                code: "tool_call_in_progress",
                message: "the conversation's newest turn changed while these items were added; \
                          read it again"
                    .to_owned(),
            }),
        }
    }
}
