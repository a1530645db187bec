//! What a stored chat's window moved past, compacted (`COMPACT_AT_TOKENS`): kept with the
//! chat beside the window's start, and sent before the window's turns until the window
//! moves again.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The turns before a chat's window, compacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted {
    /// The id of the window's first turn: this stands for every turn before it, and only
    /// while the window starts there.
    pub before: String,
    /// What stands for them: a summary (the chat door's), or the items upstream's
    /// `/responses/compact` answered (the Responses door's).
    #[serde(flatten)]
    pub with: Compaction,
    /// How many messages (or items) it stands for, the earlier compactions' included.
    pub messages: u32,
    /// What it weighs when sent, in tokens.
    pub tokens: u32,
    /// The model that made it.
    pub model: String,
    /// When it was made, in Unix seconds.
    pub created_at: u64,
}

/// What stands for the compacted turns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compaction {
    /// A summary, sent as a system message.
    Summary(String),
    /// A Responses input's items (a `compaction` item, and what upstream kept with it).
    Items(Vec<Value>),
}

impl Compacted {
    /// Whether it stands for the turns before a window that starts at `start`.
    pub fn precedes(&self, start: Option<&str>) -> bool {
        start == Some(self.before.as_str())
    }

    /// Whether a door can send it: a summary goes to either API, a Responses compaction's
    /// items only to the Responses API.
    pub fn sendable_by(&self, responses_api: bool) -> bool {
        responses_api || matches!(self.with, Compaction::Summary(_))
    }
}

/// How a summary is sent: a system message that says what it is, so the model takes it as
/// what came before rather than as an instruction.
pub fn summary_message(summary: &str) -> String {
    format!("Summary of the earlier part of this conversation, whose messages are no longer sent:\n\n{summary}")
}
