//! What a chat is: its id, whose it is, its turns and their contents. Nothing here knows
//! how a chat is stored, sent upstream or answered, and nothing here imports the rest of
//! the crate: everything else builds on it.

mod compacted;
mod exchange;
mod id;
mod items;
mod reference;
mod said;
mod title;
mod transcript;
mod turn;

pub use self::compacted::{summary_message, Compacted, Compaction};
pub use self::exchange::{
    asked_in, asked_item, asked_of, calls_of, is_compaction, listed_items, output_text,
    parse_response_id, response_id, turn_items, turn_parts, Exchange, StoredResponse,
};
pub use self::id::{ChatId, InvalidChatId};
pub use self::items::{check_items, unanswered_output};
pub use self::reference::{find_items, referable_ids, referenced_ids, resolve, MAX_ITEM_ID_BYTES};
pub use self::said::{first_difference, Said};
pub use self::title::{auto_title, AUTO_TITLE_CHARS, MAX_TITLE_CHARS};
pub use self::transcript::{
    places, transcript, transcript_with_tokens, Place, ReplyTokens, TranscriptMessage,
};
pub use self::turn::{text_of, Asked, ImageRef, Part, ToolResult, Turn, TurnTokens, UserContent};

/// Whose data a request reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// No keys are configured: one shared namespace, the keys the older proxy used.
    Open,
    /// An authenticated caller, by its configured name.
    Caller(String),
}

impl Tenant {
    /// The name to log and to count requests under; never a secret.
    pub fn name(&self) -> &str {
        match self {
            Tenant::Open => "open",
            Tenant::Caller(name) => name,
        }
    }
}
