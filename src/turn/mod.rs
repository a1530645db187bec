//! The turn engine: read the chat, build the messages, ask upstream, store the turn.
//!
//! Every front door that makes a turn goes through here, and none of them talks to the store
//! or upstream about a turn by itself; they only read requests and write answers, and the
//! engine knows nothing of their JSON shapes or events. A turn costs two Redis round trips:
//! one read (the prompts, the history and, alongside, the caller's rate limit, the tokens it
//! spent today and its `Idempotency-Key`: `prepare.rs`), and one write of the question with
//! its answer (with the chat's usage and the answer to replay, in one atomic script; the
//! caller's counters in a second script sent with it: `record.rs`), made only once upstream
//! has answered in full. A buffered turn (`buffered.rs`) answers whole; a streamed one
//! (`streamed.rs`) hands each chunk to its front door's [`StreamSink`] as it comes, and
//! still stores the turn when the client has gone away. Upstream's refusals of an old image
//! or of a long history get one more try (`fallback.rs`).

mod buffered;
mod cache;
mod compact;
mod fallback;
mod items;
mod joins;
mod prepare;
mod queue;
mod record;
mod redo;
mod rewrite;
mod sent;
mod streamed;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

pub use self::compact::CompactionCost;
pub use self::items::CheckedItems;
pub use self::queue::{Queued, Queuing};
pub use self::redo::Redo;
pub use self::rewrite::Rewrite;
pub use self::sent::ENCRYPTED_REASONING;
pub use self::streamed::OpenTurn;
use crate::chat::{Asked, ChatId, Said, Tenant, Turn};
use crate::error::ApiError;
use crate::seal::SealKeys;
use crate::store::{Claimant, IdempotencyKey, Store};
use crate::upstream::wire::Usage;
use crate::upstream::{Chunk, Upstream};

/// What a front door asks of the engine.
pub struct Ask<'a> {
    pub tenant: &'a Tenant,
    /// The chat this turn belongs to; `None` for a stateless call (`/v1` without
    /// `X-Chat-Id`), which reads and stores no chat and sends the caller's own `messages`.
    pub chat: Option<&'a ChatId>,
    /// The caller's new messages, in order; at least one for a chat's turn.
    pub asked: Vec<Asked>,
    /// The chat's prompt as this request gives it (a framework's leading system message):
    /// the turn uses it, and stores it with the turn when it differs from the chat's.
    pub prompt: Option<String>,
    /// The history the request sent before its new messages, to check against the chat's.
    pub resent: Option<Resent>,
    /// The chat's newest turn, or one of its questions edited, asked again (a regenerate,
    /// an edit): the engine finds it in the chat it reads, and the new turn replaces it and
    /// every turn after it; `asked` is left empty for the engine to fill.
    pub redo: Option<Redo>,
    /// A turn of the Responses API: its items, its chain, what it keeps.
    pub responses: Option<ResponsesTurn>,
    /// The model to ask, by name.
    pub model: &'a str,
    /// Parameters passed through to upstream as the caller sent them (`/v1` only).
    pub params: Option<&'a Map<String, Value>>,
    /// When upstream must have answered: the whole reply, streamed or not.
    pub deadline: Instant,
    /// The caller's address: an open API limits and counts tokens by it.
    pub ip: Option<&'a str>,
    /// The request's `Idempotency-Key`, when it sent one.
    pub keep: Option<Keep>,
}

/// What a Responses turn asks besides its messages (`asked` holds those its input items
/// make, for the budget and the checks every turn gets).
pub struct ResponsesTurn {
    /// The caller's input items, as sent: kept as the turn's input.
    pub input: Vec<Value>,
    /// This response's `instructions`: after the chat's prompts in a conversation, as
    /// upstream's own `instructions` in a chain.
    pub instructions: Option<String>,
    /// A conversation's turns start with the chat's prompts; a chain's do not.
    pub prompts: bool,
    /// `store`: false keeps nothing, as at OpenAI.
    pub store: bool,
    /// The conversation the turn is in, which must exist (`conversation_not_found`).
    pub conversation: Option<ChatId>,
    /// The turn `previous_response_id` names, in the chat `Ask::chat` names: the turn
    /// continues from it (and branches, when it is not the chain's newest).
    pub previous: Option<String>,
    /// Fields set on the response before it is kept and answered, besides its id
    /// (`previous_response_id`, `conversation`, `store`, `instructions`, ...).
    pub fields: Map<String, Value>,
    /// What upstream is asked: a response, or a compaction of the input.
    pub call: ResponsesCall,
    /// A background run's turn: what its queueing decided (`queue.rs`), which it keeps.
    pub fixed: Option<Fixed>,
}

/// What the read of a background turn decided when it was queued, which the run that makes
/// the turn later keeps, so that its answer is the one the caller was given the id of: the
/// turn's id, and the new chain it lands in (a chain's first turn, or a branch), if any;
/// `None` lands it in the chat it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub turn_id: String,
    pub chain: Option<ChatId>,
}

/// The Responses API's calls that answer from an input the proxy assembles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsesCall {
    /// `POST /responses`: a response, kept as a turn unless `store` is false.
    Create,
    /// `POST /responses/compact`: the input compacted, answered as upstream's
    /// `response.compaction`; nothing is kept (as with `store: false`), usage is counted.
    Compact,
    /// `POST /responses/input_tokens`: the input's tokens counted, answered as upstream's
    /// `response.input_tokens`; nothing is kept or counted.
    CountTokens,
}

/// A history a caller resent with its new messages (frameworks that keep their own memory
/// send the whole conversation each call).
pub struct Resent {
    pub messages: Vec<Said>,
    /// Where they start in the request's `messages`, to name the one that differs.
    pub from: usize,
}

/// An `Idempotency-Key` and how to keep the answer for a retry.
#[derive(Clone)]
pub struct Keep {
    pub key: IdempotencyKey,
    /// What the request asked, so that a retry asking something else is told apart.
    pub fingerprint: String,
    /// This request's own mark on its claim of the key.
    token: String,
    /// A buffered answer as the front door will replay it (rendered where the turn is
    /// written); a streamed one is rendered by its [`StreamSink`].
    pub render: Arc<dyn Fn(&Answered) -> String + Send + Sync>,
}

/// How long a claim outlives its request's deadline, should the request never end it.
pub(super) const CLAIM_MARGIN: Duration = Duration::from_secs(60);

impl Keep {
    pub fn new(
        key: IdempotencyKey,
        fingerprint: String,
        render: Arc<dyn Fn(&Answered) -> String + Send + Sync>,
    ) -> Keep {
        Keep {
            key,
            fingerprint,
            token: Turn::new_id(),
            render,
        }
    }

    /// This request as the holder of the key's claim, held until `deadline` and a margin.
    fn claimant(&self, deadline: Instant) -> Claimant<'_> {
        Claimant {
            fingerprint: &self.fingerprint,
            token: &self.token,
            hold: deadline.saturating_duration_since(Instant::now()) + CLAIM_MARGIN,
        }
    }
}

/// A turn upstream answered in full.
#[derive(Debug)]
pub struct Answered {
    pub reply: String,
    /// The reply's tool calls, as upstream sent them.
    pub calls: Vec<Value>,
    pub usage: Usage,
    /// False when the answer could not be stored: the caller still gets what it paid for.
    pub stored: bool,
    /// The `chat.completion` as upstream sent it (not for a streamed turn).
    pub raw: Option<Box<RawValue>>,
    /// What compacting the chat's window cost, when this turn did (`compact.rs`).
    pub compaction: Option<CompactionCost>,
    /// Stopped by its caller before upstream ended it ([`StreamSink::keeps_when_stopped`]):
    /// the reply is what was written so far.
    pub stopped: bool,
}

/// How a buffered turn ended.
#[derive(Debug)]
pub enum Ran {
    Answered(Answered),
    /// A retry of an answered request: its kept answer, with no upstream call.
    Replayed(String),
}

/// How a streamed turn started.
pub enum Opened {
    Streaming(Box<OpenTurn>),
    /// A retry of an answered request: its kept answer, with no upstream call.
    Replayed(String),
}

/// Where a streamed turn's chunks go: a front door's way of writing them to its client.
pub trait StreamSink: Send {
    /// A chunk of the reply, as upstream sent it.
    fn chunk(&mut self, chunk: &Chunk) -> impl Future<Output = ()> + Send;
    /// Upstream has said nothing for the keep-alive interval (or for [`Self::wake_every`]).
    fn keep_alive(&mut self) -> impl Future<Output = ()> + Send;
    /// How often the sink wants to hear of a silent upstream, when more often than the
    /// keep-alive interval (a background run, to learn of a cancellation).
    fn wake_every(&self) -> Option<Duration> {
        None
    }
    /// The answer to replay to a retry with the same `Idempotency-Key`: what this sink
    /// streamed, as the front door will replay it.
    fn kept_answer(&self, answered: &Answered) -> String;
    /// Whether the turn is to stop here (a background run cancelled): nothing is stored,
    /// and what upstream streamed so far is counted.
    fn stop_asked(&self) -> bool {
        false
    }
    /// Whether a stopped turn keeps what it wrote so far as its answer (a seed turn's
    /// Stop), stored as any turn, rather than ending with [`stopped`] and storing nothing
    /// (a background run cancelled). A stop before any text stores nothing either way.
    fn keeps_when_stopped(&self) -> bool {
        false
    }
}

/// The error a turn stopped by its sink ends with ([`StreamSink::stop_asked`]).
pub fn stopped() -> ApiError {
    ApiError::Conflict {
        code: "response_cancelled",
        message: "the response was cancelled before it was complete".to_owned(),
    }
}

/// What a turn needs besides the request, built once per cold start.
pub struct TurnEngine {
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    settings: TurnSettings,
}

/// The limits a turn runs within.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub default_system_prompt: String,
    /// How long a stream may be silent before a keep-alive.
    pub keep_alive: Duration,
    /// `MAX_PROMPT_TOKENS`: the most a turn sends upstream.
    pub max_prompt_tokens: u32,
    /// `TOKEN_LIMIT_PER_DAY`: tokens a caller (or address, when open) may spend a day.
    pub token_limit_per_day: Option<u64>,
    /// `SEAL_KEYS`: a kept chat's `prompt_cache_key` is a MAC under them (`cache.rs`).
    pub seal_keys: Option<Arc<SealKeys>>,
    /// `COMPACT_AT_TOKENS`: stored chats compact what their window moves past
    /// (`compact.rs`); `None`, they only cut it.
    pub compaction: Option<crate::config::Compaction>,
}

impl TurnEngine {
    pub fn new(store: Arc<dyn Store>, upstream: Arc<Upstream>, settings: TurnSettings) -> Self {
        TurnEngine {
            store,
            upstream,
            settings,
        }
    }
}
