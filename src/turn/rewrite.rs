//! A stored turn changed without asking upstream (a conversation item deleted from it, a
//! stored response deleted): decided from a read and written against the chat exactly as
//! that read saw it (`store/mod.rs`), so two such changes at once never write back a turn
//! the other changed; when the chat moved meanwhile, it is read and decided again.

use std::future::Future;

use super::TurnEngine;
use crate::budget;
use crate::chat::{ChatId, Tenant, Turn};
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{Rewritten, TurnContext, TurnRewrite};

/// How many reads a rewrite makes before it answers that the chat is too busy to change.
const ATTEMPTS: usize = 8;

/// What a rewrite decided from its read: the turn to change, what it becomes (`None`:
/// removed), and what to answer once it is written.
pub struct Rewrite<T> {
    pub turn: String,
    pub with: Option<Turn>,
    pub answer: T,
}

impl TurnEngine {
    /// Changes one turn of `chat` as `decide` says from the chat as read; `first` (the
    /// caller's rate limit, and any check of its own) rides the first read's round trip.
    pub async fn rewrite<T>(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        first: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
        mut decide: impl FnMut(&TurnContext) -> Result<Rewrite<T>, ApiError>,
    ) -> Result<T, ApiError> {
        let read = async { tokio::join!(first, self.store.turn_context(tenant, chat, None)) };
        let (checked, mut context) = log.redis(read).await;
        checked?;
        for _ in 0..ATTEMPTS {
            let read = context?;
            let Rewrite { turn, with, answer } = decide(&read)?;
            let at = read
                .history
                .iter()
                .position(|kept| kept.id.as_deref() == Some(turn.as_str()));
            let rewrite = TurnRewrite {
                id: &turn,
                with: with.as_ref(),
                before: at
                    .and_then(|at| at.checked_sub(1))
                    .and_then(|before| read.history[before].id.as_deref()),
                next: at.and_then(|at| read.history.get(at + 1)),
                // It stands for the turns before the window's start, and is kept with
                // that start: gone with either.
                drops_compacted: read.compacted.is_some()
                    && at.is_some_and(|at| match budget::window_position(&read) {
                        Some(start) => at < start || (at == start && with.is_none()),
                        None => true,
                    }),
            };
            let written = self.store.rewrite_turn(tenant, chat, rewrite, read.version);
            match log.redis(written).await? {
                Rewritten::Done => return Ok(answer),
                // Another write came between the read and this one: read again.
                Rewritten::Moved | Rewritten::Missing => {}
            }
            context = log.redis(self.store.turn_context(tenant, chat, None)).await;
        }
        Err(ApiError::Conflict {
            code: "chat_busy",
            message: "the chat kept changing while this request tried to change it; try again"
                .to_owned(),
        })
    }
}
