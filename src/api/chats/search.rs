//! `GET /chats?q=`: a caller's chats found by their title and by what was said in them (the
//! caller's messages, tools' results and the replies, on every door), in the list's order,
//! most recently written first.
//!
//! Nothing is indexed, so nothing a chat says is kept in the clear for a search (a sealed
//! chat stays sealed in Redis): each chat's turns are read, opened and looked through here,
//! a batch of chats a round trip. What one search may read is bounded: at most
//! [`MAX_SCANNED`] chats, and at once at most [`BYTES_IN_FLIGHT`] of them (a batch holds as
//! many chats of `MAX_CHAT_BYTES` as fit, from 1 to 50); when the bound stops it before it
//! has found `limit` chats, the page says so (`cut_short`) and where to go on (`next`). A
//! chat that cannot be opened (sealed under a key since dropped) is passed over and counted
//! (`unreadable`), never the end of every search that reaches it.

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::{cursor_text, invalid, listed, ChatCursor};
use crate::chat::{transcript, Tenant, Turn};
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::{ChatSummary, ListOrder, Store};

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// The most chats one search request reads.
pub const MAX_SCANNED: usize = 500;
/// Chats read a round trip, at most.
const BATCH: usize = 50;
/// The most a batch may hold, counted at `MAX_CHAT_BYTES` a chat: what one search holds at
/// once stays well within the function's memory.
pub const BYTES_IN_FLIGHT: usize = 16 * 1024 * 1024;
/// Characters of a snippet around the match, before and after it.
const BEFORE: usize = 40;
const AFTER: usize = 80;

/// What to look for: the query, as the caller wrote it and folded to lower case.
pub(super) struct Query {
    folded: String,
}

impl Query {
    /// `q`: 1 to [`MAX_QUERY_CHARS`] characters, not only spaces.
    pub fn parse(q: &str) -> Result<Query, ApiError> {
        let q = q.trim();
        if q.is_empty() || q.chars().count() > MAX_QUERY_CHARS {
            return Err(invalid(
                "q",
                format!("`q` must be 1 to {MAX_QUERY_CHARS} characters, not only spaces"),
            ));
        }
        Ok(Query { folded: fold(q) })
    }
}

/// Which page of hits a search answers, and how large a chat may be.
pub(super) struct Page {
    /// Read from the chat after this one on.
    pub after: Option<ChatCursor>,
    /// The most hits it holds.
    pub limit: usize,
    /// `MAX_CHAT_BYTES`: what a chat read counts for, against [`BYTES_IN_FLIGHT`].
    pub max_chat_bytes: usize,
}

/// A page of the caller's chats that match `query`; `first` (the caller's rate limit)
/// rides the first read's round trip.
pub(super) async fn search(
    store: &dyn Store,
    tenant: &Tenant,
    query: &Query,
    page: Page,
    first: impl std::future::Future<Output = Result<(), ApiError>>,
    log: &mut RequestLog,
) -> Result<Value, ApiError> {
    let Page {
        after,
        limit,
        max_chat_bytes,
    } = page;
    let batch = (BYTES_IN_FLIGHT / max_chat_bytes.max(1)).clamp(1, BATCH);
    let mut hits: Vec<Value> = Vec::new();
    let (mut scanned, mut unreadable) = (0, 0);
    let mut cursor = after;
    // Whether chats are left after `cursor` (unknown until a page says none are).
    let mut more = true;
    let mut first = Some(first);
    while more && hits.len() < limit && scanned < MAX_SCANNED {
        let want = batch.min(MAX_SCANNED - scanned);
        let list = store.list_chats(tenant, ListOrder::Written, cursor.as_ref(), want);
        let page = match first.take() {
            Some(first) => {
                let (allowed, page) = log.redis(async { tokio::join!(first, list) }).await;
                allowed?;
                page?
            }
            None => log.redis(list).await?,
        };
        more = page.next.is_some();
        let reads = page.chats.iter().map(|chat| store.turns(tenant, &chat.id));
        let turns = log.redis(join_all(reads)).await;
        for (at, (chat, turns)) in page.chats.iter().zip(turns).enumerate() {
            scanned += 1;
            cursor = Some(ChatCursor {
                at_ms: chat.updated_ms,
                id: chat.id.clone(),
            });
            let turns = match turns {
                Ok(turns) => turns,
                Err(error) if error.is_unreadable() => {
                    tracing::warn!(%error, "a chat that does not open was passed over by a search");
                    unreadable += 1;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if let Some(hit) = found(chat, &turns, query) {
                hits.push(hit);
                if hits.len() == limit {
                    more |= at + 1 < page.chats.len();
                    break;
                }
            }
        }
    }
    let cut_short = more && hits.len() < limit;
    Ok(json!({
        "chats": hits,
        "has_more": more,
        "next": cursor.as_ref().filter(|_| more).map(cursor_text),
        "scanned": scanned,
        "unreadable": unreadable,
        "cut_short": cut_short,
    }))
}

/// The chat as a hit, when its title or one of its messages holds the query: its summary as
/// the list shows it, how many of its messages hold it, and where: the newest message that
/// holds it (its place in `GET /<chat_id>/chat`, its role, and the text around the match),
/// else the title.
fn found(chat: &ChatSummary, turns: &[Turn], query: &Query) -> Option<Value> {
    let messages = transcript(turns);
    let matching: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| find_folded(&message.content, &query.folded).is_some())
        .map(|(index, _)| index)
        .collect();
    let in_title = chat
        .title
        .as_deref()
        .and_then(|title| find_folded(title, &query.folded));
    let place = match (matching.last(), in_title) {
        (Some(&index), _) => {
            let content = &messages[index].content;
            let (start, end) = find_folded(content, &query.folded)?;
            json!({"in": "message", "index": index, "role": messages[index].role,
                "snippet": snippet(content, start, end)})
        }
        (None, Some(_)) => json!({"in": "title"}),
        (None, None) => return None,
    };
    let mut hit = listed(chat);
    hit["matches"] = json!(matching.len());
    hit["match"] = place;
    Some(hit)
}

/// Where `folded` (lower case) is in `text`, compared in lower case: its byte range in
/// `text`.
fn find_folded(text: &str, folded: &str) -> Option<(usize, usize)> {
    // Most text is ASCII, where lower case keeps every byte's place.
    if text.is_ascii() {
        let lower = text.to_ascii_lowercase();
        let start = lower.find(folded)?;
        return Some((start, start + folded.len()));
    }
    // Else each byte of the folded text remembers the character it came from.
    let mut lower = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        for l in fold_char(c) {
            let before = lower.len();
            lower.push(l);
            origin.extend(std::iter::repeat_n(at, lower.len() - before));
        }
    }
    let start = lower.find(folded)?;
    let last = origin[start + folded.len() - 1];
    let end = last + text[last..].chars().next().map_or(0, char::len_utf8);
    Some((origin[start], end))
}

/// Text as it is compared: lower case, one character at a time (so that the query and the
/// text fold alike), with a final sigma as any sigma.
fn fold(text: &str) -> String {
    text.chars().flat_map(fold_char).collect()
}

fn fold_char(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l })
}

/// The text around `start..end`, on one line, with `…` where it was cut.
fn snippet(text: &str, start: usize, end: usize) -> String {
    let from = text[..start]
        .char_indices()
        .rev()
        .nth(BEFORE - 1)
        .map_or(0, |(at, _)| at);
    let to = text[end..]
        .char_indices()
        .nth(AFTER)
        .map_or(text.len(), |(at, _)| end + at);
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.extend(
        text[from..to]
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c }),
    );
    if to < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_is_found_whatever_its_case_and_its_place_is_the_original_texts() {
        assert_eq!(find_folded("Hello World", "world"), Some((6, 11)));
        assert_eq!(find_folded("nothing here", "world"), None);
        let text = "Grüße aus KÖLN am Rhein";
        let (start, end) = find_folded(text, "köln").unwrap();
        assert_eq!(&text[start..end], "KÖLN");
        // A word's final sigma is a sigma, in the query as in the text.
        let text = "ΟΔΟΣ ΕΡΜΟΥ";
        let (start, end) = find_folded(text, &fold("οδος")).unwrap();
        assert_eq!(&text[start..end], "ΟΔΟΣ");
        assert!(find_folded("η οδός", &fold("ΟΔΌΣ")).is_some());
        // A letter whose lower case is longer (İ: i and a combining dot).
        let text = "İstanbul and Ankara";
        let (start, end) = find_folded(text, "ankara").unwrap();
        assert_eq!(&text[start..end], "Ankara");
    }

    #[test]
    fn a_snippet_is_cut_around_the_match_on_one_line() {
        let text = format!("{}needle\nand{}", "a".repeat(100), "b".repeat(200));
        let (start, end) = find_folded(&text, "needle").unwrap();
        let cut = snippet(&text, start, end);
        assert!(cut.starts_with('…') && cut.ends_with('…'), "{cut}");
        assert!(cut.contains("needle and"), "{cut}");
        assert_eq!(cut.chars().count(), 1 + BEFORE + 6 + AFTER + 1);
        assert_eq!(snippet("short needle", 6, 12), "short needle");
    }
}
